"""`optim.patience`: a trial stops when its metric has not improved for that many evaluations (seed 000
stopped at epoch 15 of 100 once validation loss no longer fell). The state travels in each checkpoint,
so a resumed trial counts on from where it was.

The same watch gives every trial its best-evaluation summary (`best/<metric>`, `best/step`), reported
whenever the sweep's metric improves: MLflow's runs table shows each metric's last value (mlflow#6348),
so without it a trial that peaked early is ranked by its later, worse numbers."""

from __future__ import annotations

import math
from dataclasses import dataclass

from trainables.artifacts import STOPPED


@dataclass
class Patience:
    evaluations: int               # 0: never stop
    mode: str = "max"              # the sweep's: "max" or "min"
    best: float | None = None
    since_best: int = 0            # evaluations since `best`
    improved: bool = False         # whether the last evaluation was the best so far

    def update(self, value: float | None) -> bool:
        """Count one evaluation's `value` (a missing or NaN value is no improvement); True when it is time to stop."""
        finite = value is not None and math.isfinite(value)
        self.improved = finite and (self.best is None or (value > self.best if self.mode == "max" else value < self.best))
        if self.improved:
            self.best, self.since_best = float(value), 0
        else:
            self.since_best += 1
        return self.exhausted

    def observe(self, metrics: dict, metric: str, step: int) -> dict:
        """One evaluation's `metrics` as reported: with `best/*` when `metric` improved, and `tag/stopped`
        = patience when this evaluation exhausts the patience (the trial then ends)."""
        out = dict(metrics)
        if self.update(metrics.get(metric)):
            out[STOPPED] = "patience"
        if self.improved:
            out.update(best_summary(metrics, step))
        return out

    @property
    def exhausted(self) -> bool:
        return self.evaluations > 0 and self.since_best >= self.evaluations

    def state(self) -> dict:
        return {"best": self.best, "since_best": self.since_best}

    def load(self, state: dict | None) -> None:
        if state:
            self.best, self.since_best = state.get("best"), int(state.get("since_best", 0))


def best_summary(metrics: dict, step: int) -> dict[str, float]:
    """`best/<key>` for each number an evaluation reports (not its timings), and `best/step` (the MLflow step)."""
    numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
               and "/" in k and not k.startswith(("timing/", "best/", "workers/")) and not k.endswith("_unix")}
    return {**{f"best/{k}": float(v) for k, v in numbers.items()}, "best/step": float(step)}
