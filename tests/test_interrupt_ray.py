"""Ctrl-C on a real CLI sweep: it stops cleanly, is recorded as interrupted (never as finished), says how
to continue, exits 130, and `--resume` then finishes it."""

from __future__ import annotations

import json
import os
import signal

import pytest

from crash_story import SWEEP, CliRun, CrashStory
from orchestrator.state import STATE_FILE

pytestmark = pytest.mark.ray


def test_ctrl_c_is_recorded_as_interrupted_and_resume_finishes_it(demo_cache, tmp_path):
    story = CrashStory(uri=f"sqlite:///{tmp_path}/mlflow.db", storage=tmp_path / "runs")
    args = ["sweep", SWEEP, "--smoke", "--storage", str(story.storage), "--tracking-uri", story.uri,
            "--num-workers", "1", "--max-concurrent", "1", "--set", "data.max_train_images=240"]
    first = CliRun(args, tmp_path)
    try:
        first.wait_for("done   trial 1/2", timeout=600)
        first.wait_for("start  trial 2/2", timeout=300)
        os.kill(first.proc.pid, signal.SIGINT)  # what Ctrl-C sends the driver
        code = first.finish(timeout=300)
    finally:
        first.kill()
    assert code == 130, "\n".join(first.seen[-30:])
    assert any("--resume" in line and "interrupted" in line for line in first.seen[-5:]), first.seen[-5:]
    assert not any("Traceback" in line for line in first.seen)
    assert json.loads((story.storage / SWEEP / STATE_FILE).read_text())["status"] == "interrupted"
    (parent,), children = story.runs()
    assert parent.info.status == "KILLED" and not any(k.startswith("best/") for k in parent.data.metrics)
    assert sorted(c.info.status for c in children) == ["FINISHED", "KILLED"]

    resumed = CliRun(args + ["--resume"], tmp_path)
    assert resumed.finish(timeout=600) == 0, "\n".join(resumed.seen[-30:])
    (parent,), children = story.runs()
    assert parent.info.status == "FINISHED" and "best/val/mean_accuracy" in parent.data.metrics
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
    assert json.loads((story.storage / SWEEP / STATE_FILE).read_text())["status"] == "finished"
