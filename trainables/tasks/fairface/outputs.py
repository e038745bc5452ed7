"""What `export` and `predict` show for a FairFace model: race, gender and age, from either formulation."""

from __future__ import annotations

import numpy as np
import pandas as pd

from trainables.errors import UserError
from trainables.tasks import Reader, TaskOutputs
from trainables.tasks.fairface.labels import CLASSES, ONEHOT18_POSITION, TASKS, names
from trainables.tasks.fairface.multitask import build_multitask_loss


def output_names(cfg, read: Reader) -> dict:
    def onehot18() -> list[str]:
        out = [""] * sum(len(CLASSES[t]) for t in TASKS)
        for task in TASKS:
            for cls, position in zip(CLASSES[task], ONEHOT18_POSITION[task]):
                out[int(position)] = f"{task}/{cls}"
        return out

    def multihead() -> list[str]:
        age = [f"age/{c}" for c in CLASSES["age"]] if cfg.age.mode == "bins" else ["age/years_over_scale"]
        return [f"{t}/{c}" for t in ("race", "gender") for c in CLASSES[t]] + age

    layouts = {"onehot18": onehot18, "multihead": multihead}
    if cfg.multitask.formulation not in layouts:
        raise UserError(f"unknown multitask.formulation '{cfg.multitask.formulation}'; known: {', '.join(layouts)}")
    return {"outputs": layouts[cfg.multitask.formulation](), "heads": {t: list(CLASSES[t]) for t in TASKS},
            "formulation": cfg.multitask.formulation, "age_mode": cfg.age.mode}


def describe_predictions(outputs: np.ndarray, cfg) -> pd.DataFrame:
    """Labels for raw model outputs of either formulation: race, gender, age_bin (class strings) and
    age_years (regressed, else the predicted bin's midpoint)."""
    decoded = build_multitask_loss(cfg).decode(np.asarray(outputs, dtype=np.float32))
    return pd.DataFrame({"race": names(decoded.indices["race"], "race"),
                         "gender": names(decoded.indices["gender"], "gender"),
                         "age_bin": names(decoded.indices["age"], "age"),
                         "age_years": decoded.age_years})


def score_groups(cfg, labels: dict) -> list[tuple[int, int, str]]:
    """The served scores: seed 000's 18 sigmoids, or per head a softmax (age in years stays as regressed)."""
    head = build_multitask_loss(cfg).head
    if not hasattr(head, "columns"):
        return [(0, head.num_outputs, "sigmoid")]
    return [(c.start, c.stop, "raw" if task == "age" and cfg.age.mode != "bins" else "softmax")
            for task, c in head.columns.items()]


def present(row: pd.Series, scores: dict) -> list[dict]:
    """Race, gender and age: each class with its served probability, the predicted one marked; a regressed
    age is its years."""
    chosen = {"race": row["race"], "gender": row["gender"], "age": row["age_bin"]}
    sections = []
    for task in TASKS:
        items = [{"name": name.split("/", 1)[1], "score": float(score),
                  "decision": "predicted" if name.split("/", 1)[1] == chosen[task] else ""}
                 for name, score in scores.items() if name.split("/", 1)[0] == task]
        if task == "age" and not any(item["decision"] for item in items):  # age.mode=regression
            items = [{"name": "years", "score": float(row["age_years"]), "decision": f"predicted ({row['age_bin']})"}]
        sections.append({"title": task, "items": items})
    return sections


def captions(row: pd.Series) -> list[str]:
    return [str(row["race"]), str(row["gender"]), f"age {row['age_bin']} (~{float(row['age_years']):.0f} y)"]


FAIRFACE_OUTPUTS = TaskOutputs(
    card_metrics=lambda s: ["val/mean_task_accuracy", "val/race/accuracy", "val/gender/accuracy",
                            "val/age/accuracy", "val/age/mae_years", "val/race/worst_group_accuracy"],
    output_names=output_names,
    describe=lambda outputs, exported, strategy: describe_predictions(outputs, exported.cfg),
    captions=captions,
    score_groups=score_groups,
    present=present,
)
