"""What an option given on --resume does: it applies (--max-failures, --max-concurrent), or it is refused
in one line when it would split the sweep (another MLflow store). And SIGTERM exits 143, like Ctrl-C 130."""

from __future__ import annotations

import pickle
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from orchestrator.state import SweepRun, locate
from orchestrator.sweep import MaxFailures
from orchestrator.tracking import Tracking
from trainables.errors import UserError


def test_another_tracking_uri_on_resume_is_refused(tmp_path):
    run = SweepRun("s", str(tmp_path / "s"))
    run.check_tracking("sqlite:///first.db", "sqlite:///first.db")
    run.save(status="interrupted")
    again = SweepRun("s", run.path, tracking=run.tracking)
    again.check_tracking("sqlite:///first.db", "sqlite:///first.db")  # the same store: fine
    with pytest.raises(UserError, match="another MLflow store than sqlite:///second.db"):
        again.check_tracking("sqlite:///second.db", "sqlite:///second.db")


def test_the_state_records_no_secret(tmp_path):
    run = SweepRun("s", str(tmp_path / "s"))
    run.check_tracking("https://user:SECRET@mlflow:5000", "https://mlflow:5000")
    run.save(status="running")
    assert "SECRET" not in (tmp_path / "s" / "orchestrator.json").read_text()
    tracking = Tracking.__new__(Tracking)  # as Tune pickles it into tuner.pkl
    tracking.uri = "https://user:SECRET@mlflow:5000"
    assert b"SECRET" not in pickle.dumps(tracking.__getstate__())


def test_a_resumed_sweep_counts_the_minutes_of_its_earlier_invocations(tmp_path):
    """The parent's sweep/minutes and the closing line count from run.clock(): before, a resumed sweep's were
    its last invocation's alone (0.1 min for one that only wrote its report)."""
    first = SweepRun("s", str(tmp_path / "s"), began=time.time() - 120)  # ran 2 minutes, then was interrupted
    first.save(status="interrupted")
    (tmp_path / "s" / "tuner.pkl").write_bytes(b"")  # what Tune looks for before it restores a sweep
    second = locate(str(tmp_path), "s", None, resume=True)
    assert second.minutes == pytest.approx(2, abs=0.01)
    second.began = time.time() - 60  # one more minute
    assert (time.time() - second.clock()) / 60 == pytest.approx(3, abs=0.01)
    second.save(status="finished")
    assert locate(str(tmp_path), "s", None, resume=True).minutes == pytest.approx(3, abs=0.01)


def test_max_failures_of_this_invocation_apply_to_restored_trials():
    trial = SimpleNamespace(max_failures=1)  # as the first run created it
    MaxFailures(3).on_trial_start(0, [trial], trial)
    assert trial.max_failures == 3


def test_a_failed_start_can_be_run_again_but_not_resumed(tmp_path):
    run = SweepRun("s", str(tmp_path / "s"))
    run.save(status="failed-start")
    assert locate(str(tmp_path), "s", None, resume=False).path == run.path  # the same folder, fresh
    with pytest.raises(UserError, match="nothing to resume"):
        locate(str(tmp_path), "s", None, resume=True)


def test_sigterm_exits_143_and_sigint_130():
    script = ("import os, signal, sys\n"
              "from orchestrator import signals\n"
              "signals.install()\n"
              "try:\n"
              "    os.kill(os.getpid(), signal.SIG{name})\n"
              "    signal.pause()\n"
              "except KeyboardInterrupt:\n"
              "    sys.exit(signals.exit_status())\n")
    for name, status in (("TERM", 143), ("INT", 130)):
        result = subprocess.run([sys.executable, "-c", script.format(name=name)], timeout=60)
        assert result.returncode == status, name
