"""A sweep of several objectives: the Pareto front (mixed modes, ties, missing values, trials stopped
early), the rule that picks one member, and what the report writes (table column, tags, pareto.csv and
pareto.png). In process, no Ray, no MLflow server."""

import io
import math
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from orchestrator import pareto, report
from orchestrator.policy_sweep import PolicyResults
import search_spaces
from search_spaces import Sweep, UserError, with_options

NAN = float("nan")
ACC_GAP = [("val/race/accuracy", "max"), ("val/race/group_gap", "min")]


def test_the_front_with_mixed_modes_ties_and_missing_values():
    points = [
        [0.80, 0.10],  # front: most accurate
        [0.70, 0.02],  # front: fairest
        [0.75, 0.05],  # front: between
        [0.70, 0.05],  # dominated by [0.75, 0.05] (worse accuracy, same gap)
        [0.75, 0.05],  # a tie with a member: on the front too
        [0.60, 0.20],  # dominated by all
        [NAN, 0.00],   # a missing value: never on the front, dominates nothing
        [0.90, math.inf],
    ]
    assert pareto.non_dominated(points, ["max", "min"]) == [True, True, True, False, True, False, False, False]
    assert pareto.non_dominated([[1, 1], [2, 0]], ["max", "max"]) == [True, True]
    assert pareto.non_dominated([[1, 1], [2, 0]], ["min", "min"]) == [True, True]
    assert pareto.non_dominated([[1, 1], [2, 2]], ["min", "min"]) == [True, False]
    assert pareto.non_dominated([[1, 1], [1, 1]], ["max", "min"]) == [True, True]
    assert pareto.non_dominated([[3], [1], [3]], ["max"]) == [True, False, True]  # one objective: the best, ties kept
    assert pareto.non_dominated([], ["max", "min"]) == []


def table(rows):
    return pd.DataFrame([{"best": "", "trial": t, "config": c, "status": s, "epochs": e,
                          "val/race/accuracy": a, "val/race/group_gap": g} for t, c, s, e, a, g in rows])


ROWS = [  # sorted by the first objective, as results_table does
    ("t1", "resnet18 multihead", "done", 4, 0.90, 0.20),
    ("t2", "resnet18 onehot18", "done", 2, 0.85, 0.01),  # stopped early: not a candidate, though it looks best
    ("t3", "seresnet18 multihead", "done", 4, 0.80, 0.04),
    ("t4", "seresnet18 onehot18", "done", 4, 0.78, 0.06),  # dominated by t3
    ("t5", "effnet multihead", "failed", 1, NAN, NAN),
    ("t6", "effnet onehot18", "done", 4, 0.70, 0.03),
]
COMPLETE = [True, False, True, True, False, True]


def test_the_rule_picks_the_best_first_objective_among_members_within_the_gap_limit():
    marked, picked, rule = pareto.mark(table(ROWS), ACC_GAP, COMPLETE, None)
    assert marked[pareto.FRONT].tolist() == ["*", "", "*", "", "", "*"]
    assert marked.loc[picked, "trial"] == "t1" and marked["best"].tolist() == ["*", "", "", "", "", ""]
    assert rule == "best val/race/accuracy (max) among the Pareto front"

    marked, picked, rule = pareto.mark(table(ROWS), ACC_GAP, COMPLETE, 0.05)
    assert marked.loc[picked, "trial"] == "t3" and "val/race/group_gap <= 0.05" in rule

    marked, picked, rule = pareto.mark(table(ROWS), ACC_GAP, COMPLETE, 0.001)  # no member that fair
    assert marked.loc[picked, "trial"] == "t1" and "no member has val/race/group_gap <= 0.001" in rule

    tied = table([("a", "a", "done", 4, 0.8, 0.10), ("b", "b", "done", 4, 0.8, 0.05)])
    marked, picked, _ = pareto.mark(tied, ACC_GAP, [True, True], None)
    assert marked[pareto.FRONT].tolist() == ["", "*"] and marked.loc[picked, "trial"] == "b"


