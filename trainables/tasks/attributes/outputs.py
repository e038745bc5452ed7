"""What `export` and `predict` show for an attribute model: its attribute names, scores and labels."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import torch

from trainables import artifacts
from trainables.errors import UserError
from trainables.tasks import Decisions, Reader, TaskOutputs

STRATEGY_MEANING = {
    "fixed": "eval.threshold for every attribute",
    "prior": "each attribute's positive rate in training",
    "f1_opt": "per attribute, the threshold that maximised F1 on the validation split",
    "acc_opt": "per attribute, the threshold that maximised accuracy on the validation split",
}


def read_per_attribute(source) -> pd.DataFrame:
    """per_attribute.csv with every name kept as written: an attribute called `NA`, `None` or `1` stays a string."""
    return pd.read_csv(source, dtype={"attribute": str}, keep_default_na=False)


def output_names(cfg, read: Reader) -> dict:
    """The model's output order is the label file's column order, which per_attribute.csv keeps."""
    table = read(artifacts.PER_ATTRIBUTE)
    if table is not None:
        return {"outputs": read_per_attribute(io.BytesIO(table))["attribute"].tolist()}
    scores = read(artifacts.predictions_file("val"))
    if scores is not None:
        columns = pd.read_parquet(io.BytesIO(scores)).columns
        return {"outputs": [c.split("/", 1)[1] for c in columns if c.startswith(artifacts.SCORE)]}
    raise UserError(f"the checkpoint has neither {artifacts.PER_ATTRIBUTE} nor {artifacts.predictions_file('val')}, "
                    "so its attribute names are unknown: export a checkpoint written by an attribute trial")


def describe(outputs: np.ndarray, exported, strategy: str) -> pd.DataFrame:
    """score/ and label/ per attribute: a score is labelled 1 when it reaches the threshold of `strategy`, the
    decision chosen among the export's threshold policies (`exported.rules`, its thresholds.json)."""
    # torch.sigmoid on float32, as the trial's evaluation computed its stored scores
    scores = torch.sigmoid(torch.from_numpy(np.asarray(outputs, dtype=np.float32))).numpy()
    if strategy not in exported.rules:
        raise UserError(f"{exported.folder} has no {artifacts.THRESHOLDS} with strategy '{strategy or 'f1_opt'}': "
                        "export the model again with `orchestrator export`")
    thresholds = exported.rules[strategy]
    columns = {}
    for k, name in enumerate(exported.output_names):
        columns[f"{artifacts.SCORE}{name}"] = scores[:, k]
        # score >= threshold in float64, exactly as metrics.attribute_confusion counts a positive
        columns[f"{artifacts.LABEL}{name}"] = (scores[:, k].astype(np.float64) >= thresholds[name]).astype(np.uint8)
    return pd.DataFrame(columns)


def captions(row: pd.Series) -> list[str]:
    """The attributes predicted positive."""
    return [key.split("/", 1)[1] for key, value in row.items() if key.startswith(artifacts.LABEL) and value == 1]


def present(row: pd.Series, scores: dict) -> list[dict]:
    """Every attribute with its score and its decision under the exported threshold policy (describe's label/)."""
    return [{"title": "attributes", "items": [
        {"name": name, "score": float(score), "decision": "yes" if row[f"{artifacts.LABEL}{name}"] == 1 else "no"}
        for name, score in scores.items()]}]


def card_lines(strategies: list[str], strategy: str) -> list[str]:
    if not strategy:
        return []
    return [f"- **Decision thresholds:** `predict` labels a score 1 when it reaches `{strategy}`'s threshold "
            f"({STRATEGY_MEANING.get(strategy, 'see ' + artifacts.THRESHOLDS)}); {artifacts.THRESHOLDS} has "
            f"{', '.join(strategies)} (choose with --decision)."]


def card_metrics(strategy: str) -> list[str]:
    """The headline metrics: validation's at the fixed threshold, test's under the default policy and the fixed one."""
    strategy = strategy or "fixed"
    return ["val/mean_accuracy", "val/macro_f1", f"test/{strategy}/mean_accuracy", f"test/{strategy}/macro_f1",
            "test/fixed/mean_accuracy", "test/fixed/macro_f1"]


ATTRIBUTE_OUTPUTS = TaskOutputs(
    card_metrics=card_metrics,
    output_names=output_names, describe=describe, captions=captions,
    export_files=(artifacts.THRESHOLDS,), card_lines=card_lines, present=present,
    # the calibrated thresholds by default, else the fixed one (both are always written)
    decisions=Decisions(artifacts.THRESHOLDS, preferred=("f1_opt", "fixed")),
    score_groups=lambda cfg, labels: [(0, len(labels["outputs"]), "sigmoid")],  # the score/ columns of describe
)
