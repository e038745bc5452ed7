"""The seed 002 table: every trial's mean accuracy and macro P/R/F1, beside published CelebA numbers.

Each trial appears with the fixed 0.5 threshold and with its best calibrated strategy (named; the
strategies' thresholds come from validation, and the table shows their test numbers). Published
rows are marked as such and are never mixed into the ranking of our own trials.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from trainables import artifacts
from trainables.tasks.attributes.metrics import THRESHOLD_STRATEGIES

COLUMNS = ["mean_accuracy", "macro_precision", "macro_recall", "macro_f1"]

# CelebA test split, percent (../shared/DATA_FORMATS.md and seed 002's own table).
PUBLISHED = [
    ("LNets+ANet", 87.30, None, None, None),
    ("MOON", 90.94, None, None, None),
    ("MCNN-AUX", 91.29, None, None, None),
    ("DMM-CNN", 91.70, None, None, None),
    ("SSP+SSG", 91.80, None, None, None),
    ("ImageNet-finetuned ResNet, BCE", 92.0, None, None, None),
    ("FaceAttr-Analysis ResNet101", 91.53, 79.81, 63.67, 68.52),
    ("FaceAttr-Analysis SE-ResNet101", 91.95, 79.81, 65.64, 69.99),
    ("FaceAttr-Analysis ResNet152", 91.95, 79.46, 65.98, 70.14),
]


def leaderboard(rows: list[tuple[str, dict]]) -> pd.DataFrame | None:
    """`rows` are (trial description, last result metrics). None when the trials are not attribute trials."""
    ours = []
    for name, metrics in rows:
        if "test/fixed/mean_accuracy" not in metrics:
            continue
        calibrated = [s for s in THRESHOLD_STRATEGIES if s != "fixed" and f"test/{s}/macro_f1" in metrics]
        best = max(calibrated, key=lambda s: metrics[f"test/{s}/macro_f1"], default="fixed")
        row = {"model": name, "source": "this sweep"}
        for strategy, label in (("fixed", "fixed"), (best, "best")):
            for column in COLUMNS:
                row[f"{label}/{column}"] = 100 * metrics[f"test/{strategy}/{column}"]
        row["best/strategy"] = best
        ours.append(row)
    if not ours:
        return None
    table = pd.DataFrame(ours).sort_values("fixed/mean_accuracy", ascending=False)
    published = pd.DataFrame(
        [{"model": m, "source": "published", **{f"fixed/{c}": v for c, v in zip(COLUMNS, values)}}
         for m, *values in PUBLISHED]
    ).sort_values("fixed/mean_accuracy", ascending=False)
    return pd.concat([table, published], ignore_index=True)


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub table (pandas' own needs the optional `tabulate` package)."""
    def cell(value) -> str:
        if isinstance(value, float):
            return "" if np.isnan(value) else f"{value:.2f}"
        return "" if value is None else str(value)

    header = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    note = ("\nPercent, CelebA test split. `fixed`: threshold 0.5. `best`: the trial's best calibrated threshold "
            "strategy (thresholds chosen on validation). Published rows are from the papers, on the real CelebA.\n")
    return "\n".join([header, rule, *body]) + "\n" + note


def write_leaderboard(table: pd.DataFrame, folder: Path) -> list[str]:
    table.to_csv(folder / artifacts.LEADERBOARD_CSV, index=False, float_format="%.2f")
    (folder / artifacts.LEADERBOARD_MD).write_text(to_markdown(table))
    return [artifacts.LEADERBOARD_CSV, artifacts.LEADERBOARD_MD]


def write_sweep_leaderboard(rows: list[tuple[str, dict]], folder: Path) -> list[str]:
    """The Task hook: the table of a finished sweep's trials (description, last metrics) into `folder`."""
    table = leaderboard(rows)
    return write_leaderboard(table, folder) if table is not None else []
