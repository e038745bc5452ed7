"""Every MLflow write of a sweep goes through one door, the Outbox: written now when the server answers,
else kept in the sweep's spool (spool.py) and replayed into MLflow, in order, when it answers again.

On a cluster the tracking server is another machine, and it restarts. When a write fails after the
MLflow client's own retries (refused connections, 5xx, timeouts), the write becomes a line of the
spool. Training never waits on the server again once it is known down: later writes go straight to the
spool, and a fail-fast probe (after `ORCHESTRATOR_MLFLOW_PROBE_S` seconds, default 15, then twice as
long after each failed probe, up to 8 times that) tells when the server is back. Then the spool is
replayed in order, before anything new, on a later callback event of the same sweep, on `--resume`, or
by `python -m orchestrator sync`.

Replay is idempotent, because a write that timed out may have reached the server: a trial's epoch
already in its metric history is skipped (as the callback skips a repeated step), a batch of other
metrics is skipped when its step and timestamp are already there, params are logged once
(`Tracking.log`), and runs are found again by their identity tags. A write the server answers but
refuses (a bad value, a missing checkpoint) is not an outage: it is said in one line and dropped, so it
never blocks the records behind it.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from orchestrator.spool import Spool

PROBE_EVERY_S = float(os.environ.get("ORCHESTRATOR_MLFLOW_PROBE_S", "15"))
PROBE_TIMEOUT_S = 20
RUN_OF_TRIAL = "run-of-trial:"  # a run id not known yet (its creation is kept): resolved when written


def first_line(err: BaseException) -> str:
    """Why a write failed, short: MLflow's own text quotes the whole URL and urllib3's retry chain."""
    from orchestrator.tracking import redact

    text = str(err).strip()
    for pattern, reason in ((r"Connection refused", "connection refused"), (r"(?i)timed? ?out", "timed out"),
                            (r"too many (\d{3}) error responses", r"HTTP \1 after the client's retries"),
                            (r"Name or service not known|nodename nor servname", "host not found"),
                            (r"Max retries exceeded", "no answer after the client's retries")):
        found = re.search(pattern, text)
        if found:
            return found.expand(reason)
    return redact(text.splitlines()[0][:200] if text else type(err).__name__)


def keep_records(tracking, folder: str | None, experiment_id: str, sweep_path: str, on_files=None) -> "Outbox":
    """From now on, what MLflow cannot take (it is down) is kept in `folder` (the sweep's storage) and written
    when it is back: every write of `tracking` goes through the Outbox this returns. Records kept by an earlier
    run are written now."""
    tracking.outbox = Outbox(tracking, Spool(folder), experiment_id, sweep_path, on_files=on_files)
    if tracking.outbox.pending:
        tracking.outbox.flush()
    return tracking.outbox


class Outbox:
    """Every MLflow write of a sweep, through one door: written now when the server answers, else kept in
    the spool and written, in order, when it answers again. `submit` never raises: a Tune callback that
    raises crashes Tune's controller, and a trial must keep training whatever the server does."""

    def __init__(self, tracking, spool: Spool, experiment_id: str, sweep_path: str,
                 on_files: Callable[[str, dict, str | None], None] | None = None,
                 say: Callable[[str], None] | None = None):
        self.tracking, self.spool, self.experiment_id, self.sweep_path = tracking, spool, experiment_id, sweep_path
        self.on_files, self.say = on_files, say
        self.run_ids: dict[str, str] = {}     # trial id -> MLflow run id, once known
        self.steps: dict[str, int] = {}       # trial id -> the last epoch written or kept
        self.applying = False                 # inside a write: nested Tracking writes go straight to MLflow
        self.down = False
        self._probed, self._wait = 0.0, PROBE_EVERY_S  # the last probe's end; the wait before the next one
        self.pending = self._count_kept()

    def __getstate__(self):  # Tune pickles callbacks; a restored copy reads its spool again
        return {**self.__dict__, "say": None, "applying": False, "down": False, "_probed": 0.0}

    def _say(self, text: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {text}"
        (self.say or (lambda t: print(t, flush=True)))(line)

    def _count_kept(self) -> int:
        ops = self.spool.ops()
        for op in ops:
            if op.get("trial") and op.get("step") is not None and "epoch" in (op.get("metrics") or {}):
                self.steps[op["trial"]] = max(self.steps.get(op["trial"], 0), int(op["step"]))
        return len(ops)

    @property
    def where(self) -> str:
        from orchestrator.tracking import redact

        return redact(self.spool.path) if self.spool.path else "the driver's memory (this sweep has no storage)"

    # -- the one door ----------------------------------------------------------------------------------

    def submit(self, op: dict) -> bool:
        """Write `op` now, or keep it. True when it reached MLflow."""
        op = {**op, "time": op.get("time") or int(time.time() * 1000)}
        try:
            if (self.down or self.pending) and not self._catch_up():
                self._keep(op)
                return False
            try:
                self._apply(op)
                return True
            except Exception as err:  # noqa: BLE001  an outage, or a write the server refuses
                return self._after_failure(op, err)
        except Exception as err:  # noqa: BLE001  the spool itself failed (the storage is down too)
            self._say(f"warning: an MLflow record was lost ({first_line(err)}): neither MLflow nor the storage "
                      f"{self.where} took it")
            return False

    def keep_if_down(self, op: dict, err: BaseException) -> bool:
        """After a write outside the door failed with `err`: keep `op` when the server is down (True)."""
        if self.answering():
            return False
        self._went_down(err)
        self._keep({**op, "time": int(time.time() * 1000)})
        return True

    def _after_failure(self, op: dict, err: BaseException) -> bool:
        if self.answering():  # the server is up: try once more, then it is the write itself that fails
            try:
                self._apply(op)
                return True
            except Exception as again:  # noqa: BLE001
                self._say(f"warning: a record could not be written to MLflow, which answers ({op['op']} of "
                          f"{op.get('trial') or op.get('run')}: {first_line(again)}); it is skipped")
                return False
        self._went_down(err)
        self._keep(op)
        return False

    def _went_down(self, err: BaseException) -> None:
        from orchestrator.tracking import redact

        self._probed = time.monotonic()
        if not self.down:
            self.down, self._wait = True, PROBE_EVERY_S
            self._say(f"MLflow at {redact(self.tracking.uri)} is not answering ({first_line(err)}): training "
                      f"continues, and what it cannot record is kept in {self.where} until it is back")

    def _keep(self, op: dict) -> None:
        if "folder" in op:  # a temporary folder: its files go into the storage with the record
            stashed = self.spool.stash(op["folder"], op["names"])
            op = {**{k: v for k, v in op.items() if k != "folder"}, "stash": stashed}
        self.spool.append(op)
        self.pending += 1

    def answering(self) -> bool:
        """A fail-fast probe: does the server answer now (no client retries, a short timeout)?"""
        from orchestrator.tracking import _fail_fast

        try:  # no retries; but a server just restarted, on a busy machine, may take seconds to answer its first query
            with _fail_fast(timeout=PROBE_TIMEOUT_S):
                self.tracking.client.search_experiments(max_results=1)
            return True
        except Exception:  # noqa: BLE001  any failure to answer
            return False
        finally:
            self._probed = time.monotonic()

    def _catch_up(self) -> bool:
        """Write what is kept, if the server is back (probed at most every PROBE_EVERY_S while down)."""
        if self.down and time.monotonic() - self._probed < self._wait:
            return False
        if self.down and not self.answering():
            self._wait = min(2 * self._wait, 8 * PROBE_EVERY_S)  # a long outage (or a probe that times out) costs less
            return False
        return self.flush()

    def flush(self) -> bool:
        """Replay the spool in order; True when nothing is left. Stops at the first outage."""
        ops = self.spool.ops()
        written = 0
        for index, op in enumerate(ops):
            try:
                self._apply(op, replay=True)
                written += 1
            except Exception as err:  # noqa: BLE001
                if not self.answering():
                    self.spool.rewrite(ops[index:])
                    self.pending = len(ops) - index
                    self._went_down(err)
                    return False
                self._say(f"warning: a kept record could not be written to MLflow, which answers ({op['op']} of "
                          f"{op.get('trial') or op.get('run')}: {first_line(err)}); it is skipped")
            if index % 20 == 19:  # a crash mid-replay replays less next time (it is idempotent anyway)
                self.spool.rewrite(ops[index + 1:])
        self.spool.rewrite([])
        self.pending = 0
        if self.down or ops:
            from orchestrator.tracking import redact

            self._say(f"MLflow at {redact(self.tracking.uri)} answers again: {written} kept record(s) written")
        self.down = False
        return True

    # -- what each operation does ----------------------------------------------------------------------

    def run_of(self, op: dict) -> str:
        if op.get("run"):
            return self.resolve(op["run"])
        return self.resolve(RUN_OF_TRIAL + op["trial"])

    def resolve(self, value: Any) -> Any:
        """A run id, from a `run-of-trial:ID` reference made while that trial's run was not known."""
        if not (isinstance(value, str) and value.startswith(RUN_OF_TRIAL)):
            return value
        trial = value[len(RUN_OF_TRIAL):]
        if trial not in self.run_ids:
            from orchestrator.tracking import SWEEP_KEY, TRIAL_KEY

            found = self.tracking.find_run(self.experiment_id, {SWEEP_KEY: self.sweep_path, TRIAL_KEY: trial})
            if not found:
                raise LookupError(f"no MLflow run of trial {trial} in the sweep {self.sweep_path}")
            self.run_ids[trial] = found
        return self.run_ids[trial]

    def run_ref(self, trial_id: str) -> str | None:
        """The run id of a trial, or a reference resolved when written if the server is down."""
        if trial_id in self.run_ids:
            return self.run_ids[trial_id]
        if not (self.down or self.pending):
            try:
                return self.resolve(RUN_OF_TRIAL + trial_id)
            except LookupError:
                return None
            except Exception:  # noqa: BLE001  the server went away: the reference will do
                pass
        return RUN_OF_TRIAL + trial_id

    def _apply(self, op: dict, replay: bool = False) -> None:
        self.applying = True
        try:
            getattr(self, f"_op_{op['op']}")(op, replay)
        finally:
            self.applying = False

    def _op_open(self, op: dict, replay: bool) -> None:
        from orchestrator.tracking import SWEEP_KEY, TRIAL_KEY, DatasetRecord

        identity = {SWEEP_KEY: self.sweep_path, TRIAL_KEY: op["trial"]}
        run_id, created = self.tracking.find_or_create_run(self.experiment_id, identity, op["name"], op["tags"])
        self.run_ids[op["trial"]] = run_id
        if created or replay:
            self.tracking.log(run_id, params=op["params"])  # params-once: a replay adds only what is missing
        if op.get("dataset") and (created or not self.tracking.client.get_run(run_id).inputs.dataset_inputs):
            self.tracking.log_dataset(run_id, DatasetRecord(**op["dataset"]))
        if not replay:
            self.steps[op["trial"]] = 0 if created else self.tracking.last_step(run_id)

    def _op_log(self, op: dict, replay: bool) -> None:
        run_id = self.run_of(op)
        metrics, step = op.get("metrics") or {}, int(op.get("step") or 0)
        if replay and metrics and self._already_has(run_id, op, metrics, step):
            metrics = {}
        tags = {k: self.resolve(v) for k, v in (op.get("tags") or {}).items()}
        if metrics or tags or op.get("params"):
            self.tracking.log(run_id, metrics, step=step, params=op.get("params"), tags=tags, at=op["time"])

    def _already_has(self, run_id: str, op: dict, metrics: dict, step: int) -> bool:
        if op.get("trial") and "epoch" in metrics:  # an epoch is logged once, whatever its timestamp
            return self.tracking.last_step(run_id) >= step
        key = sorted(metrics)[0]  # a batch is stored whole or not at all
        return any(m.step == step and m.timestamp == op["time"]
                   for m in self.tracking.client.get_metric_history(run_id, key))

    def _op_retry(self, op: dict, replay: bool) -> None:
        from orchestrator.tracking import RETRIES_KEY

        run_id = self.run_of(op)
        retries = int(self.tracking.client.get_run(run_id).data.tags.get(RETRIES_KEY, "0")) + 1
        self.tracking.log(run_id, tags={RETRIES_KEY: retries, "last_error": op["error"]})

    def _op_trial_files(self, op: dict, replay: bool) -> None:
        if self.on_files is not None:
            self.on_files(self.run_of(op), {}, op.get("checkpoint"))

    def _op_files(self, op: dict, replay: bool) -> None:
        run_id = self.run_of(op)
        if op.get("folder"):
            self.tracking.log_files(run_id, Path(op["folder"]), op["names"])
            return
        if not op.get("stash"):
            return
        with tempfile.TemporaryDirectory() as tmp:
            Spool.unstash(op["stash"], tmp)
            self.tracking.log_files(run_id, Path(tmp), op["names"])

    def _op_terminate(self, op: dict, replay: bool) -> None:
        self.tracking.client.set_terminated(self.run_of(op), status=op["status"])

    def _op_best_model(self, op: dict, replay: bool) -> None:
        from orchestrator import logged_model
        from orchestrator.export import log_model_files

        chosen = log_model_files(self.tracking, self.run_of(op), self.resolve(op["best_run"]), op["metric"], op["mode"],
                                 logged_model.from_record(op))
        lines, error = chosen["published"]
        for line in [*lines, *([f"error: {error}"] if error else [])]:
            self._say(line)

    # -- the end of a sweep ----------------------------------------------------------------------------

    def finish(self, command: str) -> str | None:
        """At the end of a sweep: one last try; the line to print when records are still kept."""
        if not (self.down or self.pending):
            return None
        try:
            if self.answering() and self.flush():
                return None
        except Exception as err:  # noqa: BLE001  the storage failing too: the line below still says what to do
            self._say(f"warning: the kept MLflow records could not be read back ({first_line(err)})")
        from orchestrator.tracking import redact

        return (f"MLflow at {redact(self.tracking.uri)} is still not answering: {self.pending} record(s) of this "
                f"sweep are kept in {self.where}; when it is back, finish the recording with: {command}")


def dataset_dict(dataset) -> dict | None:
    return asdict(dataset) if dataset is not None else None
