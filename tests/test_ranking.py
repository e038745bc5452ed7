"""Ties at the top (orchestrator/ranking.py): the face-recognition demo ended with two trials at 0.9767 (600
pairs give accuracies in steps of 1/600), and the sweep named the first as its best without a word. The pick,
the table's `*`, the progress line's best so far and the parent run's tags now follow one rule (equal to 9
decimals is a tie; a tie goes to the trial created first), and the sweep says which trials tied."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pandas as pd

from orchestrator import ranking, report
from orchestrator.policy_sweep import PolicyResults
from orchestrator.progress import ProgressPrinter
from search_spaces import Sweep
from test_pareto import FakeTracking

METRIC = "val/mean_verification_accuracy"
# A mean of ten fold accuracies: the same pairs right, the last bit different.
SAME = 0.9766666666666667
NOISE = 0.9766666666666668


def test_values_equal_to_nine_places_are_a_tie_that_the_first_created_wins():
    assert ranking.best_index([0.95, SAME, NOISE], "max") == 1
    assert ranking.best_index([0.95, NOISE, SAME], "max") == 1
    assert ranking.best_index([0.95, SAME, SAME + 1e-6], "max") == 2  # a real difference still ranks
    assert ranking.best_index([0.2, 0.1, 0.1 + 1e-12], "min") == 1
    assert ranking.best_index([float("nan"), None, "x", 0.5], "max") == 3
    assert ranking.best_index([float("nan")], "max") is None
    assert ranking.tied_with([SAME, 0.9, NOISE], 0) == [2] and ranking.tied_with([SAME, 0.9], 1) == []


def _results(values):
    return PolicyResults(SimpleNamespace(config={"model.name": name}, error=None,
                                         metrics={"trial_id": f"t{i}", "epoch": 4, METRIC: value})
                         for i, (name, value) in enumerate(values))


def test_a_tied_sweep_stars_and_picks_the_first_created_and_says_which_trials_tied(capsys):
    # The later trial's value is the larger in its last bit: a float compare would pick it, and the table's
    # sort would put it first.
    results = _results([("m=0.3", SAME), ("m=0.3 lambda=0.005", 0.9733), ("m=0.5", NOISE), ("m=0.5 focal", 0.9450)])
    tracking = FakeTracking()
    summary = report.finish_sweep(results, Sweep("rec", "q", {}, task="recognition", metric=METRIC),
                                  SimpleNamespace(report_columns=(), leaderboard=None), tracking, "parent", {},
                                  lambda c: c["model.name"], 0.0, child_run=lambda t: f"run-{t}",
                                  status_of=lambda t: "done")
    out = capsys.readouterr().out
    assert summary["best_run_id"] == "run-t0" and summary["tied"] == ["m=0.5"]
    assert tracking.tags["parent"]["best_trial"] == "m=0.3" and tracking.tags["parent"]["best_tied_with"] == "m=0.5"
    best_line = next(i for i, line in enumerate(out.splitlines()) if line.startswith("best: "))
    tie_line = out.splitlines()[best_line + 1]
    assert "tied with 1 other trial at 0.9767: m=0.5 (a tie goes to the trial created first" in tie_line, out
    written = pd.read_csv(io.BytesIO(tracking.files["parent"]["trials.csv"]), keep_default_na=False)
    assert list(written["trial"][:2]) == ["t0", "t2"] and list(written["best"]) == ["*", "", "", ""]


def test_a_sweep_without_a_tie_says_nothing_of_ties(capsys):
    tracking = FakeTracking()
    summary = report.finish_sweep(_results([("a", 0.9), ("b", 0.8)]), Sweep("rec", "q", {}, task="recognition",
                                  metric=METRIC), SimpleNamespace(report_columns=(), leaderboard=None), tracking,
                                  "parent", {}, lambda c: c["model.name"], 0.0, child_run=lambda t: f"run-{t}")
    assert "tied" not in capsys.readouterr().out and "tied" not in summary
    assert "best_tied_with" not in tracking.tags["parent"]


def test_the_best_so_far_follows_the_same_rule_whichever_trial_reported_first():
    """Two trials at once: the later-created one reaches the tied value first; the final pick is the other."""
    out = io.StringIO()
    printer = ProgressPrinter(METRIC, "max", 2, 4, lambda config: config["model.name"], stream=out)
    first = SimpleNamespace(trial_id="t0", config={"model.name": "m=0.3"}, status="RUNNING", last_result={})
    second = SimpleNamespace(trial_id="t1", config={"model.name": "m=0.5"}, status="RUNNING", last_result={})
    trials = [first, second]
    printer.on_trial_start(0, trials, first)
    printer.on_trial_start(0, trials, second)
    printer.on_trial_result(0, trials, second, {METRIC: NOISE, "epoch": 4})
    printer.on_trial_result(0, trials, first, {METRIC: SAME, "epoch": 4})
    ends = [line.rsplit("| ", 1)[1] for line in out.getvalue().splitlines() if "| " in line]
    assert ends == ["best 0.9767 (m=0.5)", "best 0.9767 (m=0.3)"], ends
    printer.on_trial_result(0, trials, first, {METRIC: float("nan"), "epoch": 4})  # a diverged trial breaks nothing
    assert printer.best == (NOISE, "m=0.5")
