"""Per-task accuracy, overall and within demographic groups, and the fairness summaries over groups.

Groups are the true race classes and the true gender classes (9 groups). For each task:
- `<task>/accuracy`, `<task>/balanced_accuracy` (scikit-learn; the balanced form averages recall
  over the classes present in the truth);
- its accuracy within every group with at least one example;
- `<task>/worst_group_accuracy`: the lowest of those, race and gender groups pooled;
- `<task>/group_gap`: best minus worst, over the same pooled groups. Pooling reports one gap
  per task, the disparity a user of the model meets whichever attribute they belong to by; the
  per-kind breakdown stays in the per-group table.
Groups without examples are reported with n = 0 and NaN accuracy and left out of both summaries.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, balanced_accuracy_score

GROUP_KINDS: tuple[str, ...] = ("race", "gender")


def slug(name: str) -> str:
    """A group name usable in a metric key (MLflow keys take no '=' and are easier without spaces)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def task_accuracies(true: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    with warnings.catch_warnings():  # a class predicted but absent from a small truth set warns
        warnings.simplefilter("ignore", UserWarning)
        balanced = balanced_accuracy_score(true, pred) if len(true) else float("nan")
    return {"accuracy": float(accuracy_score(true, pred)) if len(true) else float("nan"),
            "balanced_accuracy": float(balanced)}


def group_table(true: dict[str, np.ndarray], pred: dict[str, np.ndarray],
                group_names: dict[str, tuple[str, ...]]) -> pd.DataFrame:
    """One row per group (kind, group, n, `<task>_accuracy` per task), race groups then gender groups.

    `true` and `pred` map each task to canonical class indices; a group is a class of the true
    labels of a kind in GROUP_KINDS, named by `group_names[kind]`.
    """
    rows = []
    for kind in GROUP_KINDS:
        for k, group in enumerate(group_names[kind]):
            member = true[kind] == k
            row = {"kind": kind, "group": group, "n": int(member.sum())}
            for task in true:
                row[f"{task}_accuracy"] = float(np.mean(true[task][member] == pred[task][member])) \
                    if member.any() else float("nan")
            rows.append(row)
    return pd.DataFrame(rows)


def group_metrics(table: pd.DataFrame, tasks) -> dict[str, float]:
    """`<task>/group_accuracy/<kind>/<group>`, `<task>/worst_group_accuracy` and `<task>/group_gap`."""
    out: dict[str, float] = {}
    present = table[table["n"] > 0]
    for task in tasks:
        for row in present.itertuples(index=False):
            out[f"{task}/group_accuracy/{row.kind}/{slug(row.group)}"] = float(getattr(row, f"{task}_accuracy"))
        values = present[f"{task}_accuracy"].to_numpy()
        out[f"{task}/worst_group_accuracy"] = float(values.min()) if len(values) else float("nan")
        out[f"{task}/group_gap"] = float(values.max() - values.min()) if len(values) else float("nan")
    return out


def plot_group_accuracy(table: pd.DataFrame, tasks, out) -> None:
    """A grouped bar chart: accuracy of each task within each group (Agg backend, no display)."""
    from trainables.plotting import new_figure

    labels = [f"{g}\n({k}, n={n})" for k, g, n in zip(table["kind"], table["group"], table["n"])]
    x, width = np.arange(len(table)), 0.8 / max(1, len(tasks))
    fig = new_figure((max(6.0, 1.05 * len(table)), 3.6))
    ax = fig.add_subplot()
    for j, task in enumerate(tasks):
        ax.bar(x + (j - (len(tasks) - 1) / 2) * width, table[f"{task}_accuracy"].fillna(0), width, label=task)
    ax.set_xticks(x, labels, fontsize=6.5)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title("validation accuracy by group", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside: never over a bar
    fig.tight_layout()
    fig.savefig(out, dpi=80)
