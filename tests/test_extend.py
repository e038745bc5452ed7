"""`sweep --extend`, without Ray: an earlier sweep recorded in a real MLflow store as a sweep records one
(its parent run, its dataset input, one child run per trial with its whole config as params) comes back
with typed configs; a grid keeps only its new points; an Optuna study starts from the earlier trials as
completed ones, for one objective and for several; a sweep of another task, dataset or epoch count is
refused in one line; and the final table lists the earlier trials, marked, with the best among all."""

from __future__ import annotations

import pandas as pd
import pytest
from ray import tune

from orchestrator import extend, report
from orchestrator.space import search_algorithm
from orchestrator.sweep import trial_params
from orchestrator.tracking import KIND_KEY, TRIAL_KEY, DatasetRecord, Tracking
from trainables.errors import UserError

BASE = {"task": "attributes", "optim.epochs": 2, "data.max_train_images": 480, "data.augment": ["hflip"],
        "data.root": "/data/prepared"}
TRIALS = [("t_00000", "resnet18", 0.80, 0.9), ("t_00001", "legacy_seresnet18", 0.85, 0.5)]
FINGERPRINT = "abcdef0123456789"


def record_sweep(tracking: Tracking, trials=TRIALS, base=BASE, status="FINISHED", tags=None) -> str:
    """A finished sweep's parent and trial runs, recorded as sweep.py and tracking.py record them."""
    client = tracking.client
    experiment = tracking.experiment_id("extend-test")
    parent = client.create_run(experiment, tags={KIND_KEY: "sweep", **(tags or {})}).info.run_id
    tracking.log_dataset(parent, DatasetRecord(base["data.root"], FINGERPRINT, "prepared", {"train": 480}))
    for trial_id, model, accuracy, gap in trials:
        child = client.create_run(experiment, tags={"mlflow.parentRunId": parent, KIND_KEY: "trial",
                                                    TRIAL_KEY: trial_id}).info.run_id
        tracking.log(child, params=trial_params({**base, "model.name": model}),
                     metrics={"val/mean_accuracy": accuracy, "val/gap": gap, "epoch": 2})
        client.set_terminated(child, "FINISHED")
    client.set_terminated(parent, status)
    return parent


@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    return Tracking(f"sqlite:///{tmp_path_factory.mktemp('extend')}/mlflow.db")


@pytest.fixture(scope="module")
def earlier(tracking):
    return record_sweep(tracking)


def grid(*models):
    return {**BASE, "model.name": tune.grid_search(list(models))}


def test_earlier_trials_come_back_with_typed_configs_and_their_metrics(tracking, earlier):
    found = extend.earlier_sweep(tracking, earlier)
    assert found.parent_id == earlier and [t.trial_id for t in found.trials] == ["t_00000", "t_00001"]
    first = found.trials[0]
    assert first.config["model.name"] == "resnet18" and first.config["optim.epochs"] == 2
    assert first.config["data.augment"] == ["hflip"] and first.config["model.weights"] == ""
    assert first.metrics["val/mean_accuracy"] == pytest.approx(0.80) and first.metrics["epoch"] == 2
    assert first.metrics["trial_id"] == "t_00000" and first.sweep_run_id == earlier


def test_an_extension_of_an_extension_brings_the_whole_lineage(tracking, earlier):
    later = record_sweep(tracking, [("u_00000", "skresnet18", 0.83, 0.7)], tags={extend.EXTENDS_TAG: earlier})
    found = extend.earlier_sweep(tracking, later)
    assert sorted(t.trial_id for t in found.trials) == ["t_00000", "t_00001", "u_00000"]


def test_a_grid_runs_only_the_points_no_earlier_trial_ran(tracking, earlier):
    trials = extend.earlier_sweep(tracking, earlier).trials
    assert extend.new_points(grid("resnet18", "legacy_seresnet18", "skresnet18"), trials, 1) == [
        {"model.name": "skresnet18"}]
    ran = trials[0].config["optim.lr"]  # the earlier trials' (default) learning rate
    two_by_two = {**grid("resnet18", "skresnet18"), "optim.lr": tune.grid_search([str(ran), ran * 10])}
    points = extend.new_points(two_by_two, trials, 2)  # resnet18 at that rate ran (its value spelt as text here)
    assert len(points) == 2 * 3 and {"model.name": "resnet18", "optim.lr": str(ran)} not in points


def test_optuna_starts_from_the_earlier_trials_as_completed_ones(tracking, earlier):
    trials = extend.earlier_sweep(tracking, earlier).trials
    space = {**BASE, "model.name": tune.choice(["resnet18", "legacy_seresnet18", "skresnet18"])}
    for objectives in ([("val/mean_accuracy", "max")], [("val/mean_accuracy", "max"), ("val/gap", "min")]):
        evaluated = extend.evaluated_points(space, trials, objectives)
        search = search_algorithm("optuna", 0, objectives, evaluated=evaluated)
        search.set_search_properties(objectives[0][0], objectives[0][1], space)  # what Tune calls
        done = search._ot_study.get_trials()
        assert [t.params for t in done] == [{"model.name": "resnet18"}, {"model.name": "legacy_seresnet18"}]
        assert all(str(t.state) == "TrialState.COMPLETE" for t in done)
        values = [t.values for t in done]
        assert values == ([[0.80], [0.85]] if len(objectives) == 1 else [[0.80, 0.9], [0.85, 0.5]])


