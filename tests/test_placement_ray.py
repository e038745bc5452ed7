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
              _group("gone", "ctlA", state="REMOVED", bundles=({"CPU": 2},))]
    holders = describe_holders({"CPU": 0.5}, actors, groups, run_of={"trialA": "train-aaa"}.get)
    assert holders == [
        "group big-group-id (2 x {CPU: 0.9}) of train-aaa's TrainController (dead)",
        "Hog actor loose ({CPU: 0.25})",
        "group small (1 x {CPU: 0.1}) of TrainController ctlB (alive) of ImplicitFunc trialB (alive)",
        "group tune-own (1 x {CPU: 0.01}) of job 01000000's driver",
    ]


def test_tunes_own_group_for_a_trial_is_named_by_its_trial():
    actors = dict(ACTORS, trialA=_actor("trialA", "ImplicitFunc", "wA", "driver", group="tune-own"))
    holders = describe_holders({"CPU": 1}, actors, [_group("tune-own", "", bundles=({"CPU": 0.01},))],
                               run_of={"trialA": "train-aaa"}.get)
    assert holders == ["group tune-own (1 x {CPU: 0.01}) of Tune for train-aaa"]


def test_the_unplaced_line_is_one_line_naming_the_wait_the_bound_and_the_holders():
    holders = ["group 123456789abc (1 x {CPU: 1.9}) of job 01000000's driver"]
    line = unplaced_line("train-abc", 2, {"CPU": 0.995}, 7.5, {"CPU": 0.01}, {"CPU": 2.0}, holders)
    assert "\n" not in line
    for part in ("train-abc", "2 x {CPU: 0.995}", "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S=7.5s",
                 "CPU 0.01 of 2", holders[0], "--max-concurrent"):
        assert part in line, part


def test_the_unplaced_line_keeps_within_its_limit_by_counting_the_smallest_holders():
    holders = [f"group {i:012d} (2 x {{CPU: 0.995}}) of train-trial_{i:05d}'s TrainController (dead)" for i in range(9)]
    line = unplaced_line("train-abc", 2, {"CPU": 0.995}, 120, {"CPU": 0}, {"CPU": 2}, holders)
    assert len(line) <= placement.LINE_LIMIT and holders[0] in line and holders[-1] not in line
    shown = sum(h in line for h in holders)
    assert f" and {9 - shown} more;" in line and line.endswith("--num-workers")
    assert "nothing Ray can name" in unplaced_line("train-abc", 1, {"CPU": 1}, 5, {}, {}, [])


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


class TrainController:
    """Named as Ray Train's controller (Ray records the class's qualified name), which is how the lookup
    knows a Train run's groups. Its group outlives it, as a real controller's does when Ray's cleaner
    misses it: a group is removed only when its creating actor and its job are both gone."""

    def hold(self, cpus):
        import ray
        from ray.util.placement_group import placement_group

        group = placement_group([{"CPU": cpus}])
        ray.get(group.ready(), timeout=120)


def _leaky_or_training(config):
    """Step 0 leaves a placement group behind as Ray's bug does: made by a TrainController that this
    trial's actor started, and outliving both. Step 1 then runs a real Train run
    that needs those CPUs, and its workers report whether the lookup finds their own group."""
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    if config["step"] == 0:
        ray.get(ray.remote(num_cpus=0)(TrainController).remote().hold.remote(1.5))
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
    from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group

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
                remove_placement_group(PlacementGroup(ray.PlacementGroupID.from_hex(g.id)))


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
        held = f"group {holder.id.hex()[:12]} (1 x {{CPU: 1.5}}) of job"
        for part in ("2 x {CPU: 0.5}", f"{placement.TIMEOUT_ENV}=8s", held, "(free: CPU "):
            assert part in line, (part, line)
        assert f"Tune for train-{recorder.ends[0][1]}" not in line  # its own trial's group holds nothing it waits for
        assert _state(holder) == "CREATED"  # not a trial's group: left alone
    finally:
        remove_placement_group(holder)
