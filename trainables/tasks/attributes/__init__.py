"""The CelebA attribute task: 40 binary attributes, one sigmoid output each.

Each epoch, validation scores give the `val/*` metrics at the fixed threshold; the thresholds of
every calibration strategy are derived from those validation scores and reported on the test
split as `test/<strategy>/*`. The files written next to the checkpoint (thresholds, per-attribute
table, scores of both splits) let anyone recompute every number without the model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from trainables.config import TrainConfig
from trainables.data.formats.celeba import ATTRIBUTE_NAMES
from trainables.data.shards import ShardDataset, ShardSplit
from trainables.data.sources import prepared_root
from trainables.data.demo.celeba import ensure_demo_celeba
from trainables.data.transforms import build_augment
from trainables.distributed import all_gather_rows
from trainables.errors import UserError
from trainables.loop import predict
from trainables.tasks.attributes.losses import build_loss, loss_arguments
from trainables.tasks.attributes.metrics import (THRESHOLD_STRATEGIES, attribute_metrics, calibrate_thresholds, majority_accuracy,
                                per_attribute_metrics)
from trainables.models import build_model
from trainables.tasks import DataSummary, EvalContext, EvalResult, TaskSetup, register_task

DEMO_SEED = 0


REAL_HINT = "pass --data /path/to/celeba (the folder holding list_attr_celeba.txt) for the real dataset"


def _shards(cfg: TrainConfig, say=lambda text: None) -> str:
    build = lambda cache: ensure_demo_celeba(cache, num_images=cfg.data.demo_images, seed=DEMO_SEED)  # noqa: E731
    return prepared_root(cfg.data, "celeba", build, REAL_HINT, say)


def prepare_attributes(cfg: TrainConfig) -> DataSummary:
    """Driver side, once: demo set or real files packed into shards, labels checked, the baseline."""
    root = _shards(cfg, say=lambda text: print(text, flush=True))
    val = ShardSplit(root, "val", label_columns=list(ATTRIBUTE_NAMES)).labels().to_numpy()
    return DataSummary(root, {"val/majority_accuracy": majority_accuracy(val)})


@register_task("celeba_attributes", prepare=prepare_attributes)
def attribute_task(cfg: TrainConfig) -> TaskSetup:
    root = _shards(cfg)
    names, size = list(ATTRIBUTE_NAMES), cfg.data.image_size
    splits = {name: ShardSplit(root, name, label_columns=names) for name in ("train", "val", "test")}
    for name, split in splits.items():
        if split.num_rows == 0:
            raise UserError(f"the {name} split of {root} is empty: check list_eval_partition.txt")
    prior = splits["train"].labels().to_numpy().mean(axis=0)
    augment = build_augment(cfg.data.augment, size)
    train_rows = lambda world: min(splits["train"].num_rows, cfg.data.max_train_images or 10**12) // world  # noqa: E731

    def train_loader(epoch: int, rank: int, world: int, batch: int, workers: int) -> DataLoader:
        split = splits["train"]
        dataset = ShardDataset(split, split.train_row_groups(rank, world, epoch, cfg.seed), size, names,
                               augment=augment, shuffle_seed=(cfg.seed, epoch), limit=train_rows(world),
                               label_dtype=torch.float32)
        return DataLoader(dataset, batch_size=batch, num_workers=workers, drop_last=True)

    criterion = build_loss(cfg.loss.name, train_prior=prior,
                           **{arg: getattr(cfg.loss, arg) for arg in loss_arguments(cfg.loss.name)})

    def evaluate(model: torch.nn.Module, ctx: EvalContext) -> EvalResult:
        scored = {}
        for name in ("val", "test"):
            split = splits[name]
            dataset = ShardDataset(split, split.eval_row_groups(ctx.rank, ctx.world), size, names,
                                   label_dtype=torch.float32)
            loader = DataLoader(dataset, batch_size=ctx.batch_size, num_workers=ctx.loader_workers)
            scored[name] = all_gather_rows(*predict(model, loader, ctx.pipe))
        val_logits, val_labels = scored["val"]
        with torch.no_grad():
            val_loss = float(criterion(torch.from_numpy(val_logits), torch.from_numpy(val_labels).float()))
        probabilities = {s: (torch.sigmoid(torch.from_numpy(logits)).numpy(), labels) for s, (logits, labels) in scored.items()}
        metrics, thresholds = epoch_metrics(*probabilities["val"], *probabilities["test"], prior, cfg.eval.threshold)
        metrics["val/loss"] = val_loss
        return EvalResult(metrics, lambda out: write_attribute_files(out, names, thresholds, prior, probabilities))

    model = build_model(cfg.model, num_outputs=len(names))
    return TaskSetup(model=model, criterion=criterion, evaluate=evaluate, train_loader=train_loader,
                     train_rows=train_rows, num_outputs=len(names))


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
