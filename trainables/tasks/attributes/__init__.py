"""The attribute task: any set of binary face attributes (CelebA's 40 by default), one sigmoid output each.

What it reads: a CelebA-layout folder (list_attr_celeba.txt names its attributes on line 2, any
number of them) or the generic layout (an image folder with one label CSV: `file`, one 0/1 column
per attribute, optionally `split`), or either one's prepared shards.

What it learns: a timm backbone whose classifier has one logit per attribute, trained with a
multi-label loss (`loss.name`: bce | focal | asl). The attribute names come from the prepared data
(the shards' label columns, in the label file's order), so every metric, file and prediction uses them.

How it is scored: each epoch, validation scores give the `val/*` metrics at the fixed threshold
(`eval.threshold`): mean accuracy, macro precision, recall and F1. The thresholds of every calibration
strategy (fixed, prior, f1_opt, acc_opt) are derived from those validation scores and reported on the
test split as `test/<strategy>/*`. The files written beside the checkpoint (thresholds, a
per-attribute table, the scores of both splits) let anyone recompute every number without the model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from trainables import artifacts
from trainables.config import TrainConfig
from trainables.data.demo.celeba import ensure_demo_celeba
from trainables.data.formats.celeba import is_celeba_attribute_set
from trainables.data.hints import DATA_HINTS
from trainables.data.loaders import EvalCaches, TrainStream, eval_loader, open_split
from trainables.data.shards import load_metadata
from trainables.data.sources import prepared_root
from trainables.data.transforms import build_augment
from trainables.distributed import all_gather_rows
from trainables.loop import predict
from trainables.models import build_model
from trainables.tasks import DataSummary, EvalContext, EvalResult, PolicySearch, Say, Task, TaskSetup, register_task
from trainables.tasks.attributes.config import EvalConfig, LossConfig
from trainables.tasks.attributes.leaderboard import write_sweep_leaderboard
from trainables.tasks.attributes.losses import LOSSES, build_loss, loss_arguments
from trainables.tasks.attributes.metrics import (THRESHOLD_STRATEGIES, attribute_metrics, calibrate_thresholds,
                                                 majority_accuracy, per_attribute_metrics)
from trainables.tasks.attributes.names import attribute_names
from trainables.tasks.attributes.outputs import ATTRIBUTE_OUTPUTS
from trainables.tasks.attributes.plots import render_trial_plots
from trainables.tasks.attributes.thresholds import evaluate_policy, load_predictions, policy_keys_inert

DEMO_SEED = 0
FORMATS = ("celeba", "attributes_csv")  # the first is the demo set's
WHAT = DATA_HINTS["attributes"]
SPLIT_FILES = {"celeba": "list_eval_partition.txt", "attributes_csv": "the label CSV's split column"}
SPLITS = ("train", "val", "test")


def shards(cfg: TrainConfig, say: Say = lambda text: None) -> str:
    demo = lambda cache: ensure_demo_celeba(cache, num_images=cfg.data.demo_images, seed=DEMO_SEED)  # noqa: E731
    return prepared_root(cfg.data.root, FORMATS, what=WHAT, cache=cfg.data.cache_dir, fmt=cfg.data.format,
                         demo=demo, say=say)


def open_splits(root: str) -> tuple[list[str], dict]:
    """(attribute names, the train/val/test splits reading them)."""
    meta = load_metadata(root)
    names, where = attribute_names(meta), SPLIT_FILES.get(meta.get("format"), "the split of the label file")
    return names, {s: open_split(root, s, names, where) for s in SPLITS}


def prepare(cfg: TrainConfig, say: Say) -> DataSummary:
    """Driver side, once: demo set or real files packed into shards, labels checked, the baseline."""
    root = shards(cfg, say)
    names, splits = open_splits(root)
    if not is_celeba_attribute_set(names):
        shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        say(f"{len(names)} attribute{'s' if len(names) != 1 else ''}, named by the label file: {shown}.")
    val = splits["val"].labels().to_numpy()
    rows = min(splits["train"].num_rows, cfg.data.max_train_images or splits["train"].num_rows)
    return DataSummary(root, {"val/majority_accuracy": majority_accuracy(val)}, rows, {"data.root": root},
                       {s: split.num_rows for s, split in splits.items()})


def check(cfg: TrainConfig) -> None:
    LOSSES.get(cfg.loss.name)


def build(cfg: TrainConfig) -> TaskSetup:
    root = shards(cfg)
    (names, splits), size = open_splits(root), cfg.data.image_size
    prior = splits["train"].labels().to_numpy().mean(axis=0)
    stream = TrainStream(splits["train"], size, names, build_augment(cfg.data.augment, size), cfg.seed,
                         cfg.data.max_train_images, label_dtype=torch.float32,
                         cache_mb=cfg.data.decoded_cache_mb)
    caches = EvalCaches(stream.cache_left)
    criterion = build_loss(cfg.loss.name, train_prior=prior,
                           **{arg: getattr(cfg.loss, arg) for arg in loss_arguments(cfg.loss.name)})

    def evaluate(model: torch.nn.Module, ctx: EvalContext) -> EvalResult:
        scored = {}
        for name in ("val", "test"):
            loader = eval_loader(splits[name], size, names, ctx.rank, ctx.world, ctx.batch_size,
                                 ctx.loader_workers, label_dtype=torch.float32, caches=caches)
            scored[name] = all_gather_rows(*predict(model, loader, ctx.pipe))
        val_logits, val_labels = scored["val"]
        with torch.no_grad():
            val_loss = float(criterion(torch.from_numpy(val_logits), torch.from_numpy(val_labels).float()))
        probabilities = {s: (torch.sigmoid(torch.from_numpy(logits)).numpy(), labels)
                         for s, (logits, labels) in scored.items()}
        metrics, thresholds = epoch_metrics(*probabilities["val"], *probabilities["test"], prior, cfg.eval.threshold)
        metrics["val/loss"] = val_loss
        return EvalResult(metrics, lambda out: write_attribute_files(out, names, thresholds, prior, probabilities))

    model = build_model(cfg.model, num_outputs=len(names))
    return TaskSetup(model=model, criterion=criterion, evaluate=evaluate, train_loader=stream,
                     train_rows=stream.rows, num_outputs=len(names))


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
    (out / artifacts.THRESHOLDS).write_text(json.dumps(payload, indent=1))
    test_scores, test_labels = splits["test"]
    table = pd.DataFrame({"attribute": names, "train_positive_rate": train_prior})
    for strategy, t in thresholds.items():
        per = per_attribute_metrics(test_scores, test_labels, t, names)
        if "test_positive_rate" not in table:
            table["test_positive_rate"] = per["positive_rate"].to_numpy()
        for column in ("accuracy", "precision", "recall", "f1"):
            table[f"{strategy}/{column}"] = per[column].to_numpy()
        table[f"{strategy}/threshold"] = t
    table.to_csv(out / artifacts.PER_ATTRIBUTE, index=False, float_format="%.6f")
    (out / artifacts.PREDICTIONS).mkdir(exist_ok=True)
    for split, (scores, labels) in splits.items():
        frame = pd.DataFrame(scores.astype(np.float32), columns=[f"{artifacts.SCORE}{n}" for n in names])
        frame[[f"{artifacts.LABEL}{n}" for n in names]] = labels.astype(np.uint8)
        frame.to_parquet(out / artifacts.predictions_file(split), index=False)


register_task(Task(
    name="attributes",
    title="face attributes: one sigmoid output per binary attribute",
    metric="val/mean_accuracy",
    sections={"loss": LossConfig, "eval": EvalConfig},
    prepare=prepare, build=build, check=check,
    trial_files=(artifacts.THRESHOLDS, artifacts.PER_ATTRIBUTE, artifacts.PREDICTIONS),
    report_columns=("val/mean_accuracy", "val/macro_f1", "test/fixed/macro_f1", "test/f1_opt/macro_f1"),
    render=render_trial_plots,
    leaderboard=write_sweep_leaderboard,
    outputs=ATTRIBUTE_OUTPUTS,
    policy=PolicySearch(
        files=(artifacts.PREDICTIONS, artifacts.PER_ATTRIBUTE), load=load_predictions,
        evaluate=lambda stored, c: evaluate_policy(stored, c["policy.strategy"], c["policy.smoothing"],
                                                   c["policy.offset"]),
        inert=policy_keys_inert),
))