def test_pareto_csv_and_png(tmp_path):
    marked, _, _ = pareto.mark(table(ROWS), ACC_GAP, COMPLETE, None)
    names = pareto.write(marked, ACC_GAP, COMPLETE, tmp_path, "fairface_fair_frontier")
    assert names == ["pareto.csv", "pareto.png"]
    csv = pd.read_csv(tmp_path / "pareto.csv")
    assert csv.columns.tolist() == ["trial", "config", "status", "epochs", "val/race/accuracy",
                                    "val/race/group_gap", "complete", "pareto"]
    assert csv.loc[csv["pareto"], "trial"].tolist() == ["t1", "t3", "t6"]
    assert csv["complete"].tolist() == COMPLETE
    assert (tmp_path / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class FakeTracking:
    def __init__(self):
        self.tags, self.files, self.metrics = {}, {}, {}

    def log(self, run_id, metrics=None, tags=None, **_):
        self.tags.setdefault(run_id, {}).update(tags or {})
        self.metrics.setdefault(run_id, {}).update(metrics or {})

    def log_files(self, run_id, folder, names):
        self.files.setdefault(run_id, {}).update({n: (Path(folder) / n).read_bytes() for n in names})

    def experiment_of(self, run_id):
        return "1"

    def runs_url(self, experiment):
        return "http://mlflow/#/experiments/1/runs"

    def set_terminated(self, run_id, status):
        self.tags.setdefault(run_id, {})["status"] = status


def test_a_finished_two_objective_sweep_tags_its_front_and_logs_its_files(capsys):
    results = PolicyResults(
        SimpleNamespace(config={"model.name": c, "optim.epochs": 4}, error=None,
                        metrics={"trial_id": t, "epoch": e, "val/race/accuracy": a, "val/race/group_gap": g})
        for t, c, s, e, a, g in ROWS if s == "done")
    sweep = Sweep("frontier", "q", {}, task="fairface", metric=[m for m, _ in ACC_GAP], mode=[d for _, d in ACC_GAP], max_gap=0.05)
    task = SimpleNamespace(report_columns=(), leaderboard=None)
    tracking = FakeTracking()
    summary = report.finish_sweep(results, sweep, task, tracking, "parent", {}, lambda c: c["model.name"], 0.0,
                                  child_run=lambda t: f"run-{t}", status_of=lambda t: "done")
    out = capsys.readouterr().out
    assert "Pareto front of val/race/accuracy (max), val/race/group_gap (min): 3 of 4 trials" in out
    assert {r: tracking.tags[f"run-{r}"]["pareto"] for r in ("t1", "t2", "t3", "t4", "t6")} == {
        "t1": "true", "t2": "false", "t3": "true", "t4": "false", "t6": "true"}
    assert summary["best_run_id"] == "run-t3" and summary["best_tags"]["pareto_rule"].endswith("<= 0.05")
    assert {"trials.csv", "pareto.csv", "pareto.png"} <= set(tracking.files["parent"])
    assert tracking.metrics["parent"]["pareto/members"] == 3
    assert tracking.tags["parent"]["status"] == "FINISHED"


def test_a_single_objective_sweep_is_reported_as_before(capsys):
    results = PolicyResults([SimpleNamespace(config={"model.name": "a"}, error=None,
                                             metrics={"trial_id": "t1", "epoch": 1, "val/mean_accuracy": 0.5})])
    tracking = FakeTracking()
    summary = report.finish_sweep(results, Sweep("one", "q", {}, task="attributes", metric="val/mean_accuracy"), SimpleNamespace(report_columns=(), leaderboard=None),
                                  tracking, "parent", {}, lambda c: c["model.name"], 0.0, child_run=lambda t: "r1")
    assert summary["best_run_id"] == "r1" and "pareto" not in tracking.tags.get("r1", {})
    assert set(tracking.files["parent"]) == {"trials.csv"} and "Pareto" not in capsys.readouterr().out


def test_an_interrupted_sweep_marks_no_best_trial_in_its_table_or_its_trials_csv(capsys):
    """Its best/* are not logged: the leading row of a table of unfinished trials is no winner either."""
    results = PolicyResults([SimpleNamespace(config={"model.name": m}, error=None,
                                             metrics={"trial_id": t, "epoch": 1, "val/mean_accuracy": v})
                             for t, m, v in (("t1", "a", 0.7), ("t2", "b", 0.5))])
    tracking = FakeTracking()
    report.finish_sweep(results, Sweep("one", "q", {}, task="attributes", metric="val/mean_accuracy"),
                        SimpleNamespace(report_columns=(), leaderboard=None), tracking, "parent", {},
                        lambda c: c["model.name"], 0.0, child_run=lambda t: f"run-{t}", interrupted=True,
                        status_of=lambda t: {"t1": "unfinished", "t2": "done"}[t])
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.strip().startswith(("t1", "t2"))]
    assert [row[0] for row in rows] == ["t1", "t2"], rows  # no "*" before the leading trial
    written = pd.read_csv(io.BytesIO(tracking.files["parent"]["trials.csv"]), keep_default_na=False)
    assert list(written["best"]) == ["", ""] and list(written["trial"]) == ["t1", "t2"]
    assert tracking.tags["parent"]["status"] == "KILLED" and "best/val/mean_accuracy" not in tracking.metrics["parent"]


