"""Whether a sweep is finished: every trial the search produces accounted for, from our own records.

A trial is accounted for once our callback saw it end for good: it reached its last epoch or was
stopped by the scheduler (`on_trial_complete`), or it failed after its retries (`on_trial_error`).
When Tune stops trials on a Ctrl-C it calls neither (it only marks them terminated), and a trial
that never started is not seen at all: so anything short of `total` accounted-for trials is an
interrupted sweep, whatever Tune's result grid says.

The ledger is a Tune callback whose state Tune saves in the same experiment checkpoint as the trials
themselves (`get_state`/`set_state`), so a resumed sweep counts the trials an earlier invocation saw
end, consistently with what Tune restores (and a trial that starts again is no longer counted until
it ends again).

This module also closes an interrupted sweep (`abort`): parent run and running trials KILLED, state `interrupted`, and
the last line the `--resume` command; it says so in one line when MLflow cannot be reached then. It writes the
command lines a sweep's last line may name: `--resume`, and `sync` when its records wait for a server.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass

from ray import tune

from orchestrator import signals
from orchestrator.tracking import redact

COMPLETE, FAILED = "complete", "failed"
_STATE_KEY = "orchestrator.accounted"


def accounted_for(outcomes: dict[str, str], total: int) -> bool:
    """The completeness decision: every one of the `total` trials of the search has a final outcome."""
    return total > 0 and len(outcomes) >= total


class TrialLedger(tune.Callback):
    """The trials seen to end for good in this sweep (across its invocations): id -> complete | failed."""

    def __init__(self, total: int):
        self.total = total
        self.outcomes: dict[str, str] = {}

    def setup(self, **info):
        signals.watch_tune_stop()  # Tune's own SIGINT handler is installed by now: note the first signal too

    def on_trial_start(self, iteration, trials, trial, **info):
        self.outcomes.pop(trial.trial_id, None)  # running again (a resumed errored trial): not final until it ends

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.outcomes[trial.trial_id] = COMPLETE

    def on_trial_error(self, iteration, trials, trial, **info):
        self.outcomes[trial.trial_id] = FAILED

    def get_state(self) -> dict:
        return {_STATE_KEY: dict(self.outcomes)}

    def set_state(self, state: dict) -> None:
        if isinstance(state, dict) and isinstance(state.get(_STATE_KEY), dict):
            self.outcomes = {**state[_STATE_KEY], **self.outcomes}

    def complete(self) -> bool:
        return accounted_for(self.outcomes, self.total)

    def status(self, trial_id: str) -> str:
        """How the final table shows a trial: done, failed, or unfinished (never seen to end)."""
        return {COMPLETE: "done", FAILED: "failed"}.get(self.outcomes.get(trial_id, ""), "unfinished")


def resume_command(argv: list[str] | None = None) -> str:
    """This invocation's command line with --resume added, credentials redacted."""
    argv = list(sys.argv if argv is None else argv)
    program = "python -m orchestrator" if argv and argv[0].endswith("__main__.py") else "orchestrator"
    args = [redact(a) for a in argv[1:]]
    if "--resume" not in args:
        args.append("--resume")
    return f"{program} {shlex.join(args)}"


def sync_command(opts, run, tracking) -> str:
    """The exact `sync` command line that finishes the record of sweep run `run` (its server was down at
    the end)."""
    words = ["python", "-m", "orchestrator", "sync", opts.name, "--storage", run.path.rsplit("/", 1)[0]]
    if run.name != _sweep_name(opts.name):
        words += ["--name", run.name]
    words += ["--tracking-uri", redact(tracking.uri)]
    return " ".join(shlex.quote(word) for word in words)


def _sweep_name(name: str) -> str:
    import search_spaces

    return search_spaces.get(name)(real_data=False, smoke=False).name


@dataclass
class OpenSweep:
    """The sweep this process is running, as far as it got: what an interrupt must close."""
    tracking: object = None
    run: object = None          # state.SweepRun
    parent_id: str | None = None
    closed: bool = False


_open = OpenSweep()


def opened(tracking, run, parent_id: str) -> None:
    """Called once the parent run exists and the state says `running`."""
    global _open
    _open = OpenSweep(tracking, run, parent_id)


def finished() -> None:
    """Called once the sweep is closed (finished, or interrupted and recorded as such)."""
    _open.closed = True


def abort() -> None:
    """Record an interrupted sweep, whenever the interrupt came: the parent and its running trials
    KILLED and the state `interrupted`. Idempotent; it never raises. When MLflow or the storage cannot be reached it says
    so in one line (a `--resume` fixes the record); the exit status stays the signal's."""
    sweep = _open
    if sweep.closed or sweep.run is None:
        return
    sweep.closed = True
    try:
        sweep.run.save(status="interrupted")
    except Exception as err:  # noqa: BLE001  stopping must not fail on the storage
        print(f"warning: the sweep's state at {redact(sweep.run.path)} could not be marked interrupted "
              f"({_first_line(err)}); `--resume` fixes the record", flush=True)
    if sweep.tracking is None or not sweep.parent_id:
        return
    try:
        client = sweep.tracking.client
        for child in _running_children(client, sweep.parent_id):  # a trial stopped mid-way by a second Ctrl-C
            client.set_terminated(child, status="KILLED")
        client.set_terminated(sweep.parent_id, status="KILLED")
    except Exception as err:  # noqa: BLE001  stopping at once must not wait on, or fail with, the store
        print(f"warning: MLflow at {redact(sweep.tracking.uri)} could not be reached to mark parent run "
              f"{sweep.parent_id} and its running trials KILLED ({_first_line(err)}); they show RUNNING until "
              "`--resume` fixes the record", flush=True)


def _running_children(client, parent_id: str) -> list[str]:
    """The run ids of the parent's trials still RUNNING in MLflow."""
    experiment = client.get_run(parent_id).info.experiment_id
    found = client.search_runs([experiment], filter_string=f"tags.mlflow.parentRunId = '{parent_id}' "
                                                           "and attributes.status = 'RUNNING'")
    return [run.info.run_id for run in found]


def last_line() -> str:
    """What to do next, for the last line an interrupted sweep prints: resume it, or (when no trial
    state was saved yet, before the first trial) run it again."""
    path = getattr(_open.run, "path", None)
    resumable = False
    if path:
        try:
            resumable = tune.Tuner.can_restore(path)
        except Exception:  # noqa: BLE001  an unreadable storage: --resume says why itself
            resumable = True
    if not resumable and "--resume" not in sys.argv:
        return "interrupted before any trial state was saved: start it again with the same command"
    return f"interrupted: continue this sweep with: {resume_command()}"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return redact(text.splitlines()[0][:200]) if text else type(err).__name__
