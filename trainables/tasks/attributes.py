"""The CelebA attribute task: 40 binary attributes, one sigmoid output each.

Each epoch, validation scores give the `val/*` metrics at the fixed threshold; the thresholds of
every calibration strategy are derived from those validation scores and reported on the test
split as `test/<strategy>/*`. The files written next to the checkpoint (thresholds, per-attribute
table, scores of both splits) let anyone recompute every number without the model.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from trainables.config import TrainConfig
from trainables.data.loading import ImageLabelDataset, eval_share, make_loader
from trainables.data.sources import demo_root, load_index
from trainables.data.transforms import build_augment
from trainables.distributed import all_gather_rows
from trainables.errors import UserError
from trainables.loop import predict
from trainables.losses import build_loss, loss_arguments
from trainables.metrics import (THRESHOLD_STRATEGIES, attribute_metrics, calibrate_thresholds, majority_accuracy,
                                per_attribute_metrics)
from trainables.models import build_model
from trainables.tasks import DataSummary, EvalContext, EvalResult, TaskSetup, register_task


def prepare_attributes(cfg: TrainConfig) -> DataSummary:
    """Driver side: build the demo set if needed (saying so), validate the label files, baseline."""
    if not cfg.data.root:
        started = time.time()
        root, built = demo_root(cfg.data)
        verb = f"Built it in {time.time() - started:.0f}s" if built else "Using the cached copy"
        print(f"No --data given: training on the synthetic CelebA-format demo set ({cfg.data.demo_images} images) "
              f"at {root}. {verb}; pass --data /path/to/celeba for the real dataset.", flush=True)
    index = load_index(cfg.data)
    return DataSummary(str(index.root), {"val/majority_accuracy": majority_accuracy(index.attributes[index.indices("val")])})


@register_task("celeba_attributes", prepare=prepare_attributes)
def attribute_task(cfg: TrainConfig) -> TaskSetup:
    index = load_index(cfg.data)
    size = cfg.data.image_size
    splits = {}
    for split in ("train", "val", "test"):
        rows = index.indices(split)
        if split == "train" and cfg.data.max_train_images:
            rows = rows[: cfg.data.max_train_images]
        if len(rows) == 0:
            raise UserError(f"the {split} split of {index.root} is empty: check list_eval_partition.txt")
        augment = build_augment(cfg.data.augment, size) if split == "train" else None
        paths = [index.image_path(int(r)) for r in rows]
        labels = index.attributes[rows].astype(np.float32)  # BCE-style losses take float targets
        splits[split] = ImageLabelDataset(paths.__getitem__, labels, size, augment)
    names = list(index.attribute_names)
    prior = splits["train"].labels.mean(axis=0)
    criterion = build_loss(cfg.loss.name, train_prior=prior,
                           **{arg: getattr(cfg.loss, arg) for arg in loss_arguments(cfg.loss.name)})

    def evaluate(model: torch.nn.Module, ctx: EvalContext) -> EvalResult:
        scored = {}
        for split in ("val", "test"):
            dataset = splits[split]
            loader = make_loader(dataset, eval_share(len(dataset), ctx.rank, ctx.world), ctx.batch_size,
                                 ctx.loader_workers, train=False)
            logits, labels = all_gather_rows(*predict(model, loader, ctx.pipe))
            scored[split] = (logits, labels)
        val_logits, val_labels = scored["val"]
        with torch.no_grad():
            val_loss = float(criterion(torch.from_numpy(val_logits), torch.from_numpy(val_labels).float()))
        probabilities = {s: (torch.sigmoid(torch.from_numpy(logits)).numpy(), labels) for s, (logits, labels) in scored.items()}
        metrics, thresholds = epoch_metrics(*probabilities["val"], *probabilities["test"], prior, cfg.eval.threshold)
        metrics["val/loss"] = val_loss
        return EvalResult(metrics, lambda out: write_attribute_files(out, names, thresholds, prior, probabilities))

    model = build_model(cfg.model, num_outputs=len(names))
    return TaskSetup(model=model, criterion=criterion, train_set=splits["train"], evaluate=evaluate,
                     num_outputs=len(names))


def epoch_metrics(
    val_scores: np.ndarray,
    val_labels: np.ndarray,
    test_scores: np.ndarray,
    test_labels: np.ndarray,
    train_prior: np.ndarray,
    fixed_threshold: float,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """(`val/*` and `test/<strategy>/*` metrics, thresholds per strategy)."""
    metrics = {f"val/{k}": v for k, v in attribute_metrics(val_scores, val_labels, fixed_threshold).items()}
    thresholds = {}
    for strategy in THRESHOLD_STRATEGIES:
        t = calibrate_thresholds(strategy, val_scores, val_labels, train_prior)
        if strategy == "fixed":
            t = np.full_like(t, fixed_threshold)
        thresholds[strategy] = t
        for key, value in attribute_metrics(test_scores, test_labels, t).items():
            metrics[f"test/{strategy}/{key}"] = value
    return metrics, thresholds


def write_attribute_files(
    out: Path,
    names: list[str],
    thresholds: dict[str, np.ndarray],
    train_prior: np.ndarray,
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
) -> None:
    """thresholds.json, per_attribute.csv (test split) and predictions/<split>.parquet."""
    out.mkdir(parents=True, exist_ok=True)
    payload = {s: dict(zip(names, map(float, t))) for s, t in thresholds.items()}
    (out / "thresholds.json").write_text(json.dumps(payload, indent=1))
    test_scores, test_labels = splits["test"]
    table = pd.DataFrame({"attribute": names, "train_positive_rate": train_prior})
    for strategy, t in thresholds.items():
        per = per_attribute_metrics(test_scores, test_labels, t, names)
        if "test_positive_rate" not in table:
            table["test_positive_rate"] = per["positive_rate"].to_numpy()
        for column in ("accuracy", "precision", "recall", "f1"):
            table[f"{strategy}/{column}"] = per[column].to_numpy()
        table[f"{strategy}/threshold"] = t
    table.to_csv(out / "per_attribute.csv", index=False, float_format="%.6f")
    (out / "predictions").mkdir(exist_ok=True)
    for split, (scores, labels) in splits.items():
        frame = pd.DataFrame(scores.astype(np.float32), columns=[f"score/{n}" for n in names])
        frame[[f"label/{n}" for n in names]] = labels.astype(np.uint8)
        frame.to_parquet(out / "predictions" / f"{split}.parquet", index=False)
