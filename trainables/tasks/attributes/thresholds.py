"""A threshold policy scored on stored predictions: no model, no training.

A policy is a calibration strategy (derived on validation scores), a per-attribute smoothing toward
0.5 and a global offset. It is chosen on validation and reported on test.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from trainables import artifacts
from trainables.errors import UserError
from trainables.tasks.attributes.metrics import apply_policy, attribute_metrics, calibrate_thresholds
from trainables.tasks.attributes.outputs import read_per_attribute


@dataclass
class StoredPredictions:
    names: list[str]
    val: tuple[np.ndarray, np.ndarray]    # (scores, labels)
    test: tuple[np.ndarray, np.ndarray]
    train_prior: np.ndarray


def load_predictions(folder: Path) -> StoredPredictions:
    """Read what an attribute trial stored: predictions/{val,test}.parquet and per_attribute.csv."""
    try:
        table = read_per_attribute(folder / artifacts.PER_ATTRIBUTE)
        frames = {split: pd.read_parquet(folder / artifacts.predictions_file(split)) for split in ("val", "test")}
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read stored predictions in {folder} ({err}): pass a finished attribute trial") from None
    names = list(table["attribute"])

    def split(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        return (frame[[f"{artifacts.SCORE}{n}" for n in names]].to_numpy(),
                frame[[f"{artifacts.LABEL}{n}" for n in names]].to_numpy())

    return StoredPredictions(names, split(frames["val"]), split(frames["test"]), table["train_positive_rate"].to_numpy())


def policy_thresholds(stored: StoredPredictions, strategy: str, smoothing: float, offset: float) -> np.ndarray:
    base = calibrate_thresholds(strategy, *stored.val, stored.train_prior)
    return apply_policy(base, smoothing, offset)


def policy_keys_inert(config: dict) -> tuple[str, ...]:
    """The keys of a policy's config that do not change its thresholds: smoothing shrinks thresholds toward 0.5,
    where `fixed` puts them already."""
    return ("policy.smoothing",) if config.get("policy.strategy") == "fixed" else ()


def evaluate_policy(stored: StoredPredictions, strategy: str, smoothing: float, offset: float) -> dict[str, float]:
    """`val/*` (where the policy is chosen) and `test/*` (where it is reported) metrics."""
    thresholds = policy_thresholds(stored, strategy, smoothing, offset)
    metrics = {f"val/{k}": v for k, v in attribute_metrics(*stored.val, thresholds).items()}
    metrics.update({f"test/{k}": v for k, v in attribute_metrics(*stored.test, thresholds).items()})
    return metrics
