"""No sweep hangs on a placement group: a group an ended trial left behind is removed, and a worker
group that cannot be placed fails its trial with one line naming what holds the resources.

The pure lookups are tested on hand-made tables; the `ray` tests run small Tune sweeps on the shared
local Ray (2 CPUs) with a leaked group made on purpose, as Ray's bug leaves one (ray#65447).
"""

from __future__ import annotations

import os
import sys

import pytest

from orchestrator import placement
from orchestrator.placement import Actor, Group, describe_holders, groups_of_trial, unplaced_line


# ---- the pure lookups ----------------------------------------------------------------------------

def _actor(id, cls, worker, owner, state="ALIVE", resources=None, group=""):
    return Actor(id=id, class_name=cls, state=state, worker=worker, owner_worker=owner,
                 resources=resources or {}, group=group)


def _group(id, creator, state="CREATED", bundles=({"CPU": 0.5},), job="01000000"):
    return Group(id=id, state=state, creator_actor=creator, creator_job=job, bundles=tuple(bundles))


ACTORS = {a.id: a for a in [
    _actor("trialA", "ImplicitFunc", "wA", "driver"),
    _actor("trialB", "ImplicitFunc", "wB", "driver"),
    _actor("ctlA", "TrainController", "wCA", "wA", state="DEAD"),  # A's controller, gone: the leak
    _actor("ctlA2", "TrainController", "wCA2", "wA"),  # A's second run (a retry inside the same actor)
    _actor("ctlB", "TrainController", "wCB", "wB"),
    _actor("otherA", "Helper", "wH", "wA"),  # some other actor the trial made: not a Train run
]}
GROUPS = [
    _group("gA", "ctlA"),
    _group("gA-old", "ctlA", state="REMOVED"),
    _group("gA2", "ctlA2", state="PENDING"),
    _group("gB", "ctlB"),
    _group("tune", ""),  # Tune's own group for a trial's actor, made by the driver's job
    _group("helper", "otherA"),
]


def test_a_trials_groups_are_those_its_train_controllers_made_and_not_removed():
    assert [g.id for g in groups_of_trial("trialA", ACTORS, GROUPS)] == ["gA", "gA2"]
    assert [g.id for g in groups_of_trial("trialB", ACTORS, GROUPS)] == ["gB"]


def test_an_unknown_or_unplaced_trial_actor_owns_nothing():
    assert groups_of_trial("nobody", ACTORS, GROUPS) == []
    unplaced = dict(ACTORS, trialC=_actor("trialC", "ImplicitFunc", "", "driver", state="PENDING_CREATION"))
    # a controller with no owner recorded must not match an actor with no worker yet
    unplaced["ctlX"] = _actor("ctlX", "TrainController", "wX", "")
    assert groups_of_trial("trialC", unplaced, GROUPS + [_group("gX", "ctlX")]) == []


def test_nil_ids_read_as_empty():
    assert placement._hex(b"") == "" and placement._hex(b"\xff" * 18) == ""
    assert placement._hex(b"\x01\x02") == "0102"


def test_the_holders_are_named_largest_first_with_their_trial():
    actors = dict(ACTORS, loose=_actor("loose", "Hog", "wL", "driver", resources={"CPU": 0.25}))
    groups = [_group("small", "ctlB", bundles=({"CPU": 0.1},)),
              _group("big-group-id-long", "ctlA", bundles=({"CPU": 0.9, "bundle": 0.001}, {"CPU": 0.9})),
              _group("gpu-only", "ctlB", bundles=({"GPU": 1},)),
              _group("tune-own", "", bundles=({"CPU": 0.01},)),
              _group("gone", "ctlA", state="REMOVED", bundles=({"CPU": 2},)),
              _group("tiny", "ctlB", bundles=({"CPU": 0.001},))]
    text = describe_holders({"CPU": 0.5}, actors, groups, run_of={"trialA": "train-aaa"}.get)
    assert text.index("big-group-id") < text.index("small") < text.index("tune-own")
    assert "2 x {CPU: 0.9}" in text and "train-aaa" in text and "TrainController actor ctlA (dead)" in text
    assert "gpu-only" not in text and "gone" not in text
    assert "the driver of job 01000000" in text and "Hog actor loose ({CPU: 0.25})" in text
    assert "and 1 more" in text and "tiny" not in text  # the four largest shown of five


def test_the_unplaced_line_is_one_line_naming_the_wait_the_bound_and_the_holders():
    line = unplaced_line("train-abc", 2, {"CPU": 0.995}, 7.5, {"CPU": 0.01}, {"CPU": 2.0},
                         "placement group 1234 (1 x {CPU: 1.9}) made by the driver of job 01000000")
    assert "\n" not in line
    for part in ("train-abc", "2 x {CPU: 0.995}", "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S=7.5s",
                 "CPU 0.01 of 2", "placement group 1234", "--max-concurrent"):
        assert part in line, part


def test_the_bound_must_be_a_positive_number(monkeypatch):
    from orchestrator import cluster
    from trainables.errors import UserError

    monkeypatch.setenv(cluster.START_TIMEOUT_ENV, "45")
    assert cluster.TrialResources(2, 0.5, 0, 1).start_timeout_s == 45
    for bad in ("0", "soon", "inf"):
        monkeypatch.setenv(cluster.START_TIMEOUT_ENV, bad)
        with pytest.raises(UserError, match=cluster.START_TIMEOUT_ENV):
            cluster.start_timeout_s()


# ---- real sweeps on the shared local Ray ---------------------------------------------------------

def _by_value():
    """Trial functions and actors defined here reach Ray's workers by value (tests/ is not importable there)."""
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _state(group) -> str:
    import ray

    return ray.util.placement_group_table(group).get("state", "REMOVED")


