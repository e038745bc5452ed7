"""MLflow: the database, one parent run per sweep, one child run per trial, and their files.

Only the driver talks to MLflow (trials never do), so the sqlite database is created once, before
any trial starts. Runs are found again by tags (the sweep's storage path and the trial id), which
is what lets a resumed sweep re-attach to the same runs instead of duplicating them.
"""

from __future__ import annotations

import os
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from ray import tune

from trainables.errors import UserError

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
SWEEP_KEY, TRIAL_KEY, KIND_KEY = "orchestrator.sweep_path", "orchestrator.trial_id", "orchestrator.kind"
RETRIES_KEY = "retries"
_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")


def redact(value: Any) -> str:
    """A param or tag value with any user:password@ of a URI removed."""
    return _CREDENTIALS.sub("", str(value))


@contextmanager
def _fail_fast():
    """MLflow retries HTTP calls for minutes by default; a preflight wants an answer in seconds."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="5")
    try:
        yield
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


class Tracking:
    """A connected, writable MLflow store."""

    def __init__(self, uri: str | None = None):
        self.uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
        self.client = MlflowClient(self.uri)
        try:
            with _fail_fast():
                self.client.search_experiments(max_results=1)  # creates the sqlite tables once, here
        except Exception as err:  # any failure here means the URI is wrong or the server is down
            first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
            raise UserError(
                f"MLflow tracking URI {redact(self.uri)} is not reachable ({first}): start the server or fix --tracking-uri"
            ) from None

    def __getstate__(self):  # Tune pickles callbacks into tuner.pkl; a client holds a DB engine
        return {"uri": self.uri}

    def __setstate__(self, state):
        self.uri = state["uri"]
        self.client = MlflowClient(self.uri)

    def experiment_id(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                self.client.restore_experiment(found.experiment_id)
            return found.experiment_id
        return self.client.create_experiment(name)

    def check_writable(self, experiment_name: str) -> None:
        """Create and delete a scratch run in the sweep's experiment: proves the store accepts writes."""
        try:
            with _fail_fast():
                run = self.client.create_run(self.experiment_id(experiment_name), tags={KIND_KEY: "preflight"})
                self.client.log_param(run.info.run_id, "preflight", "ok")
                self.client.delete_run(run.info.run_id)
        except Exception as err:  # read-only database file, permission denied, server-side error
            first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
            raise UserError(f"MLflow at {redact(self.uri)} does not accept writes ({first}): "
                            "fix its permissions or pass another --tracking-uri") from None

    def trial_run(self, run_id: str):
        """The trial run behind `run_id`; a sweep's parent run stands for its best trial."""
        try:
            run = self.client.get_run(run_id)
        except Exception:  # MLflow raises its own exception types for a missing id
            raise UserError(f"no MLflow run '{run_id}' at {redact(self.uri)}: copy a trial's run id from the MLflow UI "
                            "(or pass --tracking-uri)") from None
        if run.data.tags.get(KIND_KEY) == "sweep":
            best = run.data.tags.get("best_run_id")
            if not best:
                raise UserError(f"sweep run {run_id} has no best trial yet: pass a finished trial's run id")
            run = self.client.get_run(best)
        return run

    def find_run(self, experiment_id: str, tags: dict[str, str]) -> str | None:
        query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        runs = self.client.search_runs([experiment_id], filter_string=query, max_results=1)
        return runs[0].info.run_id if runs else None

    def find_or_create_run(self, experiment_id: str, identity: dict[str, str], run_name: str, tags: dict[str, str]) -> tuple[str, bool]:
        """(run id, created now). `identity` tags decide whether the run already exists."""
        existing = self.find_run(experiment_id, identity)
        if existing:
            self.client.update_run(existing, status="RUNNING")
            return existing, False
        all_tags = {**identity, **tags}
        run = self.client.create_run(experiment_id, run_name=run_name, tags={k: redact(v) for k, v in all_tags.items()})
        return run.info.run_id, True

    def log(self, run_id: str, metrics: dict[str, float] | None = None, step: int = 0,
            params: dict[str, Any] | None = None, tags: dict[str, Any] | None = None) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, step) for k, v in (metrics or {}).items()],
            params=[Param(k, redact(v)[:6000]) for k, v in (params or {}).items()],
            tags=[RunTag(k, redact(v)) for k, v in (tags or {}).items()],
        )

    def last_step(self, run_id: str, key: str = "epoch") -> int:
        history = self.client.get_metric_history(run_id, key)
        return max((m.step for m in history), default=0)

    def log_files(self, run_id: str, folder: Path, names: list[str]) -> None:
        for name in names:
            path = folder / name
            if path.is_dir():
                self.client.log_artifacts(run_id, str(path), artifact_path=name)
            elif path.is_file():
                parent = str(Path(name).parent)
                self.client.log_artifact(run_id, str(path), artifact_path=None if parent == "." else parent)


