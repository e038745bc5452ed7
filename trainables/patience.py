"""`optim.patience`: a trial stops when its metric has not improved for that many evaluations (seed 000
stopped at epoch 15 of 100 once validation loss no longer fell). The state travels in each checkpoint,
so a resumed trial counts on from where it was."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass
class Patience:
    evaluations: int               # 0: never stop
    mode: str = "max"              # the sweep's: "max" or "min"
    best: float | None = None
    since_best: int = 0            # evaluations since `best`

    def update(self, value: float | None) -> bool:
        """Count one evaluation's `value` (a missing or NaN value is no improvement); True when it is time to stop."""
        finite = value is not None and math.isfinite(value)
        if finite and (self.best is None or (value > self.best if self.mode == "max" else value < self.best)):
            self.best, self.since_best = float(value), 0
        else:
            self.since_best += 1
        return self.exhausted

    @property
    def exhausted(self) -> bool:
        return self.evaluations > 0 and self.since_best >= self.evaluations

    def state(self) -> dict:
        return {"best": self.best, "since_best": self.since_best}

    def load(self, state: dict | None) -> None:
        if state:
            self.best, self.since_best = state.get("best"), int(state.get("since_best", 0))