def test_an_earlier_trial_outside_the_new_space_is_left_out_of_the_study(tracking, earlier):
    trials = extend.earlier_sweep(tracking, earlier).trials
    space = {**BASE, "model.name": tune.choice(["resnet18", "skresnet18"])}
    search = search_algorithm("optuna", 0, [("val/mean_accuracy", "max")],
                              evaluated=extend.evaluated_points(space, trials, [("val/mean_accuracy", "max")]))
    search.set_search_properties("val/mean_accuracy", "max", space)
    assert [t.params for t in search._ot_study.get_trials()] == [{"model.name": "resnet18"}] and search.skipped == 1


@pytest.mark.parametrize("change, words", [
    ({"optim.epochs": 4}, "optim.epochs 2 -> 4"),
    ({"data.max_train_images": 0}, "data.max_train_images 480 -> 0"),
])
def test_a_changed_fixed_setting_is_refused_in_one_line(tracking, earlier, change, words):
    found = extend.earlier_sweep(tracking, earlier)
    with pytest.raises(UserError) as err:
        extend.check_comparable(found, tracking, "attributes", {**grid("resnet18"), **change}, FINGERPRINT,
                                locations=("data.root",))
    assert words in str(err.value) and "--extend-anyway" in str(err.value) and "\n" not in str(err.value)


def test_another_dataset_or_task_is_refused_and_the_same_settings_pass(tracking, earlier):
    found = extend.earlier_sweep(tracking, earlier)
    moved = {**grid("resnet18", "skresnet18"), "data.root": "/elsewhere/prepared"}
    extend.check_comparable(found, tracking, "attributes", moved, FINGERPRINT, locations=("data.root",))
    with pytest.raises(UserError, match="another dataset .*--extend-anyway"):
        extend.check_comparable(found, tracking, "attributes", moved, "0" * 16, locations=("data.root",))
    with pytest.raises(UserError, match="trained the attributes task, and this one the fairface task"):
        extend.check_comparable(found, tracking, "fairface", moved, FINGERPRINT, locations=("data.root",))


def test_only_a_finished_sweeps_parent_run_can_be_extended(tracking, earlier):
    child = extend.earlier_sweep(tracking, earlier).trials[0].run_id
    with pytest.raises(UserError, match=f"not a sweep's parent run; its sweep's parent run is {earlier}"):
        extend.earlier_sweep(tracking, child)
    with pytest.raises(UserError, match="did not finish .*--resume first"):
        extend.earlier_sweep(tracking, record_sweep(tracking, status="KILLED"))
    with pytest.raises(UserError, match="no such run"):
        extend.earlier_sweep(tracking, "0" * 32)


class Result:
    def __init__(self, trial_id, model, accuracy):
        self.config, self.error = {"model.name": model}, None
        self.metrics = {"trial_id": trial_id, "val/mean_accuracy": accuracy, "epoch": 2}


def test_the_table_lists_earlier_trials_marked_and_the_best_may_be_one(tracking, earlier):
    trials = extend.earlier_sweep(tracking, earlier).trials
    new = [Result("n_00000", "skresnet18", 0.83)]
    table = report.results_table(new, "val/mean_accuracy", "max", lambda c: c["model.name"],
                                 status_of=lambda trial: "done", earlier=trials)
    assert list(table["config"]) == ["legacy_seresnet18", "skresnet18", "resnet18"]
    assert list(table[extend.FROM]) == [extend.EARLIER, "this sweep", extend.EARLIER]
    assert list(table["best"]) == ["*", "", ""] and list(table["status"]) == ["done"] * 3
    assert report.best_of([*new, *trials], "val/mean_accuracy", "max") is trials[1]
    assert report.best_of([*new, *trials], "val/mean_accuracy", "min") is trials[0]
    plain = report.results_table(new, "val/mean_accuracy", "max", lambda c: c["model.name"])
    assert extend.FROM not in plain.columns and isinstance(plain, pd.DataFrame)


def test_the_pareto_front_counts_earlier_trials_as_candidates(tracking, earlier):
    trials = extend.earlier_sweep(tracking, earlier).trials  # (0.80, gap 0.9) and (0.85, gap 0.5)
    new = [Result("n_00000", "skresnet18", 0.82)]
    new[0].metrics["val/gap"] = 0.4
    new[0].config["optim.epochs"] = 2
    objectives = [("val/mean_accuracy", "max"), ("val/gap", "min")]
    table = report.results_table(new, "val/mean_accuracy", "max", lambda c: c["model.name"], ["val/gap"],
                                 status_of=lambda trial: "done", earlier=trials)
    front = report.pareto_front([*new, *trials], table, objectives, None, 2)
    members = front["table"][front["table"]["front"] == "*"]
    assert sorted(members["config"]) == ["legacy_seresnet18", "skresnet18"]  # resnet18 is dominated by both
    assert front["best"] is trials[1] and front["candidates"] == 3
