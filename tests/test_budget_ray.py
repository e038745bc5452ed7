"""A compute budget on a real CLI sweep: the smoke sweep (two trials, one at a time) with a budget smaller than
its first trial is recorded as `budget spent` and exits 4, with no trial started after the budget ran out;
`--resume --budget` larger finishes it; and what was spent is summed across both invocations, in the
sweep's state and on its parent run, from what each trial's run records it spent."""

from __future__ import annotations

import json
import re

import pytest

from crash_story import SWEEP, CliRun, CrashStory, smoke_args
from orchestrator.budget import BUDGET_SPENT, EXIT_BUDGET_SPENT
from orchestrator.state import STATE_FILE

pytestmark = pytest.mark.ray

DONE = re.compile(r"done\s+trial \d+/\d+ (\S+): .*, (\d+)s$")  # a trial's end: its model and its seconds


def _spent(story: CrashStory):
    """(parent run, {trial id: trial-hours its run records}, the sweep's state)."""
    (parent,), children = story.runs()
    trials = {c.data.tags["orchestrator.trial_id"]: c.data.metrics["budget/trial_hours"] for c in children}
    record = json.loads((story.storage / SWEEP / STATE_FILE).read_text())
    assert parent.data.metrics["budget/used_hours"] == pytest.approx(sum(trials.values()), rel=1e-9, abs=1e-12)
    assert record["spent_s"] / 3600 == pytest.approx(parent.data.metrics["budget/used_hours"], rel=1e-9)
    assert {k: v / 3600 for k, v in record["spent_by_trial"].items()} == pytest.approx(trials, rel=1e-9)
    return parent, trials, record


# The smoke sweep's two DDP workers (a trial's time counts twice), on small epochs: the story's cost is Ray
# starting trials, and what it judges is the time they spend, not what they learn.
SMALL = ["--set", "data.max_train_images=128", "--set", "data.image_size=32", "--set", "optim.batch_size=32"]


def test_a_spent_budget_stops_the_sweep_and_resume_with_a_larger_one_finishes_it(demo_cache, tmp_path):
    story = CrashStory(uri=f"sqlite:///{tmp_path}/mlflow.db", storage=tmp_path / "runs", args=smoke_args() + SMALL)
    args = [*story.args, "--storage", str(story.storage), "--tracking-uri", story.uri]

    # A budget smaller than the first trial's start-up: spent while it starts, it stops after its first epoch.
    first = CliRun(args + ["--budget", "5s"], tmp_path)
    code = first.finish(timeout=900)
    print("\n".join(first.seen))  # shown when the test fails, or with -rP
    output = "\n".join(first.seen[-40:])
    assert code == EXIT_BUDGET_SPENT, output
    assert not any("Traceback" in line for line in first.seen), output
    last = [line for line in first.seen if line.strip()][-1]
    assert last.startswith("budget spent:") and "--resume --budget" in last and "sweep celeba_backbones" in last
    spent_at = next(i for i, line in enumerate(first.seen) if "budget spent:" in line)
    started = [i for i, line in enumerate(first.seen) if "start  trial" in line]
    assert started and all(i < spent_at for i in started), output  # no trial started after it ran out
    parent, before, record = _spent(story)
    assert record["status"] == BUDGET_SPENT and parent.data.tags["status"] == BUDGET_SPENT
    assert parent.info.status == "KILLED"  # not FINISHED: its trials did not all end
    assert not any(k.startswith("best/") for k in parent.data.metrics)
    assert parent.data.metrics["budget/hours"] == pytest.approx(5 / 3600)
    assert parent.data.metrics["budget/used_hours"] * 3600 >= 5  # it stopped because the budget was spent
    assert len(before) == len(started) == 1  # one trial ran, the second never started

    # The same budget again is refused in one line; a larger one finishes the sweep.
    refused = CliRun(args + ["--resume", "--budget", "5s"], tmp_path)
    assert refused.finish(timeout=300) == 2
    assert any("continue it with a larger one" in line for line in refused.seen), refused.seen[-5:]
    resumed = CliRun(args + ["--resume", "--budget", "1h"], tmp_path)
    code = resumed.finish(timeout=1800)
    print("\n".join(resumed.seen))
    assert code == 0, "\n".join(resumed.seen[-40:])
    parent, after, record = _spent(story)
    assert record["status"] == "finished" and parent.info.status == "FINISHED"
    assert parent.data.tags["status"] == "finished" and parent.data.metrics["budget/hours"] == 1
    assert len(after) == 2 and set(before) < set(after)
    (stopped,) = before
    assert after[stopped] > before[stopped]  # the stopped trial went on, and its time with it
    # Summed across both invocations: what each trial spent since the resume is the time the progress lines
    # measured it running then (`done ... Ns`, whole seconds) times its workers, on top of what it spent before.
    workers = int(re.search(r"(\d+) (?:DDP workers|worker) x", parent.data.params["resources"]).group(1))
    took = {m.group(1): int(m.group(2)) for m in map(DONE.search, resumed.seen) if m}
    model = {c.data.tags["orchestrator.trial_id"]: c.data.params["model.name"] for c in story.runs()[1]}
    assert set(took) == set(model.values()), took
    for trial, hours in after.items():
        since = (hours - before.get(trial, 0.0)) * 3600
        assert since == pytest.approx(took[model[trial]] * workers, abs=workers), (trial, since, took)
    used = parent.data.metrics["budget/used_hours"]
    assert used == pytest.approx(sum(before.values()) + sum(after[t] - before.get(t, 0.0) for t in after), rel=1e-9)