@pytest.mark.parametrize("metric, mode, message", [
    (["val/a", "val/b"], ["max"], "--metric names 2 objective(s) but --mode gives 1 mode(s)"),
    (["val/a"], ["maximize"], "--mode: unknown mode 'maximize'"),
    ([], ["max"], "--mode needs --metric"),
    (["loss"], ["min"], "--metric loss: the objectives are validation metrics"),
])
def test_bad_objectives_on_the_command_line_are_one_line(metric, mode, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        with_options(Sweep("s", "q", {}, task="attributes", metric="val/mean_accuracy"), metric, mode)
    assert "\n" not in str(err.value)


def test_objectives_from_the_command_line_replace_the_sweeps():
    sweep = with_options(Sweep("s", "q", {}, task="attributes", metric="val/mean_accuracy"), ["val/race/accuracy", "val/race/group_gap"], ["max", "min"])
    assert sweep.objectives == ACC_GAP and (sweep.metric, sweep.mode) == ACC_GAP[0]


def test_the_fair_frontier_sweep_is_a_full_grid_of_two_fairface_objectives_without_asha():
    from orchestrator.preflight import Preflight
    from orchestrator.space import count_trials
    from orchestrator.sweep import SweepOptions

    for real, smoke, trials in [(False, False, 8), (True, False, 12), (False, True, 4)]:
        sweep = search_spaces.get("fairface_fair_frontier")(real_data=real, smoke=smoke)
        assert sweep.objectives == ACC_GAP and sweep.grace_period == 0
        assert count_trials(sweep.param_space, sweep.num_samples) == trials
    pre = Preflight(SweepOptions(name="fairface_fair_frontier", smoke=True))
    pre.check_sweep()  # every backbone, formulation and weighting is known
    assert {"model.name", "multitask.formulation", "multitask.weighting"} <= {
        k for k, v in pre.space.items() if isinstance(v, dict) and "grid_search" in v}


def test_a_sweep_file_names_several_objectives_and_its_mistakes_are_one_line(tmp_path):
    from search_spaces import loader

    file = tmp_path / "fair.yaml"
    head = "question: q?\ntask: fairface\nspace:\n  model.name: {grid: [resnet18, legacy_seresnet18]}\n"
    file.write_text(head + "metric: [val/race/accuracy, val/race/group_gap]\nmode: [max, min]\nmax_gap: 0.05\n")
    sweep = loader.load(str(file))
    assert sweep.objectives == ACC_GAP and sweep.metric == "val/race/accuracy" and sweep.max_gap == 0.05
    for body, fragment in [
        ("metric: [val/race/accuracy, val/race/group_gap]\nmode: [max]\n", "gives 1 mode(s): give one mode"),
        ("metric: [val/race/accuracy, val/race/group_gap]\n", "mode: missing"),
        ("metric: [val/race/accuracy, val/race/group_gap]\nmode: [max, least]\n", "unknown mode 'least'"),
        ("metric: [val/race/accuracy, race/group_gap]\nmode: [max, min]\n", "'race/group_gap' is not a validation"),
        ("metric: [val/race/accuracy, val/race/group_gap]\nmode: [max, max]\nmax_gap: 0.05\n", "max_gap: limits"),
    ]:
        file.write_text(head + body)
        with pytest.raises(UserError) as err:
            loader.load(str(file))
        assert str(err.value).startswith(str(file)) and fragment in str(err.value) and "\n" not in str(err.value)


@pytest.mark.ray
def test_tune_runs_a_multi_objective_optuna_study_though_its_own_config_names_one_metric(local_ray, tmp_path):
    """Tune hands the searcher its TuneConfig's single metric; the study still gets both objectives' values
    (a plain function trainable: no Train workers, seconds)."""
    from ray import tune

    from orchestrator.space import search_algorithm

    def trial(config):
        tune.report({"val/race/accuracy": config["x"], "val/race/group_gap": config["x"] ** 2})

    search = search_algorithm("optuna", 0, ACC_GAP)
    tuner = tune.Tuner(trial, param_space={"x": tune.uniform(0, 1)},
                       tune_config=tune.TuneConfig(metric=ACC_GAP[0][0], mode="max", num_samples=3, search_alg=search,
                                                   max_concurrent_trials=1),
                       run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0))
    results = tuner.fit()
    assert len(results) == 3 and not results.errors
    searcher = tuner._local_tuner._tune_config.search_alg
    searcher = getattr(searcher, "searcher", searcher)  # Tune may wrap it in a ConcurrencyLimiter
    assert searcher.metric == [m for m, _ in ACC_GAP]
    study = searcher._ot_study
    values = [t.values for t in study.trials]
    assert len(study.directions) == 2 and len(values) == 3 and all(len(v) == 2 for v in values)
