"""Trial shapes derived from cluster resources: never more than the cluster has, never a hang."""

import os

import pytest

from orchestrator.cluster import DRIVER_CPUS, plan_resources
from trainables.errors import UserError


def _fits(plan, total):
    cpus = plan.max_concurrent * (plan.num_workers * plan.cpus_per_worker + DRIVER_CPUS)
    gpus = plan.max_concurrent * plan.num_workers * plan.gpus_per_worker
    return cpus <= total.get("CPU", 0) + 1e-9 and gpus <= total.get("GPU", 0) + 1e-9


def test_two_cpu_laptop_runs_one_trial_of_two_workers():
    total = {"CPU": 2.0}
    plan = plan_resources(total)
    assert (plan.num_workers, plan.max_concurrent, plan.gpus_per_worker) == (2, 1, 0)
    assert _fits(plan, total) and plan.cpus_per_worker > 0.9


def test_many_cpus_run_trials_side_by_side():
    total = {"CPU": 16.0}
    plan = plan_resources(total)
    assert plan.max_concurrent == 8 and _fits(plan, total)
    assert plan_resources(total, max_concurrent=2).max_concurrent == 2


def test_gpu_cluster_uses_one_gpu_per_worker_and_fills_it():
    total = {"CPU": 64.0, "GPU": 8.0}
    plan = plan_resources(total)
    assert plan.use_gpu and plan.num_workers == 2 and plan.max_concurrent == 4 and _fits(plan, total)
    plan = plan_resources(total, num_workers=4, max_concurrent=10)
    assert plan.max_concurrent == 2 and _fits(plan, total)
    plan = plan_resources(total, gpus_per_worker=0.5)
    assert plan.num_workers == 1 and plan.max_concurrent == 16 and _fits(plan, total)


def test_gpus_can_be_ignored_on_a_gpu_cluster():
    plan = plan_resources({"CPU": 8.0, "GPU": 2.0}, gpus_per_worker=0)
    assert not plan.use_gpu and plan.max_concurrent == 4


@pytest.mark.parametrize("kwargs,fragment", [
    ({"num_workers": 0}, "--num-workers must be at least 1"),
    ({"max_concurrent": 0}, "--max-concurrent must be at least 1"),
    ({"gpus_per_worker": 1.0}, "needs 2 GPUs"),
    ({"gpus_per_worker": float("nan")}, "--gpus-per-worker cannot be negative or non-finite, got nan"),
    ({"gpus_per_worker": -1.0}, "--gpus-per-worker cannot be negative"),
])
def test_impossible_shapes_fail_with_the_fix(kwargs, fragment):
    with pytest.raises(UserError, match=fragment):
        plan_resources({"CPU": 2.0}, **kwargs)


def test_more_workers_than_cores_share_them_fractionally():
    plan = plan_resources({"CPU": 2.0}, num_workers=3)
    assert plan.max_concurrent == 1 and plan.cpus_per_worker < 1 and _fits(plan, {"CPU": 2.0})
    with pytest.raises(UserError, match="too few"):
        plan_resources({"CPU": 0.005})


def test_a_worker_larger_than_any_node_is_refused():
    nodes = [{"CPU": 4, "GPU": 1}] * 4
    with pytest.raises(UserError, match="no node has 2 GPUs"):
        plan_resources(nodes, gpus_per_worker=2, num_workers=1)


GIB = 2**30


@pytest.mark.parametrize("total,workers,fix", [
    ({"CPU": 2.0}, 64, "--num-workers 7"),                       # 0.031 CPU each; 7 x 0.284 is the most that fits
    ({"CPU": 2.0}, 8, "--num-workers 7"),                        # 0.249 CPU each: just under the floor
    ({"CPU": 2.0, "memory": 4 * GIB}, 64, "--num-workers 2"),    # the fix also respects memory
    ({"CPU": 0.2}, 1, "not even one worker fits"),
])
def test_workers_with_too_small_a_cpu_share_are_refused_with_the_largest_that_fits(total, workers, fix):
    from orchestrator.cluster import MIN_CPUS_PER_WORKER

    with pytest.raises(UserError, match="too few") as err:
        plan_resources(total, num_workers=workers)
    assert fix in str(err.value) and f"under the {MIN_CPUS_PER_WORKER:g}" in str(err.value)
    assert "\n" not in str(err.value)


def test_the_largest_suggested_worker_count_does_plan():
    plan = plan_resources({"CPU": 2.0}, num_workers=7)
    assert plan.cpus_per_worker >= 0.25 and _fits(plan, {"CPU": 2.0})


def test_more_workers_than_memory_allows_are_refused_with_the_largest_that_fits():
    from orchestrator.cluster import WORKER_MEMORY_BYTES

    total = {"CPU": 16.0, "memory": 5 * WORKER_MEMORY_BYTES + 1}
    assert plan_resources(total, num_workers=5).num_workers == 5
    with pytest.raises(UserError, match=r"needs about 9\.0 GiB .* the largest --num-workers that fits is 5"):
        plan_resources(total, num_workers=6)
    with pytest.raises(UserError, match="not even one worker fits"):
        plan_resources({"CPU": 16.0, "memory": 0.5 * GIB}, num_workers=1)