def is_metric(key: str, value: Any) -> bool:
    """Our reported numbers are namespaced (`val/...`, `train/...`); Tune's bookkeeping is not."""
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    return numeric and ("/" in key or key == "epoch") and not key.endswith("_unix")


class MlflowTrialCallback(tune.Callback):
    """One MLflow child run per Tune trial: params at start, metrics per epoch, files at the end."""

    def __init__(self, tracking: Tracking, experiment_id: str, parent_run_id: str, sweep_path: str,
                 describe: Callable[[dict], str], params_of: Callable[[dict], dict],
                 on_finish: Callable[[str, dict, str | None], None]):
        self.tracking, self.experiment_id, self.parent_run_id = tracking, experiment_id, parent_run_id
        self.sweep_path, self.describe, self.params_of, self.on_finish = sweep_path, describe, params_of, on_finish
        self.run_ids: dict[str, str] = {}
        self._steps: dict[str, int] = {}
        self._started: dict[str, float] = {}

    def run_id(self, trial) -> str:
        if trial.trial_id not in self.run_ids:
            identity = {SWEEP_KEY: self.sweep_path, TRIAL_KEY: trial.trial_id}
            tags = {"mlflow.parentRunId": self.parent_run_id, KIND_KEY: "trial"}
            run_id, created = self.tracking.find_or_create_run(
                self.experiment_id, identity, f"{trial.trial_id} {self.describe(trial.config)}", tags
            )
            if created:
                self.tracking.log(run_id, params=self.params_of(trial.config))
            self.run_ids[trial.trial_id] = run_id
            self._steps[trial.trial_id] = 0 if created else self.tracking.last_step(run_id)
        return self.run_ids[trial.trial_id]

    def on_trial_start(self, iteration, trials, trial, **info):
        self._started[trial.trial_id] = time.time()
        self.run_id(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        run_id = self.run_id(trial)
        if step <= self._steps[trial.trial_id]:
            return  # already logged before a restart: metric history must not repeat steps
        self._steps[trial.trial_id] = step
        metrics = {k: v for k, v in result.items() if is_metric(k, v)}
        first_step = result.get("timing/first_step_unix")
        if first_step and trial.trial_id in self._started:
            metrics["timing/first_step_s"] = first_step - self._started[trial.trial_id]
        self.tracking.log(run_id, metrics, step=step)

    def on_trial_recover(self, iteration, trials, trial, **info):
        """A failed trial that Tune retries from its last checkpoint: count it on the run."""
        run_id = self.run_id(trial)
        retries = int(self.tracking.client.get_run(run_id).data.tags.get(RETRIES_KEY, "0")) + 1
        self.tracking.log(run_id, tags={RETRIES_KEY: retries, "last_error": error_line(trial)})

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finish(trial, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.tracking.log(self.run_id(trial), tags={"error": error_line(trial)})
        self._finish(trial, "FAILED")

    def _finish(self, trial, status: str) -> None:
        run_id = self.run_id(trial)
        result = trial.last_result or {}
        self.on_finish(run_id, result, result.get("checkpoint_path"))
        self.tracking.client.set_terminated(run_id, status=status)


def error_line(trial) -> str:
    """The exception message that ended a trial attempt, on one line."""
    error = getattr(trial, "error_file", None) or ""
    try:
        with open(error) as handle:
            lines = [line.strip() for line in handle if line.strip()]
    except OSError:
        return "unknown error (see the trial's error file in the storage folder)"
    messages = [line for line in lines if re.match(r"^[\w.]+(Error|Exception|Failed\w*): ", line)]
    return (messages[-1] if messages else lines[-1] if lines else "unknown error")[:500]
