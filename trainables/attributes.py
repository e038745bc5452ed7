"""The CelebA attribute task: its datasets, its per-epoch metrics and its result files.

Each epoch, validation scores give the `val/*` metrics at the fixed threshold; the thresholds of
every calibration strategy are derived from those validation scores and reported on the test
split as `test/<strategy>/*`. The files written next to the checkpoint (thresholds, per-attribute
table, scores of both splits) let anyone recompute every number without the model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from trainables.config import TrainConfig
from trainables.data.celeba import CelebAIndex
from trainables.data.loading import ImageLabelDataset
from trainables.data.transforms import build_augment
from trainables.errors import UserError
from trainables.metrics import (
    THRESHOLD_STRATEGIES,
    attribute_metrics,
    calibrate_thresholds,
    per_attribute_metrics,
)


@dataclass
class AttributeData:
    names: list[str]
    train: ImageLabelDataset
    val: ImageLabelDataset
    test: ImageLabelDataset
    train_prior: np.ndarray  # positive rate of each attribute on the training split


def build_attribute_data(index: CelebAIndex, cfg: TrainConfig) -> AttributeData:
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
        splits[split] = ImageLabelDataset(paths.__getitem__, index.attributes[rows], size, augment)
    prior = splits["train"].labels.mean(axis=0)
    return AttributeData(list(index.attribute_names), splits["train"], splits["val"], splits["test"], prior)


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
        per = per_attribute_metrics(test_scores, test_labels, t, names).set_index("name")
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