def test_memory_bounds_gpu_workers_and_concurrent_trials_too():
    with pytest.raises(UserError, match="the largest --num-workers that fits is 2"):
        plan_resources({"CPU": 64.0, "GPU": 8.0, "memory": 4 * GIB}, num_workers=8)
    plan = plan_resources({"CPU": 16.0, "memory": 6.5 * GIB})  # 2 workers x 1.5 GiB: two trials fit, not eight
    assert (plan.num_workers, plan.max_concurrent) == (2, 2) and _fits(plan, {"CPU": 16.0})
    plan = plan_resources({"CPU": 16.0, "memory": 64 * GIB})
    assert plan.max_concurrent == 8


def test_no_node_with_the_memory_of_one_worker_is_refused():
    with pytest.raises(UserError, match="no node has the 1.5 GiB"):
        plan_resources([{"CPU": 4.0, "memory": GIB}] * 8, num_workers=2)


def test_a_cpu_workers_share_never_exceeds_the_largest_node():
    plan = plan_resources([{"CPU": 4.0}, {"CPU": 4.0}], num_workers=1, max_concurrent=1)
    assert plan.cpus_per_worker == 3.99  # 7.99 would never be placed on a 4-CPU node; 4.0 leaves no room for the driver


def _placeable(plan, nodes):
    """Place every concurrent trial's workers greedily on the nodes, each node keeping the drivers' CPUs."""
    free = [n["CPU"] - DRIVER_CPUS * plan.max_concurrent for n in nodes]
    for _ in range(plan.num_workers * plan.max_concurrent):
        best = max(range(len(free)), key=free.__getitem__)
        if free[best] + 1e-9 < plan.cpus_per_worker:
            return False
        free[best] -= plan.cpus_per_worker
    return True


def test_four_workers_on_two_two_cpu_nodes_span_both():
    """4 x 0.998 + 0.01 > 4 was refused, and a plan from the totals alone would wait for a placement."""
    nodes = [{"CPU": 2.0, "memory": 8 * GIB}, {"CPU": 2.0, "memory": 8 * GIB}]
    plan = plan_resources(nodes, num_workers=4)
    assert (plan.num_workers, plan.max_concurrent, plan.nodes_per_trial) == (4, 1, 2)
    assert plan.cpus_per_worker == 0.995 and _placeable(plan, nodes)
    assert plan.describe() == "4 DDP workers x (0.995 CPU) per trial, one trial at a time; each trial's workers span 2 nodes"


@pytest.mark.parametrize("nodes,workers", [
    ([{"CPU": 2.0}, {"CPU": 2.0}], 3),
    ([{"CPU": 3.0}, {"CPU": 1.0}], 2),   # the totals' equal share (1.995) would not fit the 1-CPU node
    ([{"CPU": 1.0}] * 5, 4),
    ([{"CPU": 8.0}, {"CPU": 0.5}], 9),
])
def test_a_plan_always_fits_its_nodes_not_only_the_totals(nodes, workers):
    plan = plan_resources(nodes, num_workers=workers)
    assert _placeable(plan, nodes), plan


def test_a_share_is_rounded_down():
    plan = plan_resources({"CPU": 2.0}, num_workers=3)  # 1.99 / 3 = 0.66333...
    assert plan.cpus_per_worker == 0.663


def test_quarter_gpus_pack_four_trials_onto_one_gpu_and_say_so():
    plan = plan_resources([{"CPU": 16.0, "GPU": 1.0, "memory": 64 * GIB}], gpus_per_worker=0.25)
    assert (plan.num_workers, plan.max_concurrent, plan.gpus_per_worker) == (1, 4, 0.25)
    assert plan.cpus_per_worker == 3 and "4 trials' workers share each GPU" in plan.describe()
    with pytest.raises(UserError, match="NCCL refuses: use --num-workers 1"):
        plan_resources([{"CPU": 16.0, "GPU": 1.0}], gpus_per_worker=0.25, num_workers=2)


def test_gpu_workers_of_one_trial_spread_over_gpu_nodes():
    nodes = [{"CPU": 8.0, "GPU": 1.0}, {"CPU": 8.0, "GPU": 1.0}]
    plan = plan_resources(nodes, num_workers=2)
    assert (plan.max_concurrent, plan.nodes_per_trial, plan.cpus_per_worker) == (1, 2, 7)


def test_two_workers_on_two_cpus_still_share_them_with_memory_reported():
    total = {"CPU": 2.0, "memory": 16 * GIB, "object_store_memory": 4 * GIB}  # as ray.cluster_resources() reports
    plan = plan_resources(total)
    assert (plan.num_workers, plan.max_concurrent) == (2, 1) and plan.cpus_per_worker == 0.995


