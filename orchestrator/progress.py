"""Console progress of a sweep: one line per trial event, with the current best.

Tune's own tables are switched off (verbose=0); these lines say which trial, which epoch, its
metric, and the best so far, and read the same in a terminal and in `ray job logs`.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Callable

from ray import tune

from orchestrator import ranking
from orchestrator.trial_runs import error_line
from trainables.artifacts import RESUMED, STOPPED


class ProgressPrinter(tune.Callback):
    def __init__(self, metric: str, mode: str, total_trials: int, epochs: int, describe: Callable[[dict], str],
                 stream=None, stopper: str | None = None):
        self.metric, self.mode, self.total, self.epochs = metric, mode, total_trials, epochs
        self.stopper = stopper  # what may stop a trial before its last epoch ("ASHA"), or None
        self.describe, self.stream = describe, stream  # None: sys.stdout at print time (picklable)
        self.order: dict[str, int] = {}
        self.started: dict[str, float] = {}
        # Each trial's latest value of the metric: the best of them is the trial the sweep would pick now
        # (by each trial's last evaluation, as its final `best:` line does), not a peak a trial has left.
        self.latest: dict[str, tuple[float, str]] = {}

    def _say(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=self.stream or sys.stdout, flush=True)

    def _label(self, trial, trials=()) -> str:
        """`trial N/total model`: N is the trial's place in the sweep (Tune's list, restored trials first in
        their first run's order), the same in every invocation of a resumed sweep."""
        if trial.trial_id not in self.order:
            ids = [t.trial_id for t in trials]
            self.order[trial.trial_id] = ids.index(trial.trial_id) + 1 if trial.trial_id in ids else len(self.order) + 1
        return f"trial {self.order[trial.trial_id]}/{self.total} {self.describe(trial.config)}"

    @property
    def best(self) -> tuple[float, str] | None:
        """(value, trial) with the best latest value, the trial created first of equals, as the sweep's own
        pick (ranking.py); None while no trial has a finite value."""
        ids = sorted(self.latest, key=lambda trial_id: self.order.get(trial_id, math.inf))
        index = ranking.best_index([self.latest[trial_id][0] for trial_id in ids], self.mode)
        return self.latest[ids[index]] if index is not None else None

    def _recall_best(self, trials) -> None:
        """On a resumed sweep's first event: the trials that ended in earlier invocations."""
        if self.latest or self.order:
            return
        for place, other in enumerate(trials, start=1):
            value = (other.last_result or {}).get(self.metric) if other.status == "TERMINATED" else None
            if value is not None:
                self.latest[other.trial_id] = (value, self.describe(other.config))
                self.order.setdefault(other.trial_id, place)  # as _label numbers it

    def on_trial_start(self, iteration, trials, trial, **info):
        self._recall_best(trials)
        self.started[trial.trial_id] = time.time()
        self._say(f"start  {self._label(trial, trials)}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        value = result.get(self.metric)
        if value is None:
            return
        self._recall_best(trials)
        label = self._label(trial, trials)
        self.latest[trial.trial_id] = (value, label.split(" ", 2)[2])
        leader = self.best
        best = "best {:.4f} ({})".format(*leader) if leader else "best -"
        if result.get(RESUMED):
            self._say(f"       {label}  resumed from its epoch {result.get('epoch', '?')} checkpoint  | {best}")
            return
        speed = result.get("train/images_per_sec")
        speed_text = f"  {speed:.0f} img/s" if speed else ""
        step = f" (step {result['step']})" if "step" in result else ""  # evaluating every N steps
        self._say(f"       {label}  epoch {result.get('epoch', '?')}/{self.epochs}{step}  "
                  f"{self.metric} {value:.4f}{speed_text}  | {best}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        result = trial.last_result or {}
        seconds = time.time() - self.started.get(trial.trial_id, time.time())
        epochs = result.get("epoch", 0)
        how = ("done" if epochs >= self.epochs else f"stopped early by {self.stopper} after epoch {epochs}"
               if self.stopper else f"ended after epoch {epochs} of {self.epochs}")
        if result.get(STOPPED) == "patience":
            how = f"stopped by patience after epoch {epochs} (optim.patience)"
        value = result.get(self.metric)
        shown = f"{self.metric} {value:.4f}" if value is not None else "no result"
        self._say(f"{'done':<6} {self._label(trial, trials)}: {shown}, {how}, {seconds:.0f}s")

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._say(f"RETRY  {self._label(trial, trials)} from its last checkpoint: {error_line(trial)}")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._say(f"FAILED {self._label(trial, trials)}: {error_line(trial)}")
