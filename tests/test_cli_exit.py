"""A command ends as soon as its work is done (orchestrator.__main__.leave skips the interpreter's teardown), yet
everything Python's own exit did that matters still happens: the local Ray it started is stopped, its
last lines are printed, and its exit status is kept."""

from __future__ import annotations

import subprocess
import sys

import pytest

from crash_story import CliRun

pytestmark = pytest.mark.ray


def test_a_command_that_started_a_local_ray_stops_it_and_prints_its_last_line_before_it_ends(demo_cache, tmp_path):
    # doctor starts a local Ray for its resource checks, as a sweep does, and prints its verdict last
    run = CliRun(["doctor", "celeba_backbones", "--smoke", "--storage", str(tmp_path / "runs"),
                  "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"], tmp_path, buffered=True)
    try:
        code = run.proc.wait(timeout=300)
        # leave() stops Ray (cluster.disconnect, else Ray's atexit handler); skipped, its agents outlive the command
        left = run.left_behind(grace=10)
    finally:
        run.finish(timeout=60)
    assert code == 0, "\n".join(run.seen[-20:])
    assert run.seen[-1] == "all checks passed: `sweep` would start", "\n".join(run.seen[-20:])
    assert any("Ray" in line for line in run.seen), "doctor did not check Ray"
    assert left == [], left


class Ended(Exception):
    """Raised by the stand-in for os._exit, so that leave() can be watched in this process."""


def test_a_failed_ray_stop_at_the_end_is_one_warning_and_the_rest_of_the_exit_still_runs(monkeypatch, capsys):
    import atexit

    from orchestrator import __main__ as cli
    from orchestrator import cluster

    def broken_disconnect():
        raise RuntimeError("GCS unreachable at shutdown")

    ran, statuses = [], []

    def fake_exit(status):
        statuses.append(status)
        raise Ended

    monkeypatch.setattr(cluster, "disconnect", broken_disconnect)
    monkeypatch.setattr(cli.os, "_exit", fake_exit)
    monkeypatch.setattr(atexit, "_run_exitfuncs", lambda: ran.append("atexit"))
    # this process goes on after leave(): its threads are not told to end (pytest-xdist's own never would)
    monkeypatch.setattr(cli.threading, "_shutdown", lambda: ran.append("threads"))
    with pytest.raises(Ended):
        cli.leave(3)
    err = capsys.readouterr().err
    assert statuses == [3] and ran == ["threads", "atexit"]
    assert err.strip() == ("warning: stopping Ray at the end failed (GCS unreachable at shutdown); "
                           "its exit handler tries once more"), err


IDLE_POOL_AND_A_WRITER = """
import sys, threading, time
from concurrent.futures import ThreadPoolExecutor
from orchestrator.__main__ import leave

pool = ThreadPoolExecutor(2, thread_name_prefix="ArtifactPool")  # as MLflow's artifact repositories keep one
pool.submit(time.sleep, 0).result()  # its worker thread now waits, idle, for more work

def write_late():
    time.sleep(1)
    open(sys.argv[1], "w").write("written")

threading.Thread(target=write_late).start()  # work another thread is still doing at the command's end
leave(0)
"""


def test_a_command_ends_with_an_idle_thread_pool_alive_and_still_waits_for_work_in_progress(tmp_path):
    out = tmp_path / "late.txt"
    ended = subprocess.run([sys.executable, "-c", IDLE_POOL_AND_A_WRITER, str(out)], capture_output=True, text=True,
                           timeout=120)
    assert ended.returncode == 0, ended.stderr[-2000:]
    assert out.read_text() == "written"
