"""Nothing lost: a worker killed mid-trial is retried from its checkpoint, and a driver killed with
SIGKILL resumes without re-running or duplicating anything. The crashes themselves happen once, in
the session's `crashed_smoke_sweep` (tests/crash_story.py); these tests judge what they left."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.ray


def _assert_one_value_per_epoch(client, run):
    for key in ("epoch", "val/mean_accuracy", "train/loss"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert steps == list(range(1, len(steps) + 1)), (run.info.run_name, key, steps)


def _finished_before(story) -> dict:
    return {r.info.run_id: r.data.metrics["epoch"] for r in story.before if r.info.status == "FINISHED"}


def test_killed_worker_is_retried_from_its_last_checkpoint(crashed_smoke_sweep):
    story = crashed_smoke_sweep
    finished = _finished_before(story)
    assert len(finished) == 1
    retried = story.client.get_run(next(iter(finished)))
    assert retried.data.tags["retries"] == "1" and "last_error" in retried.data.tags
    assert retried.data.metrics["epoch"] == 2
    _assert_one_value_per_epoch(story.client, retried)  # the retry resumed at epoch 2: epoch 1 is not logged twice


def test_a_plain_rerun_refuses_to_start_over_an_unfinished_sweep(crashed_smoke_sweep):
    code, output = crashed_smoke_sweep.refused
    assert code == 2 and any("--resume" in line for line in output), output[-10:]


def test_killed_driver_resumes_without_rerunning_or_duplicating(crashed_smoke_sweep):
    story = crashed_smoke_sweep
    code, output = story.resumed
    assert code == 0, "\n".join(output[-30:])
    parents, children = story.runs()
    assert len(parents) == 1 and len(children) == 2  # the same runs, re-attached
    assert all(c.info.status == "FINISHED" for c in children)
    finished = _finished_before(story)
    for child in children:
        _assert_one_value_per_epoch(story.client, child)
        if child.info.run_id in finished:  # the finished trial was not run again
            assert story.client.get_run(child.info.run_id).data.metrics["epoch"] == finished[child.info.run_id]
    assert "best/val/mean_accuracy" in story.client.get_run(parents[0].info.run_id).data.metrics
