"""The seed 002 table: every trial's mean accuracy and macro P/R/F1, beside published CelebA numbers.

Each trial appears with the fixed 0.5 threshold and with its best calibrated strategy (named; the
strategies' thresholds come from validation, and the table shows their test numbers), and whether it
started from pretrained weights or from scratch. Published rows are marked as such and are never
mixed into the ranking of our own trials. They are shown only when the sweep trained on CelebA's own
40 attributes, in CelebA's order (its shards' label columns, read through each trial's `data.root`):
a mean over another attribute set is not comparable with them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from trainables import artifacts
from trainables.config_sections import ModelConfig
from trainables.data.formats.celeba import is_celeba_attribute_set
from trainables.tasks.attributes.metrics import THRESHOLD_STRATEGIES
from trainables.tasks.attributes.names import names_of_root

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


def _flag(value) -> bool:
    return value is True or str(value).strip().lower() in ("true", "1", "yes")


def weights_of(config: dict) -> str:
    """"pretrained" for a trial that started from pretrained weights (timm's, or a file), else "scratch"."""
    pretrained = _flag(config.get("model.pretrained", ModelConfig.pretrained))
    return "pretrained" if pretrained or str(config.get("model.weights") or "").strip() else "scratch"


def leaderboard(rows: list[tuple], attribute_names: list[str] | None = None) -> pd.DataFrame | None:
    """`rows` are (trial description, last result metrics[, trial config]); a config adds the `weights`
    column. Published rows come only when `attribute_names` are CelebA's 40. None when the trials are
    not attribute trials."""
    ours = []
    for name, metrics, *config in rows:
        if "test/fixed/mean_accuracy" not in metrics:
            continue
        calibrated = [s for s in THRESHOLD_STRATEGIES if s != "fixed" and f"test/{s}/macro_f1" in metrics]
        best = max(calibrated, key=lambda s: metrics[f"test/{s}/macro_f1"], default="fixed")
        row = {"model": name, **({"weights": weights_of(config[0] or {})} if config else {}), "source": "this sweep"}
        for strategy, label in (("fixed", "fixed"), (best, "best")):
            for column in COLUMNS:
                row[f"{label}/{column}"] = 100 * metrics[f"test/{strategy}/{column}"]
        row["best/strategy"] = best
        ours.append(row)
    if not ours:
        return None
    table = pd.DataFrame(ours).sort_values("fixed/mean_accuracy", ascending=False)
    if attribute_names is None or not is_celeba_attribute_set(attribute_names):
        return table.reset_index(drop=True)
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
    celeba = bool((table["source"] == "published").any())
    note = ("\nPercent, " + ("CelebA test split" if celeba else "test split, mean over this data's attributes")
            + ". `fixed`: threshold 0.5. `best`: the trial's best calibrated threshold strategy (thresholds "
            "chosen on validation). "
            + ("Published rows are from the papers, on the real CelebA.\n" if celeba else
               "Published CelebA numbers are left out: they average CelebA's 40 attributes, not these.\n"))
    return "\n".join([header, rule, *body]) + "\n" + note


def write_leaderboard(table: pd.DataFrame, folder: Path) -> list[str]:
    table.to_csv(folder / artifacts.LEADERBOARD_CSV, index=False, float_format="%.2f")
    (folder / artifacts.LEADERBOARD_MD).write_text(to_markdown(table))
    return [artifacts.LEADERBOARD_CSV, artifacts.LEADERBOARD_MD]


def sweep_attribute_names(rows: list[tuple]) -> list[str] | None:
    """The attributes every trial trained on, from the prepared data its config names; None when the
    trials disagree or the data cannot be read (then no published rows: they may not compare)."""
    roots = {str(config[0].get("data.root", "")) for _, _, *config in rows if config and config[0]}
    found = {tuple(names) if names is not None else None for names in map(names_of_root, roots)}
    return list(found.pop()) if len(found) == 1 and None not in found else None


def write_sweep_leaderboard(rows: list[tuple], folder: Path) -> list[str]:
    """The Task hook: the table of a finished sweep's trials (description, last metrics, config) into `folder`."""
    table = leaderboard(rows, sweep_attribute_names(rows))
    return write_leaderboard(table, folder) if table is not None else []
