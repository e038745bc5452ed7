"""The completeness decision (no Ray run): a sweep is finished only when our own records account for every
trial the search produces; an interrupted sweep is closed KILLED, and says so in one line when MLflow is
away; the first signal is noted even while Tune's own SIGINT handler is installed."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from types import SimpleNamespace

from orchestrator import accounting
from orchestrator.state import SweepRun


def _trial(trial_id: str):
    return SimpleNamespace(trial_id=trial_id, config={}, last_result={})


def test_only_every_trial_ended_for_good_is_a_finished_sweep():
    ledger = accounting.TrialLedger(total=3)
    one, two, three = _trial("a"), _trial("b"), _trial("c")
    for trial in (one, two):
        ledger.on_trial_start(0, [], trial)
    ledger.on_trial_complete(0, [], one)  # its last epoch, or stopped by ASHA
    assert not ledger.complete()  # two is still running: Tune's grid would call it terminated after a Ctrl-C
    ledger.on_trial_error(0, [], two)  # failed after its retries: accounted for
    assert not ledger.complete()  # three was never started (a Ctrl-C between two trials)
    assert [ledger.status(t) for t in "abc"] == ["done", "failed", "unfinished"]
    ledger.on_trial_start(0, [], three)
    ledger.on_trial_complete(0, [], three)
    assert ledger.complete()


def test_a_resumed_sweep_counts_the_trials_an_earlier_invocation_saw_end():
    first = accounting.TrialLedger(total=2)
    first.on_trial_complete(0, [], _trial("a"))
    saved = first.get_state()  # what Tune checkpoints with the trials themselves
    resumed = accounting.TrialLedger(total=2)
    resumed.set_state(saved)
    assert not resumed.complete() and resumed.status("a") == "done"
    resumed.on_trial_start(0, [], _trial("b"))
    resumed.on_trial_complete(0, [], _trial("b"))
    assert resumed.complete()
    again = accounting.TrialLedger(total=2)
    again.set_state(resumed.get_state())
    again.on_trial_start(0, [], _trial("a"))  # restarted (Tune resumes errored trials): not final until it ends
    assert not again.complete()
    again.set_state({"something": "else"})  # another callback's state is ignored
    assert again.status("b") == "done"


def test_no_trial_is_no_finished_sweep():
    assert not accounting.accounted_for({}, 0)
    assert accounting.accounted_for({"a": accounting.COMPLETE}, 1)


def test_an_interrupt_with_mlflow_away_says_so_in_one_line(tmp_path, capsys):
    def refuse(*args, **kwargs):
        raise ConnectionError("Connection refused\nmore text")

    run = SweepRun("s", str(tmp_path / "s"), parent_run_id="p1")
    run.save(status="running")
    tracking = SimpleNamespace(uri="http://alice:secret@mlflow:5000", client=SimpleNamespace(set_terminated=refuse))
    accounting.opened(tracking, run, "p1")
    accounting.abort()
    accounting.abort()  # idempotent: said once
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and "p1" in lines[0] and "--resume" in lines[0] and "RUNNING" in lines[0], lines
    assert "secret" not in lines[0]
    assert json.loads((tmp_path / "s" / "orchestrator.json").read_text())["status"] == "interrupted"


def test_an_interrupt_closes_the_parent_and_its_running_trials_killed(tmp_path):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.create_experiment("s")
    parent = client.create_run(experiment).info.run_id
    running, done = (client.create_run(experiment, tags={"mlflow.parentRunId": parent}).info.run_id for _ in "ab")
    client.set_terminated(done, status="FINISHED")
    run = SweepRun("s", str(tmp_path / "s"), parent_run_id=parent)
    tracking = SimpleNamespace(uri="sqlite:///x.db", client=client)
    accounting.opened(tracking, run, parent)
    accounting.finished()
    accounting.abort()  # a closed sweep is left as it is
    assert client.get_run(parent).info.status == "RUNNING"
    accounting.opened(tracking, run, parent)
    accounting.abort()
    status = {run_id: client.get_run(run_id).info.status for run_id in (parent, running, done)}
    assert status == {parent: "KILLED", running: "KILLED", done: "FINISHED"}


def test_the_resume_command_is_this_command_with_resume_and_no_secret():
    command = accounting.resume_command(["/x/orchestrator/__main__.py", "sweep", "celeba_backbones", "--smoke",
                                         "--tracking-uri", "http://u:pw@host:5000"])
    assert command == "python -m orchestrator sweep celeba_backbones --smoke --tracking-uri http://host:5000 --resume"


def test_the_sync_command_names_the_storage_the_run_only_when_renamed_and_no_secret():
    tracking = SimpleNamespace(uri="http://ann:hunter2@mlflow.lab:5000")
    opts = SimpleNamespace(name="celeba_backbones")
    plain = accounting.sync_command(opts, SimpleNamespace(path="s3://lab/runs/celeba_backbones", name="celeba_backbones"),
                                    tracking)
    assert plain.startswith("python -m orchestrator sync celeba_backbones --storage s3://lab/runs --tracking-uri ")
    assert "hunter2" not in plain and "--name" not in plain
    renamed = accounting.sync_command(opts, SimpleNamespace(path="/data/runs/second try", name="second try"), tracking)
    assert "--storage /data/runs --name 'second try'" in renamed


def test_the_first_signal_is_noted_under_tunes_handler_and_a_second_stops_at_once():
    """As in `fit()`: Tune installs its handler (which restores the one it found on the first SIGINT),
    our callback's setup wraps it. The first signal decides the status, whichever comes second: SIGTERM
    first means 143 though Tune saw a SIGINT, SIGINT first (seen by Tune's handler only) 130."""
    script = ("import os, signal, sys\n"
              "from orchestrator import signals\n"
              "signals.install()\n"
              "found = signal.getsignal(signal.SIGINT)\n"
              "stopped = []\n"
              "def tune_handler(signum, frame):\n"
              "    stopped.append(signum)\n"
              "    signal.signal(signal.SIGINT, found)\n"
              "signal.signal(signal.SIGINT, tune_handler)\n"
              "signals.watch_tune_stop()\n"
              "os.kill(os.getpid(), signal.SIG{name})\n"
              "assert stopped == [signal.SIGINT], stopped\n"
              "try:\n"
              "    os.kill(os.getpid(), signal.SIG{second})\n"
              "    signal.pause()\n"
              "except KeyboardInterrupt:\n"
              "    sys.exit(signals.exit_status())\n"
              "sys.exit(1)\n")
    for name, second, status in (("TERM", "INT", 143), ("INT", "TERM", 130)):
        result = subprocess.run([sys.executable, "-c", script.format(name=name, second=second)], timeout=60,
                                capture_output=True, text=True)
        assert result.returncode == status, (name, result.stderr[-2000:])


def test_signals_keep_no_handler_of_tunes_after_fit():
    from orchestrator import signals

    before = signal.getsignal(signal.SIGINT)
    try:
        signal.signal(signal.SIGINT, lambda s, f: None)  # what Tune leaves when no signal came
        signals.take_back()
        assert signal.getsignal(signal.SIGINT) is signals._on_sigint
    finally:
        signal.signal(signal.SIGINT, before)