class Recorder:
    """A Tune callback that counts each trial's ends."""

    def __new__(cls):
        from ray import tune

        class _Recorder(tune.Callback):
            def __init__(self):
                self.ends = []

            def on_trial_complete(self, iteration, trials, trial, **info):
                self.ends.append(("complete", trial.trial_id))

            def on_trial_error(self, iteration, trials, trial, **info):
                self.ends.append(("error", trial.trial_id))

            def on_trial_recover(self, iteration, trials, trial, **info):
                self.ends.append(("recover", trial.trial_id))

        return _Recorder()


def _leaky_or_training(config):
    """Step 0 leaves a placement group behind as Ray's bug does: made by an actor of class TrainController
    that this trial's actor started, and outliving it (detached). Step 1 then runs a real Train run
    that needs those CPUs, and its workers report whether the lookup finds their own group."""
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    if config["step"] == 0:
        @ray.remote(num_cpus=0)
        class TrainController:  # named as Ray Train's controller: how the lookup knows a Train run's groups
            def hold(self, cpus):
                from ray.util.placement_group import placement_group

                group = placement_group([{"CPU": cpus}], lifetime="detached")
                ray.get(group.ready(), timeout=60)

        ray.get(TrainController.remote().hold.remote(1.5))
        return
    os.environ[placement.TIMEOUT_ENV] = "30"  # without the cleanup this run fails after 30 s
    trainer = TorchTrainer(
        _report_own_group,
        train_loop_config={"trial_actor": ray.get_runtime_context().get_actor_id()},
        scaling_config=ray.train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
        run_config=ray.train.RunConfig(
            name=f"train-{config['step']}", storage_path=config["storage"], callbacks=[TuneReportCallback()],
            failure_config=ray.train.FailureConfig(max_failures=0, controller_failure_limit=0)),
    )
    trainer.fit()


def _report_own_group(config):
    import ray
    import ray.train

    mine = ray.util.get_current_placement_group()
    found = [g.id for g in groups_of_trial(config["trial_actor"], placement.read_actors(), placement.read_groups())]
    ray.train.report({"found_own_group": mine is not None and found == [mine.id.hex()]})


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_a_group_left_by_a_finished_trial_is_removed_and_the_next_trial_runs(local_ray, tmp_path):
    import ray
    from ray import tune
    from ray.util.placement_group import placement_group, remove_placement_group

    _by_value()
    bystander = placement_group([{"CPU": 0.01}])  # not a trial's: must stay
    ray.get(bystander.ready(), timeout=60)
    recorder = Recorder()
    try:
        tuner = tune.Tuner(
            tune.with_resources(_leaky_or_training, {"CPU": 0.01}),
            param_space={"step": tune.grid_search([0, 1]), "storage": str(tmp_path / "train")},
            tune_config=tune.TuneConfig(max_concurrent_trials=1),
            run_config=tune.RunConfig(name="leak", storage_path=str(tmp_path / "tune"), verbose=0,
                                      callbacks=[recorder, placement.PlacementGroupCleanup()]),
        )
        results = tuner.fit()
        assert results.num_errors == 0, [str(r.error).splitlines()[-1] for r in results if r.error]
        assert sorted(kind for kind, _ in recorder.ends) == ["complete", "complete"]
        trained = [r for r in results if r.config["step"] == 1][0]
        assert trained.metrics["found_own_group"] is True  # the lookup ties a real Train run's group to its trial
        leaked = [g for g in placement.read_groups() if g.bundles == ({"CPU": 1.5},)]
        assert leaked and all(g.state == "REMOVED" for g in leaked)
        assert _state(bystander) == "CREATED"
    finally:
        remove_placement_group(bystander)
        for g in placement.read_groups():  # whatever a failed run left, so the next test has its CPUs
            if g.state != "REMOVED" and g.bundles == ({"CPU": 1.5},):
                remove_placement_group(ray.util.placement_group.PlacementGroup(ray.PlacementGroupID.from_hex(g.id)))


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_a_worker_group_that_cannot_be_placed_fails_its_trial_with_one_line_and_the_sweep_ends(local_ray, tmp_path):
    import ray
    from ray import tune
    from ray.util.placement_group import placement_group, remove_placement_group

    from orchestrator import cluster
    from orchestrator.runners import train_driver_fn

    holder = placement_group([{"CPU": 1.5}])  # held by the test's driver, not by an ended trial: it stays
    ray.get(holder.ready(), timeout=60)
    recorder = Recorder()
    resources = cluster.TrialResources(2, 0.5, 0, 1, start_timeout_s=8)
    try:
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(train_driver_fn, resources=resources, metric="val_loss",
                                                     mode="min", storage=str(tmp_path)), {"CPU": 0.01}),
            param_space={"never": "read: the workers are never placed"},
            run_config=tune.RunConfig(name="unplaced", storage_path=str(tmp_path / "tune"), verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=1),
                                      callbacks=[recorder, placement.PlacementGroupCleanup()]),
        )
        results = tuner.fit()
        assert [kind for kind, _ in recorder.ends] == ["recover", "error"]  # retried once, then reported failed
        error = str(results[0].error)
        line = next((x for x in error.splitlines() if placement.TIMEOUT_ENV in x), error)
        assert f"train-{recorder.ends[0][1]}: its 2 workers" in line, line
        for part in ("2 x {CPU: 0.5}", f"{placement.TIMEOUT_ENV}=8s", f"placement group {holder.id.hex()[:12]} "
                     "(1 x {CPU: 1.5}) made by the driver of job", "free now: CPU "):
            assert part in line, (part, line)
        assert _state(holder) == "CREATED"  # not a trial's group: left alone
    finally:
        remove_placement_group(holder)
