"""A sweep's compute budget (`--budget 2h`), counted in trial-hours and kept across `--resume`.

A trial costs its running time (from Tune's start of its actor to its end) times its weight: its DDP
workers, times each worker's GPUs where trials have GPUs. Only time a trial runs is counted, so the
time a sweep was down before a `--resume` costs nothing (Ray's `TimeoutStopper` counts it: ray#21038).
What was spent is kept in the sweep's state (state.py) as trials report (at most every SAVE_EVERY_S) and
at each trial's end, and a resume goes on from it.

When the budget is spent, no new trial starts, and each running trial stops at its next report (the end
of its current epoch): then `fit()` ends as it does on a Ctrl-C, with Tune's state saved and the
unfinished trials resumable (a Tune Stopper would mark them TERMINATED, as if they had finished). The
sweep is recorded as `budget spent` and exits with EXIT_BUDGET_SPENT.
"""

from __future__ import annotations

import math
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

from ray import tune

from orchestrator import signals
from orchestrator.accounting import resume_command
from orchestrator.store_outage import QUIET_S
from orchestrator.trial_runs import result_step
from trainables.errors import UserError
from trainables.storage_fs import one_line

EXIT_BUDGET_SPENT = 4  # the sweep stopped because its budget was spent: `--resume --budget LARGER` continues
BUDGET_SPENT = "budget spent"  # the sweep's state, and its parent run's `status` tag
SAVE_EVERY_S = 30.0  # while trials report, the spend is saved at most this often (and at each trial's end)
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([hms])\s*$", re.IGNORECASE)


def parse_budget(text: str) -> float:
    """`2h`, `90m`, `30s`, `1.5h` -> seconds; anything else is one line naming the flag and the fix."""
    match = _DURATION.match(str(text))
    seconds = float(match.group(1)) * _UNITS[match.group(2).lower()] if match else math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise UserError(f"--budget {text!r} is not a duration: give a positive number of trial-hours, minutes or "
                        "seconds, e.g. --budget 2h, --budget 90m, --budget 30s or --budget 1.5h")
    return seconds


def hours(seconds: float) -> str:
    """A number of trial-seconds as a short text, in trial-hours, -minutes or -seconds."""
    if seconds >= 7200:
        return f"{seconds / 3600:.3g} trial-hours"
    return f"{seconds / 60:.3g} trial-minutes" if seconds >= 120 else f"{seconds:.0f} trial-seconds"


def flag_value(seconds: float) -> str:
    """A --budget value of at least `seconds`, in the largest unit that keeps it whole: 2h, 90m, 45s."""
    seconds = math.ceil(seconds)
    for unit in ("h", "m"):
        if seconds % _UNITS[unit] == 0:
            return f"{seconds // int(_UNITS[unit])}{unit}"
    return f"{seconds}s"


def continue_command(spent_s: float, budget_s: float, argv: list[str] | None = None) -> str:
    """The last line of a sweep whose budget is spent: this command with --resume and twice the budget."""
    return (f"budget spent: {hours(spent_s)} of {hours(budget_s)}; continue this sweep with: "
            f"{resume_command(without_budget(argv))} --budget {flag_value(2 * max(budget_s, spent_s))}")


def without_budget(argv: list[str] | None = None) -> list[str]:
    """The command line (this one's by default) less its --budget and value: a resume without one keeps the
    last budget given."""
    argv = list(sys.argv if argv is None else argv)
    return [a for i, a in enumerate(argv) if not a.startswith("--budget=") and a != "--budget"
            and not (i and argv[i - 1] == "--budget")]


def trial_weight(resources) -> float:
    """What one second of a trial costs: its workers, times each worker's GPUs where trials have GPUs."""
    return resources.num_workers * (resources.gpus_per_worker if resources.use_gpu else 1.0)


def budget_for(flag: str | None, run, resume: bool) -> float | None:
    """This invocation's budget in seconds: --budget, else the one the resumed sweep was given. A resume of a
    spent sweep needs a larger one; raises UserError in one line."""
    budget = parse_budget(flag) if flag is not None else (run.budget_s if resume else None)
    if resume and budget is not None and run.spent_s >= budget:
        raise UserError(f"the sweep at {run.path} has spent {hours(run.spent_s)} of its --budget of {hours(budget)}: "
                        f"continue it with a larger one, e.g. --resume --budget {flag_value(2 * run.spent_s)}")
    return budget


@dataclass
class Spend:
    """Trial-seconds spent: in all and by trial, across invocations. `running` holds each running trial's
    clock reading up to which it is charged; nothing is charged between invocations."""
    weight: float
    spent_s: float = 0.0
    by_trial: dict[str, float] = field(default_factory=dict)
    running: dict[str, float] = field(default_factory=dict)

    def charge(self, now: float) -> None:
        for trial_id, since in self.running.items():
            cost = max(0.0, now - since) * self.weight
            self.spent_s += cost
            self.by_trial[trial_id] = self.by_trial.get(trial_id, 0.0) + cost
            self.running[trial_id] = now

    def start(self, trial_id: str, now: float) -> None:
        self.charge(now)
        self.running.setdefault(trial_id, now)
        self.by_trial.setdefault(trial_id, 0.0)

    def end(self, trial_id: str, now: float) -> None:
        self.charge(now)
        self.running.pop(trial_id, None)


