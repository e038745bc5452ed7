"""Connecting to Ray, and turning the cluster's resources into the shape of one trial.

`plan_resources` is a pure function of the resources Ray reports, so the arithmetic that keeps a
2-CPU laptop from hanging and fills an 8-GPU node is tested without a cluster. It also refuses a
plan that cannot run, with the largest `--num-workers` that would:
  - CPU workers share the CPUs fractionally (2 workers on 2 CPUs get 0.995 each, ARCHITECTURE.md's
    resource facts), but never below MIN_CPUS_PER_WORKER: 64 DDP processes on 2 cores would each wait
    on all-reduces with peers that are not scheduled, and start 64 torch processes for one trial;
  - every worker process needs about WORKER_MEMORY_BYTES of host memory, against the `memory` Ray
    reports for tasks (its total minus the object store); concurrent trials are limited by it too.
"""

from __future__ import annotations

import math
import os
import socket
from dataclasses import dataclass

from trainables.errors import UserError

DRIVER_CPUS = 0.01  # a trial's driver only builds a TorchTrainer and waits
MIN_CPUS_PER_WORKER = 0.25  # at most four DDP processes per core
# One worker process's peak host memory, estimated for small models: measured 1.1 GiB RSS for resnet18
# at 64 px, batch 64, with torch, timm and ray imported (resnet50 at 112 px: 2.7 GiB). Larger models need
# more, so it refuses only plans that surely cannot fit; it reserves nothing in Ray's scheduler.
WORKER_MEMORY_BYTES = int(1.5 * 2**30)
GIB = 2**30
# Trials whose workers cannot be placed fail after this long instead of waiting forever.
os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "120")
os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")  # worker prints would appear twice
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0 the legacy reporter prints nothing; we print progress


@dataclass(frozen=True)
class TrialResources:
    num_workers: int
    cpus_per_worker: float
    gpus_per_worker: float
    max_concurrent: int

    @property
    def use_gpu(self) -> bool:
        return self.gpus_per_worker > 0

    def describe(self) -> str:
        unit = f"{self.gpus_per_worker:g} GPU + {self.cpus_per_worker:g} CPU" if self.use_gpu else f"{self.cpus_per_worker:g} CPU"
        return f"{self.num_workers} DDP workers x ({unit}) per trial, up to {self.max_concurrent} trials at once"


def check_shape_options(num_workers: int | None, gpus_per_worker: float | None, max_concurrent: int | None) -> None:
    """The options' own sanity, checkable before any cluster exists."""
    if num_workers is not None and num_workers < 1:
        raise UserError(f"--num-workers must be at least 1, got {num_workers}")
    if max_concurrent is not None and max_concurrent < 1:
        raise UserError(f"--max-concurrent must be at least 1, got {max_concurrent}")
    if gpus_per_worker is not None and not (math.isfinite(gpus_per_worker) and gpus_per_worker >= 0):
        raise UserError(f"--gpus-per-worker cannot be negative or non-finite, got {gpus_per_worker}: "
                        "pass 0 for CPU workers, or a number of GPUs such as 1")


