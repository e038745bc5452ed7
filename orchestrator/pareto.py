"""A sweep of several objectives: its Pareto front, the trial a declared rule picks from it, and the
files and tags that record them.

Only trials that ran all their epochs are candidates: a trial ASHA stopped early (ASHA ranks by the
first objective alone) never reaches the front, nor does one `optim.patience` stopped, nor a failed or
unfinished one. A candidate is on
the front when no other candidate is at least as good in every objective and better in one; equal
points are all on it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import pandas as pd

from orchestrator.extend import FROM
from trainables.artifacts import PARETO_PLOT, PARETO_TABLE

FRONT = "front"  # the final table's column: "*" for a front member


def non_dominated(values: Sequence[Sequence[float]], modes: Sequence[str]) -> list[bool]:
    """For each point (one value per objective), whether no other point dominates it. `modes` says
    max or min per objective. A point with a missing or non-finite value is never on the front, and
    dominates nothing."""
    signs = [1.0 if mode == "max" else -1.0 for mode in modes]
    points = [[s * float(v) for s, v in zip(signs, row)] if all(_finite(v) for v in row) else None for row in values]

    def dominates(a, b) -> bool:
        return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))

    return [p is not None and not any(q is not None and dominates(q, p) for q in points) for p in points]


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def choose(table: pd.DataFrame, objectives: list[tuple[str, str]], max_gap: float | None) -> tuple[int | None, str]:
    """(the row of the front member the rule picks, the rule in words). The rule: the best first objective
    among front members, and with a gap limit among those whose second objective is at most `max_gap`
    (when none is, among all members, and the words say so). Equal first objectives: the better second."""
    (first, first_mode), (second, second_mode) = objectives[0], objectives[1]
    members = table[table[FRONT] == "*"]
    rule = f"best {first} ({first_mode}) among the Pareto front"
    if max_gap is not None:
        within = members[members[second] <= max_gap]
        if within.empty:
            rule += f"; no member has {second} <= {max_gap:g}, so among all members"
        else:
            members, rule = within, rule + f" with {second} <= {max_gap:g}"
    if members.empty:
        return None, rule
    ordered = members.sort_values([first, second], ascending=[first_mode == "min", second_mode == "min"], kind="stable")
    return int(ordered.index[0]), rule


def mark(table: pd.DataFrame, objectives: list[tuple[str, str]], candidate: Sequence[bool],
         max_gap: float | None) -> tuple[pd.DataFrame, int | None, str]:
    """The table with its `front` column ("*" for a member) and its `best` column on the picked member;
    and that row and the rule in words. `candidate[i]`: whether row i ran all its epochs."""
    out = table.copy()
    names = [m for m, _ in objectives]
    values = [[row.get(m, float("nan")) if ok else float("nan") for m in names]
              for (_, row), ok in zip(out.iterrows(), candidate)]
    front = non_dominated(values, [d for _, d in objectives])
    out.insert(1, FRONT, ["*" if f else "" for f in front])
    picked, rule = choose(out, objectives, max_gap)
    out["best"] = ["*" if i == picked else "" for i in range(len(out))]
    return out, picked, rule


def write(table: pd.DataFrame, objectives: list[tuple[str, str]], candidate: Sequence[bool], folder: Path,
          title: str = "") -> list[str]:
    """pareto.csv (every trial with its objectives, whether it ran all its epochs, and whether it is on
    the front) and pareto.png (the first two objectives, the front drawn as a step line) in `folder`."""
    names = [m for m, _ in objectives]
    columns = ["trial", "config", *[c for c in (FROM,) if c in table.columns], "status", "epochs",
               *[m for m in names if m in table.columns]]
    csv = table[columns].copy()
    csv["complete"] = list(candidate)
    csv["pareto"] = (table[FRONT] == "*").tolist()
    csv.to_csv(folder / PARETO_TABLE, index=False)
    plot(csv, objectives, folder / PARETO_PLOT, title)
    return [PARETO_TABLE, PARETO_PLOT]


def plot(csv: pd.DataFrame, objectives: list[tuple[str, str]], path: Path, title: str = "") -> None:
    from matplotlib.figure import Figure  # the object API: no global backend, safe in any thread

    (x, x_mode), (y, y_mode) = objectives[0], objectives[1]
    fig = Figure(figsize=(6.4, 4.8), dpi=100)
    ax = fig.subplots()
    if x in csv.columns and y in csv.columns:
        shown = csv[csv["complete"] & csv[x].notna() & csv[y].notna()]
        others, front = shown[~shown["pareto"]], shown[shown["pareto"]].sort_values(x)
        ax.scatter(others[x], others[y], color="0.6", label="trial")
        ax.scatter(front[x], front[y], color="tab:red", zorder=3, label="Pareto front")
        # The edge of what the front dominates: between two members (by the first objective) it is at the
        # level of the one that dominates that stretch, the next one when the first is maximised.
        ax.step(front[x], front[y], where="pre" if x_mode == "max" else "post", color="tab:red", alpha=0.6)
        middle = (shown[x].min() + shown[x].max()) / 2 if not shown.empty else 0.0
        for _, row in front.iterrows():  # a label left of a point in the right half: it stays inside the axes
            right = row[x] > middle
            label = ax.annotate(str(row["config"]), (row[x], row[y]), fontsize=7, xytext=(-4 if right else 4, 4),
                                textcoords="offset points", ha="right" if right else "left")
            label.set_in_layout(False)  # a long name must not squeeze the axes
        stopped = csv[~csv["complete"] & csv[x].notna() & csv[y].notna()]
        if not stopped.empty:
            ax.scatter(stopped[x], stopped[y], marker="x", color="0.75", label="stopped early (not a candidate)")
    ax.set_xlabel(f"{x} ({'higher' if x_mode == 'max' else 'lower'} is better)")
    ax.set_ylabel(f"{y} ({'higher' if y_mode == 'max' else 'lower'} is better)")
    ax.set_title(title or "Pareto front", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
