"""Trial shapes derived from cluster resources: never more than the cluster has, never a hang."""

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
    plan = plan_resources(total, gpus_per_worker=0.5, num_workers=2)
    assert plan.max_concurrent == 8 and _fits(plan, total)


def test_gpus_can_be_ignored_on_a_gpu_cluster():
    plan = plan_resources({"CPU": 8.0, "GPU": 2.0}, gpus_per_worker=0)
    assert not plan.use_gpu and plan.max_concurrent == 4


@pytest.mark.parametrize("kwargs,fragment", [
    ({"num_workers": 0}, "--num-workers must be at least 1"),
    ({"max_concurrent": 0}, "--max-concurrent must be at least 1"),
    ({"gpus_per_worker": 1.0}, "needs 2 GPUs"),
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
    with pytest.raises(UserError, match="no node has 2 GPUs"):
        plan_resources({"CPU": 16, "GPU": 4}, gpus_per_worker=2, num_workers=1, largest_node={"CPU": 8, "GPU": 1})