def plan_resources(
    total: dict[str, float],
    num_workers: int | None = None,
    gpus_per_worker: float | None = None,
    max_concurrent: int | None = None,
    default_workers: int = 2,
    largest_node: dict[str, float] | None = None,
) -> TrialResources:
    """Shape each trial from the cluster's totals (as `ray.cluster_resources()` reports them: `CPU`,
    `GPU`, and `memory` in bytes; without `memory` the memory is not checked)."""
    cpus, gpus = float(total.get("CPU", 0)), float(total.get("GPU", 0))
    memory = float(total.get("memory", 0))
    check_shape_options(num_workers, gpus_per_worker, max_concurrent)
    gpw = (1.0 if gpus >= 1 else 0.0) if gpus_per_worker is None else float(gpus_per_worker)
    if gpw > 0:
        workers = num_workers or (max(1, min(default_workers, int(gpus // gpw))) if gpus >= gpw else default_workers)
        need = workers * gpw
        if need > gpus + 1e-9:
            raise UserError(
                f"one trial needs {need:g} GPUs ({workers} workers x {gpw:g}) but the cluster has {gpus:g}: "
                "lower --num-workers or --gpus-per-worker"
            )
        fit = int(gpus // need)
    else:
        workers = num_workers or default_workers
        check_cpu_share(cpus, workers, memory)
        fit = max(1, int(cpus // workers))
    if memory:
        check_memory(memory, workers, cpus if gpw == 0 else None)
        fit = min(fit, int(memory // (workers * WORKER_MEMORY_BYTES)))
    concurrent = min(max_concurrent or fit, fit)
    # Every worker gets an equal share of what the concurrent trials' drivers leave over.
    cpw = (cpus - DRIVER_CPUS * concurrent) / (workers * concurrent)
    if gpw > 0:
        cpw = max(1.0, min(8.0, math.floor(cpw)))
    elif largest_node is not None and largest_node.get("CPU"):
        cpw = min(cpw, float(largest_node["CPU"]))  # one worker runs on one node: a larger share is never placed
    cpw = round(cpw, 3)
    if cpw <= 0 or workers * concurrent * cpw + DRIVER_CPUS * concurrent > cpus + 1e-9:
        raise UserError(
            f"the cluster has {cpus:g} CPUs, too few for {concurrent} trial(s) of {workers} workers: "
            "lower --num-workers or --max-concurrent"
        )
    if largest_node is not None and gpw > float(largest_node.get("GPU", 0)) + 1e-9:
        raise UserError(f"no node has {gpw:g} GPUs for one worker: lower --gpus-per-worker")
    if largest_node is not None and largest_node.get("memory") and float(largest_node["memory"]) < WORKER_MEMORY_BYTES:
        raise UserError(f"no node has the {WORKER_MEMORY_BYTES / GIB:g} GiB of memory one worker needs (the largest "
                        f"has {float(largest_node['memory']) / GIB:.1f} GiB for tasks): add a node with more memory")
    return TrialResources(workers, cpw, gpw, concurrent)


def max_workers(cpus: float, memory: float, cpu_workers: bool = True) -> int:
    """The most workers one trial can have: each with MIN_CPUS_PER_WORKER (CPU workers) and
    WORKER_MEMORY_BYTES (when `memory` is reported)."""
    limits = [int(memory // WORKER_MEMORY_BYTES)] if memory else []
    if cpu_workers:
        limits.append(int(max(0.0, cpus - DRIVER_CPUS) / MIN_CPUS_PER_WORKER + 1e-9))
    return min(limits) if limits else 0


def _fix(largest: int) -> str:
    if largest < 1:
        return (f"not even one worker fits ({MIN_CPUS_PER_WORKER:g} CPU and {WORKER_MEMORY_BYTES / GIB:g} GiB each): "
                "connect to a larger cluster with --address")
    return f"the largest --num-workers that fits is {largest} (pass --num-workers {largest})"


def check_cpu_share(cpus: float, workers: int, memory: float = 0.0) -> None:
    """Refuse CPU workers whose share of the CPUs would be under MIN_CPUS_PER_WORKER."""
    share = (cpus - DRIVER_CPUS) / workers
    if share + 1e-9 < MIN_CPUS_PER_WORKER:
        raise UserError(f"the cluster has {cpus:g} CPUs, too few for {workers} DDP workers per trial: each would "
                        f"get {max(share, 0):.3g} CPU, under the {MIN_CPUS_PER_WORKER:g} a worker needs; "
                        f"{_fix(max_workers(cpus, memory))}")


def check_memory(memory: float, workers: int, cpus: float | None = None) -> None:
    """Refuse a trial whose workers need more memory than the cluster reports for tasks. `cpus` is
    given for CPU workers, so the suggested --num-workers also respects their CPU share."""
    need = workers * WORKER_MEMORY_BYTES
    if need > memory:
        largest = max_workers(cpus or 0.0, memory, cpu_workers=cpus is not None)
        raise UserError(f"one trial of {workers} workers needs about {need / GIB:.1f} GiB of memory "
                        f"({WORKER_MEMORY_BYTES / GIB:g} GiB each), but the cluster has {memory / GIB:.1f} GiB "
                        f"for tasks; {_fix(largest)}")


def check_reachable(address: str, timeout: float = 3.0) -> None:
    """ray.init retries an unreachable address for minutes; a TCP connect answers in seconds."""
    if address in ("auto", "local"):
        return
    host_port = address.split("://", 1)[-1].rstrip("/")
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"Ray address '{address}' is not host:port (or ray://host:port): fix --address or RAY_ADDRESS")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise UserError(f"no Ray cluster answers at {address} ({err.strerror or err}): start it with "
                        "`ray start --head`, or fix --address / RAY_ADDRESS") from None


def connect(address: str | None) -> None:
    """Start a local Ray (address None) or attach to a running cluster, with a one-line error."""
    import ray

    if ray.is_initialized():
        return
    target = address or os.environ.get("RAY_ADDRESS")
    if target:
        check_reachable(target)
    # Workers' own output stays in Ray's log folder unless asked for: the driver prints progress.
    show = os.environ.get("FACE_ORCHESTRATOR_WORKER_LOGS", "0") not in ("", "0", "false")
    kwargs = dict(logging_level="ERROR", log_to_driver=show, configure_logging=True)
    try:
        if target:
            os.environ.setdefault("RAY_AUTH_MODE", "token")
            ray.init(address=target, **kwargs)
        else:
            ray.init(address="local", include_dashboard=True, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as err:
        where = target or "a local Ray"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"cannot connect to Ray at {where}: {first}; start one with `ray start --head` or fix --address "
            "(token auth needs RAY_AUTH_MODE=token and the cluster's token in ~/.ray/auth_token)"
        ) from None


def cluster_totals() -> tuple[dict[str, float], dict[str, float]]:
    """(total resources, the largest node's resources) of the connected cluster."""
    import ray

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    largest = max(nodes, key=lambda r: (r.get("GPU", 0), r.get("CPU", 0)), default={})
    return dict(ray.cluster_resources()), largest


def node_count() -> int:
    import ray

    return sum(1 for n in ray.nodes() if n.get("Alive"))