def test_the_pre_run_resource_check_refuses_64_workers_on_two_cpus(monkeypatch):
    """The preflight step plans from the nodes Ray reports (faked here, so no cluster is started)."""
    from orchestrator import cluster
    from orchestrator.preflight import Preflight
    from orchestrator.sweep import SweepOptions

    pre = Preflight(SweepOptions(name="celeba_backbones", smoke=True, num_workers=64))
    pre.check_sweep()
    monkeypatch.setattr(cluster, "cluster_nodes", lambda: [{"CPU": 2.0, "memory": 16 * GIB}])
    with pytest.raises(UserError, match="pass --num-workers 7"):
        pre.check_resources()
    pre.opts.num_workers = 2
    assert "2 DDP workers x (0.995 CPU)" in pre.check_resources()


def test_a_local_rays_environment_asks_train_for_a_half_second_poll_unless_the_user_set_one(monkeypatch):
    """Ray Train's controller learns that training ended, and collects each epoch's report for ASHA, only when
    it polls; its default of 2 s made every trial of a local sweep wait up to 2 s to end. (Ray Train passes
    this variable on from the trial's process to its controller; the change's effect was measured on the demo.)"""
    from orchestrator import cluster

    monkeypatch.delenv(cluster.POLL_ENV, raising=False)
    monkeypatch.delenv(cluster.PREEMPTION_WATCHER_ENV, raising=False)
    monkeypatch.delenv(cluster.LOCAL_RAY_ENV, raising=False)
    cluster.local_ray_env()
    assert os.environ[cluster.POLL_ENV] == "0.5" and os.environ[cluster.LOCAL_RAY_ENV] == "1"
    assert os.environ[cluster.PREEMPTION_WATCHER_ENV] == "0"
    monkeypatch.setenv(cluster.POLL_ENV, "3")
    cluster.local_ray_env()
    assert os.environ[cluster.POLL_ENV] == "3"


def test_a_local_rays_trials_keep_trains_fixed_policy_but_send_no_autoscaler_requests(monkeypatch):
    """On a local Ray (cluster.local_ray_env) the first trial's controller waited 2.6 s for Ray Data's
    AutoscalingCoordinator to start, with no autoscaler to tell; a cluster's trials keep asking."""
    import ray.train
    from ray.train.v2._internal.execution.scaling_policy import ResizeDecision
    from ray.train.v2._internal.execution.scaling_policy.fixed import FixedScalingPolicy

    from orchestrator import cluster, local_scaling

    stock = FixedScalingPolicy(ray.train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.99}))
    for name in (cluster.POLL_ENV, cluster.PREEMPTION_WATCHER_ENV):
        monkeypatch.setenv(name, os.environ.get(name, ""))  # local_ray_env sets them: undone after the test
    monkeypatch.delenv(cluster.LOCAL_RAY_ENV, raising=False)
    assert local_scaling.for_this_ray(stock) is stock  # attached to a cluster: Ray's own policy
    cluster.local_ray_env()
    local = local_scaling.for_this_ray(stock)
    assert type(local) is local_scaling.NoAutoscalerPolicy and local.scaling_config is stock.scaling_config
    # What the controller calls, in its order: none reaches for a coordinator (the stock policy would assert).
    local.after_controller_start(train_run_context=None)
    decision = local.make_decision_for_non_running_worker_group()
    assert isinstance(decision, ResizeDecision) and decision.num_workers == 2
    local.make_decision_for_running_worker_group(None, None)
    local.before_controller_abort()
    with pytest.raises(AssertionError):  # the stock policy, never started, needs the coordinator's client
        stock.make_decision_for_non_running_worker_group()


@pytest.mark.parametrize("value, started", [(None, False), ("0", False), ("off", False), ("1", True), ("true", True)])
def test_a_local_ray_starts_its_dashboard_only_when_asked(monkeypatch, value, started):
    """Ray's dashboard and its modules cost a local sweep about a tenth of its CPU (measured on the smoke sweep);
    FACE_ORCHESTRATOR_RAY_DASHBOARD=1 brings it back for a user who wants to watch the trials' actors."""
    import ray

    from orchestrator import cluster

    seen = {}
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: seen.update(kwargs))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    for name in (cluster.POLL_ENV, cluster.PREEMPTION_WATCHER_ENV, cluster.LOCAL_RAY_ENV):
        monkeypatch.setenv(name, os.environ.get(name, ""))  # local_ray_env sets them: undone after the test
    if value is None:
        monkeypatch.delenv("FACE_ORCHESTRATOR_RAY_DASHBOARD", raising=False)
    else:
        monkeypatch.setenv("FACE_ORCHESTRATOR_RAY_DASHBOARD", value)
    cluster.connect(None)
    assert seen["address"] == "local" and seen["include_dashboard"] is started