class BudgetKeeper(tune.Callback):
    """Counts what the trials spend, saves it (`save(spend)`) after each trial event, and once `budget_s` is
    spent stops the sweep: no trial starts, and each running trial stops at its next report. `record(trial_id,
    step, metrics)` puts a trial's own spend on its MLflow run. Without a budget it only counts."""

    def __init__(self, budget_s: float | None, spend: Spend, save: Callable[[Spend], None],
                 record: Callable[[str, int, dict], None] = lambda *a: None, say: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, stop: Callable[[], bool] = signals.stop_fit):
        # Tune pickles its callbacks with the experiment's state: no reference to `print` itself is kept, which
        # another library may have replaced by then (pickling it fails: "not the same object as builtins.print").
        self.budget_s, self.spend, self.save, self.record, self._say_to = budget_s, spend, save, record, say
        self.clock, self.stop_fit = clock, stop
        self.waiting: set[str] | None = None  # once spent: the running trials yet to finish their epoch
        self._saved_at, self._quiet_until = -math.inf, 0.0
        self.trials: dict = {}  # trial id -> the Tune trial, for its last result
        self.stopped = False

    def say(self, line: str) -> None:
        (self._say_to or print)(line)

    @property
    def spent(self) -> bool:
        return self.waiting is not None

    def on_trial_start(self, iteration, trials, trial, **info):
        if self.stopped:
            return
        self.trials[trial.trial_id] = trial
        self.spend.start(trial.trial_id, self.clock())
        if self.spent:  # its workers were already being placed when the budget ran out
            self._stop()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if self.stopped:
            return
        self.spend.charge(self.clock())
        self._check()
        if self.spent:
            self.waiting.discard(trial.trial_id)
            if not self.waiting:
                self._stop()
        self._save(every_s=SAVE_EVERY_S)

    def on_trial_recover(self, iteration, trials, trial, **info):
        if not self.stopped:
            self.spend.end(trial.trial_id, self.clock())  # until it starts again, it holds nothing
            self._save()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._ended(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._ended(trial)

    def on_step_end(self, iteration, trials, **info):
        if not self.stopped:
            self.spend.charge(self.clock())
            self._check()

    def _ended(self, trial) -> None:
        if self.stopped:
            return
        self.spend.end(trial.trial_id, self.clock())
        self._record(trial)
        self._check()
        if self.spent:  # its resources would start another trial in Tune's next step
            self._stop()
        self._save()

    def _check(self) -> None:
        if self.budget_s is None or self.spent or self.spend.spent_s < self.budget_s:
            return
        self.waiting = set(self.spend.running)
        self.say(f"[{time.strftime('%H:%M:%S')}] budget spent: {hours(self.spend.spent_s)} of {hours(self.budget_s)}; "
                 f"no new trial starts; running trials ({len(self.waiting)}) stop after their current epoch")
        if not self.waiting:
            self._stop()

    def _stop(self) -> None:
        """The last charge of this invocation: from here on Tune stops the trials, and nothing is counted."""
        if self.stopped:
            return
        self.spend.charge(self.clock())
        self.stopped = True
        for trial_id in self.spend.running:
            self._record(self.trials[trial_id])
        self._save(always=True)
        if not self.stop_fit():  # Tune's SIGINT handler is not installed (off the main thread, or disabled)
            self.say(f"[{time.strftime('%H:%M:%S')}] note   the budget is spent but Tune cannot be asked to stop "
                     "here (TUNE_DISABLE_SIGINT_HANDLER, or not on the main thread): stop it with Ctrl-C")

    def _record(self, trial) -> None:
        hours_spent = self.spend.by_trial.get(trial.trial_id, 0.0) / 3600
        self.record(trial.trial_id, result_step(trial.last_result or {}), {"budget/trial_hours": hours_spent})

    def _save(self, every_s: float = 0.0, always: bool = False) -> None:
        """Save the spend: at most every `every_s`, and after a failed save not again for QUIET_S (each try
        waits for the store's bounded retries, on Tune's own loop) unless `always` (the stop)."""
        now = self.clock()
        if not always and (now < self._quiet_until or now - self._saved_at < every_s):
            return
        try:
            self.save(self.spend)
            self._saved_at, self._quiet_until = now, 0.0
        except Exception as err:  # noqa: BLE001  a store that does not answer must not stop a trial
            if not self._quiet_until:
                self.say(f"[{time.strftime('%H:%M:%S')}] note   the budget's spend could not be saved "
                         f"({one_line(err)}); it is saved again at the sweep's end")
            self._quiet_until = now + QUIET_S


def keeper_for(run, budget_s: float | None, resources, submit: Callable[[dict], None]) -> BudgetKeeper:
    """The budget callback of sweep run `run` (state.SweepRun), going on from what it spent before; `submit` is
    the MLflow outbox's (outbox.py), so a trial's spend reaches its run like its epochs do."""
    run.budget_s = budget_s
    spend = Spend(trial_weight(resources), run.spent_s, dict(run.spent_by_trial))

    def save(spend: Spend) -> None:
        run.save(spent_s=spend.spent_s, spent_by_trial=dict(spend.by_trial))

    def record(trial_id: str, step: int, metrics: dict) -> None:
        submit({"op": "log", "trial": trial_id, "step": step, "metrics": metrics})

    return BudgetKeeper(budget_s, spend, save, record)


def parent_records(keeper: BudgetKeeper) -> dict:
    """The parent run's metrics: the budget (when there is one) and what was used, in trial-hours."""
    used = {"budget/used_hours": keeper.spend.spent_s / 3600}
    return used if keeper.budget_s is None else {"budget/hours": keeper.budget_s / 3600, **used}
