"""One driver per sweep (orchestrator/driver_lease.py): a live driver's record refuses a second, in one line; a
killed driver's record, a reused pid, another host's silent driver and a corrupt record do not. The sweep
itself is tried from the CLI in the crash story (a `--resume` while its driver runs is refused; after the
driver's SIGKILL it goes ahead): tests/test_fault_tolerance.py."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from orchestrator import driver_lease, state
from orchestrator.__main__ import main
from trainables import process_owner
from trainables.errors import UserError

SWEEP = "celeba_backbones"


def _record(run_path, **fields) -> None:
    record = {"host": socket.gethostname(), "pid": os.getpid(), "started": None, "since": time.time(),
              "beat_at": time.time(), "token": "theirs", **fields}
    state.write_text(f"{run_path}/{driver_lease.LEASE_FILE}", json.dumps(record))


@pytest.fixture
def other_process():
    """A live process that is not this one, as another terminal's driver would be."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc
    proc.kill()
    proc.wait()


def test_a_live_driver_on_this_machine_refuses_a_second_in_one_line(tmp_path, other_process):
    _record(tmp_path, pid=other_process.pid, started=process_owner.start_time(other_process.pid))
    with pytest.raises(UserError) as err:
        driver_lease.check_free(str(tmp_path), driver_lease.then_words(resume=True))
    text = str(err.value)
    assert f"the sweep at {tmp_path} is still running: its driver is pid {other_process.pid} on this machine" in text
    assert "\n" not in text and text.endswith("and run this command again")
    with pytest.raises(UserError, match="resume it with --resume$"):
        driver_lease.Lease(str(tmp_path)).claim(resume=False)


def test_a_killed_drivers_record_and_a_reused_pid_leave_the_sweep_free(tmp_path, other_process):
    started = process_owner.start_time(other_process.pid)
    _record(tmp_path, pid=other_process.pid, started=str(int(started) - 1))  # the pid now names another process
    driver_lease.check_free(str(tmp_path), "again")
    _record(tmp_path, pid=other_process.pid, started=started)
    other_process.send_signal(signal.SIGKILL)
    other_process.wait()
    driver_lease.check_free(str(tmp_path), "again")  # dead: its record is stale at once


def test_another_hosts_driver_holds_the_sweep_until_it_goes_unheard(tmp_path):
    _record(tmp_path, host="gpu-node-7", pid=1, beat_at=time.time() - 5)
    with pytest.raises(UserError, match=r"pid 1 on host gpu-node-7 .*last heard from [56] s ago; one unheard for 60 s "
                                        r"counts as ended\)"):
        driver_lease.check_free(str(tmp_path), "again")
    _record(tmp_path, host="gpu-node-7", pid=1, beat_at=time.time() - driver_lease.STALE_S - 1)
    driver_lease.check_free(str(tmp_path), "again")


def test_an_unreadable_record_holds_nothing(tmp_path):
    (tmp_path / driver_lease.LEASE_FILE).write_text("{not json")
    driver_lease.check_free(str(tmp_path), "again")
    (tmp_path / driver_lease.LEASE_FILE).write_text(json.dumps({"host": "x"}))
    driver_lease.check_free(str(tmp_path), "again")


def test_a_held_lease_beats_while_held_and_is_gone_after(tmp_path, monkeypatch):
    monkeypatch.setattr(driver_lease, "BEAT_S", 0.05)
    where = f"file://{tmp_path}/runs/{SWEEP}"  # a URI, as --storage may be
    with driver_lease.held(where, resume=False) as lease:
        first = driver_lease.Holder.read(where)
        assert (first.pid, first.token, first.host) == (os.getpid(), lease.token, socket.gethostname())
        deadline = time.time() + 10
        while driver_lease.Holder.read(where).beat_at == first.beat_at and time.time() < deadline:
            time.sleep(0.05)
        assert driver_lease.Holder.read(where).beat_at > first.beat_at
    assert not (tmp_path / "runs" / SWEEP / driver_lease.LEASE_FILE).exists()


def test_a_lease_taken_over_is_neither_rewritten_nor_removed(tmp_path, monkeypatch):
    monkeypatch.setattr(driver_lease, "BEAT_S", 0.05)
    lease = driver_lease.Lease(str(tmp_path)).claim(resume=True)
    _record(tmp_path, host="gpu-node-7", token="theirs")  # another host's driver, after this one went unheard
    time.sleep(0.3)
    lease.release()
    assert driver_lease.Holder.read(str(tmp_path)).token == "theirs"


def test_sync_refuses_while_the_sweeps_driver_runs(tmp_path, other_process, capsys):
    """Its driver writes its kept records itself once MLflow answers: a second writer would record them twice."""
    run_path = tmp_path / SWEEP
    state.write_text(f"{run_path}/{state.STATE_FILE}", json.dumps({"parent_run_id": "abc", "status": "running"}))
    _record(run_path, pid=other_process.pid, started=process_owner.start_time(other_process.pid))
    assert main(["sync", SWEEP, "--storage", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is still running" in err[0] and f"pid {other_process.pid}" in err[0], err
