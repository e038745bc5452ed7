"""A Tune trial as MLflow records it: the callback that keeps one child run per trial (params at its start,
metrics per epoch, files and status at its end), which of a result's keys are metrics and at which step, and
the one line that says why a trial attempt failed.

Split from tracking.py, which holds the MLflow client's side (stores, experiments, runs found by tags) and
imports no Ray: commands that only read MLflow (export, serve, sync) do not need Tune.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from typing import Any, Callable

from ray import tune

from orchestrator.tracking import KIND_KEY, DatasetRecord, Tracking, redact
from trainables.artifacts import TAG
from trainables.errors import UserError


def result_step(result: dict) -> int:
    """The MLflow step of a trial's result: its optimizer step when it evaluates every N steps
    (eval.every_steps), else its epoch."""
    return int(result.get("step", result.get("epoch", result.get("training_iteration", 0))) or 0)


def is_metric(key: str, value: Any) -> bool:
    """Our reported numbers are namespaced (`val/...`, `train/...`); Tune's bookkeeping is not."""
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    return numeric and ("/" in key or key == "epoch") and not key.endswith("_unix")


def _never_raises(event):
    """A Tune callback that raises crashes Tune's controller: whatever fails here is one line instead."""
    @functools.wraps(event)
    def guarded(self, *args, **kwargs):
        try:
            return event(self, *args, **kwargs)
        except Exception as err:  # noqa: BLE001  the trial keeps training; the line says what was not recorded
            text = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
            print(f"warning: MLflow record of {event.__name__} failed ({redact(text)}); the sweep continues",
                  flush=True)
    return guarded


class MlflowTrialCallback(tune.Callback):
    """One MLflow child run per Tune trial: params at start, metrics per epoch, files at the end. Every write
    goes through the tracking's outbox (orchestrator/outbox.py), so a server that is down costs no epoch and
    never stops a trial: what it cannot take is kept and written when it is back."""

    def __init__(self, tracking: Tracking, experiment_id: str, parent_run_id: str, sweep_path: str,
                 describe: Callable[[dict], str], params_of: Callable[[dict], dict],
                 on_finish: Callable[[str, dict, str | None], None], dataset: DatasetRecord | None = None):
        from orchestrator.outbox import Outbox
        from orchestrator.spool import Spool

        self.tracking, self.experiment_id, self.parent_run_id = tracking, experiment_id, parent_run_id
        self.dataset = dataset
        self.sweep_path, self.describe, self.params_of, self.on_finish = sweep_path, describe, params_of, on_finish
        self.outbox = tracking.outbox or Outbox(tracking, Spool(None), experiment_id, sweep_path)
        self.outbox.on_files = on_finish
        self.run_ids: dict[str, str] = {}  # every trial seen: its run id, or a reference while the server is down
        self._steps: dict[str, int] = {}
        self._started: dict[str, float] = {}

    def run_id(self, trial) -> str:
        """The trial's run id (its run is created, or found again, on first sight); a `run-of-trial:` reference
        while its creation is kept for a server that is down."""
        from orchestrator.outbox import RUN_OF_TRIAL, dataset_dict

        trial_id = trial.trial_id
        if trial_id not in self.run_ids:
            self.run_ids[trial_id] = RUN_OF_TRIAL + trial_id
            tags = {"mlflow.parentRunId": self.parent_run_id, KIND_KEY: "trial"}
            self.outbox.submit({"op": "open", "trial": trial_id, "name": f"{trial_id} {self.describe(trial.config)}",
                                "tags": {k: redact(v) for k, v in tags.items()},
                                "params": {k: redact(v)[:6000] for k, v in self.params_of(trial.config).items()},
                                "dataset": dataset_dict(self.dataset)})
            self._steps[trial_id] = self.outbox.steps.get(trial_id, 0)
        if trial_id in self.outbox.run_ids:
            self.run_ids[trial_id] = self.outbox.run_ids[trial_id]
        return self.run_ids[trial_id]

    def child_run(self, trial_id: str) -> str | None:
        """A trial's run id for the sweep's report, even for a trial this process never saw (a resume)."""
        return self.outbox.run_ref(trial_id)

    @_never_raises
    def on_trial_start(self, iteration, trials, trial, **info):
        self._started[trial.trial_id] = time.time()
        self.run_id(trial)

    @_never_raises
    def on_trial_result(self, iteration, trials, trial, result, **info):
        step = result_step(result)
        run_id = self.run_id(trial)
        # Tags say what is true now (where the workers of this attempt run), so they are kept even when
        # the epoch is not: a restart from scratch reports epochs again that are already logged.
        tags = {k[len(TAG):]: v for k, v in result.items() if k.startswith(TAG) and isinstance(v, str)}
        if step <= self._steps[trial.trial_id]:
            if tags:
                self.tracking.log(run_id, tags=tags)
            return  # already logged before a restart: metric history must not repeat steps
        self._steps[trial.trial_id] = step
        metrics = {k: v for k, v in result.items() if is_metric(k, v)}
        first_step = result.get("timing/first_step_unix")
        if first_step and trial.trial_id in self._started:
            metrics["timing/first_step_s"] = first_step - self._started[trial.trial_id]
        self.outbox.submit({"op": "log", "trial": trial.trial_id, "step": step,
                            "metrics": {k: float(v) for k, v in metrics.items()},
                            "tags": {k: redact(v) for k, v in tags.items()}})

    @_never_raises
    def on_trial_recover(self, iteration, trials, trial, **info):
        """A failed trial that Tune retries from its last checkpoint: count it on the run."""
        self.run_id(trial)
        self.outbox.submit({"op": "retry", "trial": trial.trial_id, "error": redact(error_line(trial))})

    @_never_raises
    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finish(trial, "FINISHED")

    @_never_raises
    def on_trial_error(self, iteration, trials, trial, **info):
        self.run_id(trial)
        self.outbox.submit({"op": "log", "trial": trial.trial_id, "tags": {"error": redact(error_line(trial))}})
        self._finish(trial, "FAILED")

    def _finish(self, trial, status: str) -> None:
        self.run_id(trial)
        result = trial.last_result or {}
        if result.get("checkpoint_path"):
            self.outbox.submit({"op": "trial_files", "trial": trial.trial_id, "checkpoint": result["checkpoint_path"]})
        self.outbox.submit({"op": "terminate", "trial": trial.trial_id, "status": status})


def error_line(trial) -> str:
    """The exception message that ended a trial attempt, on one line."""
    error = getattr(trial, "error_file", None) or ""
    try:
        with open(error) as handle:
            lines = [line.strip() for line in handle if line.strip()]
    except OSError:
        return "unknown error (see the trial's error file in the storage folder)"
    messages = [line for line in lines if re.match(r"^[\w.]+(Error|Exception|Failed\w*): ", line)]
    line = messages[-1] if messages else lines[-1] if lines else "unknown error"
    return line.removeprefix(USER_ERROR_PREFIX)[:500]  # a user's mistake reads as its message alone


USER_ERROR_PREFIX = f"{UserError.__module__}.{UserError.__name__}: "


class OneLineUserErrors(logging.Filter):
    """Drops Tune's traceback of a trial that failed on a user's mistake (a UserError): the progress
    line and the child run's `error` tag already say it in one line. Other failures keep theirs."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, UserError)
