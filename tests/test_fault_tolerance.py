"""Nothing lost: a worker killed mid-trial is retried from its checkpoint, and a driver killed with
SIGKILL resumes without re-running or duplicating anything. The crashes themselves happen once, in
the session's `crashed_smoke_sweep` (tests/crash_story.py); these tests judge what they left."""

from __future__ import annotations

import json
import re

import pytest

from crash_story import SWEEP
from orchestrator.driver_lease import LEASE_FILE
from orchestrator.tracking import TRIAL_KEY
from trainables.artifacts import TRAIN_RUNS

pytestmark = pytest.mark.ray


def _assert_one_value_per_epoch(client, run):
    for key in ("epoch", "val/mean_accuracy", "train/loss"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert steps == list(range(1, len(steps) + 1)), (run.info.run_name, key, steps)


def _epochs_printed(lines: list[str], trial: str) -> list[int]:
    """The epochs the progress lines of trial `trial` (its short name) report, trained or resumed from."""
    pattern = re.compile(rf"trial \d+/\d+ {re.escape(trial)}  (?:epoch (\d+)/|resumed from its epoch (\d+) )")
    return [int(a or b) for line in lines for a, b in pattern.findall(line)]


def _finished_before(story) -> dict:
    return {r.info.run_id: r.data.metrics["epoch"] for r in story.before if r.info.status == "FINISHED"}


def test_killed_worker_is_retried_from_its_last_checkpoint(crashed_smoke_sweep):
    story = crashed_smoke_sweep
    finished = _finished_before(story)
    assert len(finished) == 1
    retried = story.client.get_run(next(iter(finished)))
    assert retried.data.tags["retries"] == "1" and "last_error" in retried.data.tags
    assert retried.data.metrics["epoch"] == 2
    _assert_one_value_per_epoch(story.client, retried)
    # Resumed from its checkpoint, not from scratch: each attempt reports its start-up with its first
    # epoch, and the retry's came with epoch 2. A restart from scratch would report its start-up with
    # epoch 1 again, which the callback never logs twice, leaving one start-up only.
    starts = [m.step for m in story.client.get_metric_history(retried.info.run_id, "timing/worker_setup_s")]
    assert starts == [1, 2], starts


def test_a_plain_rerun_refuses_to_start_over_an_unfinished_sweep(crashed_smoke_sweep):
    code, output = crashed_smoke_sweep.refused
    assert code == 2 and any("--resume" in line for line in output), output[-10:]


def test_a_resume_with_other_settings_is_refused_naming_the_change_and_the_command_that_resumes_it(crashed_smoke_sweep):
    """Tune goes on with the trials it saved whatever a resume is given: the trials trained 2 epochs while the
    header, the progress lines and the parent run's params said 3. The resume after it goes ahead unharmed."""
    story = crashed_smoke_sweep
    code, output = story.changed
    last = [line for line in output if line.strip()][-1]
    assert code == 2 and not any("Traceback" in line for line in output), output[-10:]
    assert last.startswith("error: --resume: ") and "(optim.epochs 2 -> 3)" in last, last
    resume = " ".join(story.args)
    assert f"resume it as it started: python -m orchestrator {resume} --storage" in last, last
    assert not any("start  trial" in line for line in output), output[-10:]


def test_the_trials_after_a_resume_read_the_data_where_the_resume_has_it(crashed_smoke_sweep):
    """The resume names the same prepared set in another folder (as another machine's cache would hold it). Tune
    restores the unfinished trial with the config it was created with, naming the first run's cache: its workers
    must read the resume's copy (each checkpoint's meta.json keeps the config they were given)."""
    story = crashed_smoke_sweep
    finished = _finished_before(story)
    after = [c for c in story.runs()[1] if c.info.run_id not in finished]
    assert len(after) == 1, after
    runs = story.storage / SWEEP / TRAIN_RUNS / f"train-{after[0].data.tags[TRIAL_KEY]}"
    metas = sorted(runs.glob("checkpoint_*/meta.json"))
    assert metas, sorted(p.name for p in runs.iterdir())
    for meta in metas:
        assert json.loads(meta.read_text())["config"]["data.root"] == str(story.data_elsewhere), meta


def test_a_resume_while_the_driver_runs_is_refused_in_one_line_naming_it(crashed_smoke_sweep):
    """A second driver on the same sweep trained its unfinished trials again beside the first and logged their
    epochs twice. The sweep itself went on: its trials' epochs are each recorded once (the test below)."""
    story = crashed_smoke_sweep
    code, output = story.rival
    last = [line for line in output if line.strip()][-1]
    assert code == 2 and not any("Traceback" in line for line in output), output[-10:]
    assert last.startswith("error: ") and "is still running" in last, last
    assert f"its driver is pid {story.driver_pid} on this machine" in last and "run this command again" in last, last


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
            # The callback would drop a rerun's repeated epochs, so judge from what the resumed sweep
            # printed: it trained no epoch of this trial again. (Tune may hand it back once, when its end
            # was not yet saved: its workers then report the final checkpoint's result again, epoch 2.)
            reported = _epochs_printed(output, child.info.run_name.split(" ", 1)[1])
            assert all(epoch >= finished[child.info.run_id] for epoch in reported), (reported, output[-30:])
    assert "best/val/mean_accuracy" in story.client.get_run(parents[0].info.run_id).data.metrics
    # The resumed driver took over the killed one's record of holding the sweep, and removed it as it ended.
    assert not (story.storage / SWEEP / LEASE_FILE).exists()
