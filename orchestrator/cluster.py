"""Connecting to Ray, and turning the cluster's resources into the shape of one trial.

`plan_resources` is a pure function of the resources Ray reports for each node, so the arithmetic
that keeps a 2-CPU laptop from hanging, spreads one trial over two small nodes and fills an 8-GPU
node is tested without a cluster. It plans node by node (a worker runs whole on one node, and a plan
that fits the cluster's totals may not fit its nodes), and refuses a plan that cannot run, with the
largest `--num-workers` that would:
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
import sys
from dataclasses import dataclass, field

from orchestrator.local_ray import START_TIMED_OUT, START_TRIES, start_local_ray
from trainables.config_values import FALSE_WORDS
from trainables.errors import UserError

DRIVER_CPUS = 0.01  # a trial's driver only builds a TorchTrainer and waits
MIN_CPUS_PER_WORKER = 0.25  # at most four DDP processes per core
# One worker process's peak host memory, estimated for small models: measured 1.1 GiB RSS for resnet18
# at 64 px, batch 64, with torch, timm and ray imported (resnet50 at 112 px: 2.7 GiB). Larger models need
# more, so it refuses only plans that surely cannot fit; it reserves nothing in Ray's scheduler.
WORKER_MEMORY_BYTES = int(1.5 * 2**30)
GIB = 2**30
# Trials whose workers cannot be placed fail after this long instead of waiting forever. The driver's
# value travels with each trial's TrialResources (a cluster's nodes do not share the driver's environment).
START_TIMEOUT_ENV = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"
os.environ.setdefault(START_TIMEOUT_ENV, "120")
os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")  # worker prints would appear twice
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0 the legacy reporter prints nothing; we print progress
# Ray Train 2.60 starts a preemption watcher, one more actor process, for every trial, so that a run can react
# when an autoscaler announces it will drain a node. Nothing drains a local Ray's one machine, and on 2 cores
# each trial paid for the process (benchmarks/trial_overhead.py): a local Ray starts without it.
PREEMPTION_WATCHER_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"
# How often a trial's Train controller polls its workers, in seconds (Ray's default: 2). The poll is how it
# learns that training ended and collects each epoch's report for Tune, so on a local Ray a trial waited up to
# 2 s to end and an ASHA stop came up to 2 s late; a poll of two workers costs a few milliseconds.
POLL_ENV, LOCAL_POLL_S = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5"
# "1" in every process of a Ray this project starts: its trials send no autoscaler requests (local_scaling.py).
LOCAL_RAY_ENV = "FACE_ORCHESTRATOR_LOCAL_RAY"


def local_ray_env() -> None:
    """Settings a local Ray's processes inherit: set before it starts (the user's own values win)."""
    os.environ.setdefault(PREEMPTION_WATCHER_ENV, "0")
    os.environ.setdefault(POLL_ENV, LOCAL_POLL_S)
    os.environ.setdefault(LOCAL_RAY_ENV, "1")


@dataclass(frozen=True)
class TrialResources:
    num_workers: int
    cpus_per_worker: float
    gpus_per_worker: float
    max_concurrent: int
    nodes_per_trial: int = 1  # the fewest nodes one trial's workers can be packed onto
    # How long a trial's workers may wait to be placed before the trial fails (read in the driver).
    start_timeout_s: float = field(default_factory=lambda: start_timeout_s())

    @property
    def use_gpu(self) -> bool:
        return self.gpus_per_worker > 0

    def describe(self) -> str:
        unit = f"{self.gpus_per_worker:g} GPU + {self.cpus_per_worker:g} CPU" if self.use_gpu else f"{self.cpus_per_worker:g} CPU"
        workers = f"{self.num_workers} DDP workers" if self.num_workers > 1 else "1 worker"
        at_once = "one trial at a time" if self.max_concurrent == 1 else f"up to {self.max_concurrent} trials at once"
        text = f"{workers} x ({unit}) per trial, {at_once}"
        if self.nodes_per_trial > 1:
            text += f"; each trial's workers span {self.nodes_per_trial} nodes"
        if 0 < self.gpus_per_worker < 1:
            text += f"; {int(1 / self.gpus_per_worker + 1e-9)} trials' workers share each GPU"
        return text


def start_timeout_s() -> float:
    """The bound on a worker group's wait for its resources, from RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S."""
    text = os.environ.get(START_TIMEOUT_ENV, "120")
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value > 0):
        raise UserError(f"{START_TIMEOUT_ENV}={text!r} is not a positive number of seconds: "
                        "unset it (120 s) or fix it")
    return value


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
    nodes: list[dict[str, float]] | dict[str, float],
    num_workers: int | None = None,
    gpus_per_worker: float | None = None,
    max_concurrent: int | None = None,
    default_workers: int = 2,
) -> TrialResources:
    """Shape each trial from the resources of each alive node (as `ray.nodes()` reports them: `CPU`, `GPU`,
    and `memory` in bytes; without `memory` the memory is not checked). A single dict is one node.

    Ray places each worker whole on one node, so the plan is packed node by node: the CPU share is
    the largest that lets every concurrent trial's workers fit the nodes (rounded down, never up), and
    each node keeps the drivers' CPUs free.
    """
    nodes = [nodes] if isinstance(nodes, dict) else [n for n in nodes if n.get("CPU", 0) or n.get("GPU", 0)]
    cpus, gpus = _sum(nodes, "CPU"), _sum(nodes, "GPU")
    memory = _sum(nodes, "memory")
    check_shape_options(num_workers, gpus_per_worker, max_concurrent)
    gpw = (1.0 if gpus >= 1 else 0.0) if gpus_per_worker is None else float(gpus_per_worker)
    if gpw > 0:
        if gpw > max((n.get("GPU", 0) for n in nodes), default=0) + 1e-9 and gpus >= gpw:
            raise UserError(f"no node has {gpw:g} GPUs for one worker: lower --gpus-per-worker")
        gpu_slots = [int(n.get("GPU", 0) / gpw + 1e-9) for n in nodes]
        if num_workers:
            workers = num_workers
        elif gpus < gpw:  # no GPU to plan with: the refusal below names the sweep's own shape
            workers = default_workers
        else:  # whole GPUs: one per worker; a fraction packs trials, not one trial's workers
            workers = max(1, min(default_workers, int(gpus / gpw + 1e-9))) if gpw >= 1 else 1
        if workers > 1 and gpw < 1:
            raise UserError(f"with --gpus-per-worker {gpw:g}, the {workers} workers of one trial would share a GPU, "
                            "which NCCL refuses: use --num-workers 1 to pack trials onto each GPU instead, "
                            "or --gpus-per-worker 1")
        if workers > sum(gpu_slots):
            raise UserError(f"one trial needs {workers * gpw:g} GPUs ({workers} workers x {gpw:g}) but the cluster "
                            f"has {gpus:g}: lower --num-workers or --gpus-per-worker")
        fit = sum(gpu_slots) // workers
    else:
        gpu_slots = [None] * len(nodes)
        workers = num_workers or default_workers
        check_cpu_share(cpus, workers, memory)
        fit = max(1, sum(int(n.get("CPU", 0) + 1e-9) for n in nodes) // workers)
    memory_slots = [int(n["memory"] // WORKER_MEMORY_BYTES) if n.get("memory") else None for n in nodes]
    if memory:
        check_memory(memory, workers, cpus if gpw == 0 else None)
        if not any(memory_slots):
            largest = max(n.get("memory", 0) for n in nodes)
            raise UserError(f"no node has the {WORKER_MEMORY_BYTES / GIB:g} GiB of memory one worker needs (the largest "
                            f"has {largest / GIB:.1f} GiB for tasks): add a node with more memory")
        fit = min(fit, sum(s for s in memory_slots if s is not None) // workers)
    concurrent = max(1, min(max_concurrent or fit, fit))
    limits = [_min_limit(g, m) for g, m in zip(gpu_slots, memory_slots)]
    share = _largest_share([n.get("CPU", 0) for n in nodes], limits, workers * concurrent, DRIVER_CPUS * concurrent)
    if gpw > 0:
        share = min(8.0, math.floor(share + 1e-9))
    share = math.floor(share * 1000 + 1e-6) / 1000  # rounded down: a share rounded up may no longer fit a node
    if share < (1.0 if gpw > 0 else MIN_CPUS_PER_WORKER) - 1e-9:
        unit = "1 CPU per GPU worker" if gpw > 0 else f"{MIN_CPUS_PER_WORKER:g} CPU per worker"
        raise UserError(
            f"the cluster's {len(nodes)} node(s) with {cpus:g} CPUs cannot hold {concurrent} trial(s) of {workers} "
            f"workers at {unit} (a worker runs whole on one node): lower --num-workers or --max-concurrent"
        )
    spans = _nodes_spanned([n.get("CPU", 0) for n in nodes], limits, workers, share, DRIVER_CPUS * concurrent)
    return TrialResources(workers, share, gpw, concurrent, spans)


def _sum(nodes: list[dict[str, float]], key: str) -> float:
    return float(sum(n.get(key, 0) for n in nodes))


def _min_limit(*limits: int | None) -> int | None:
    given = [x for x in limits if x is not None]
    return min(given) if given else None


def _slots(cpus: float, limit: int | None, share: float, reserve: float) -> int:
    """How many workers of `share` CPUs fit one node, after `reserve` CPUs for trial drivers."""
    fit = int((cpus - reserve) / share + 1e-9) if share > 0 and cpus > reserve else 0
    return fit if limit is None else min(fit, limit)


def _largest_share(cpus: list[float], limits: list[int | None], needed: int, reserve: float) -> float:
    """The largest per-worker CPU share with which `needed` workers fit the nodes (0 when none does).
    It is always some node's free CPUs divided by a whole number of workers."""
    candidates = sorted({(c - reserve) / k for c in cpus if c > reserve for k in range(1, needed + 1)}, reverse=True)
    for share in candidates:
        if sum(_slots(c, limit, share, reserve) for c, limit in zip(cpus, limits)) >= needed:
            return share
    return 0.0


def _nodes_spanned(cpus: list[float], limits: list[int | None], workers: int, share: float, reserve: float) -> int:
    """The fewest nodes one trial's workers can be packed onto."""
    slots = sorted((_slots(c, limit, share, reserve) for c, limit in zip(cpus, limits)), reverse=True)
    placed = 0
    for count, node_slots in enumerate(slots, 1):
        placed += node_slots
        if placed >= workers:
            return count
    return len(slots)


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


def address_to_dial(address: str | None) -> str | None:
    """The cluster a command will attach to (--address, else RAY_ADDRESS), or None where it starts a local
    Ray, or where this process is attached already (as a test session may be) and dials nothing."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return None
    return address or os.environ.get("RAY_ADDRESS") or None


def connect(address: str | None) -> None:
    """Start a local Ray (address None) or attach to a running cluster, with a one-line error."""
    import ray

    if ray.is_initialized():
        return
    target = address_to_dial(address)
    if target:
        check_reachable(target)
    kwargs = dict(logging_level="ERROR", log_to_driver=worker_logs_shown(), configure_logging=True)
    if address and "RAY_JOB_CONFIG_JSON_ENV_VAR" not in os.environ:
        # Workers on other nodes do not inherit this shell: they get its AWS_* variables through the job's
        # runtime env (held by Ray, never written to the storage or MLflow). A submitted job's own
        # runtime_env.yaml says what it passes instead.
        env = store_env(os.environ)
        if env:
            kwargs["runtime_env"] = {"env_vars": env}
    try:
        if target:
            os.environ.setdefault("RAY_AUTH_MODE", "token")
            ray.init(address=target, **kwargs)
        else:
            local_ray_env()
            start_local_ray(dict(kwargs, address="local", include_dashboard=dashboard_wanted()))
    except Exception as err:  # noqa: BLE001  Ray raises a bare Exception when a local node times out starting
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if target:
            raise UserError(
                f"cannot connect to Ray at {target}: {first}; start one with `ray start --head` or fix --address "
                "(token auth needs RAY_AUTH_MODE=token and the cluster's token in ~/.ray/auth_token)"
            ) from None
        if START_TIMED_OUT in first:
            first = f"it did not start within Ray's 30 s, {START_TRIES} times"
        raise UserError(f"a local Ray could not start: {first}; run the command again when the machine is less "
                        "busy, or start Ray with `ray start --head` and pass --address") from None


def dashboard_wanted() -> bool:
    """A local Ray starts without its dashboard (about 4 CPU-seconds a minute, idle or not, that a sweep's
    trials would otherwise have) unless FACE_ORCHESTRATOR_RAY_DASHBOARD is set: then it serves at
    http://127.0.0.1:8265. A cluster's dashboard is the cluster's own affair (`ray start`)."""
    return _flag("FACE_ORCHESTRATOR_RAY_DASHBOARD")


def _flag(name: str) -> bool:
    """An on/off environment variable: off when unset, empty or spelled as a config value's false."""
    return os.environ.get(name, "").strip().lower() not in ("", *FALSE_WORDS)


def worker_logs_shown() -> bool:
    """Workers' own output stays in Ray's log folder unless asked for: the driver prints progress."""
    return _flag("FACE_ORCHESTRATOR_WORKER_LOGS")


def disconnect() -> None:
    """At a command's end: stop the local Ray this process started, or leave the cluster it joined. Ray's own
    exit handler does the same after waiting 0.5 s for the workers' last log lines to reach the console,
    which only matters when they are shown."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized() and not worker_logs_shown():
        ray.shutdown()


def store_env(environ) -> dict[str, str]:
    """The object store's endpoint, credentials and retry budget from this environment (AWS_*, and
    FACE_ORCHESTRATOR_STORE_RETRY_S), as the workers of a cluster need them."""
    return {k: v for k, v in environ.items() if k.startswith("AWS_") or k == "FACE_ORCHESTRATOR_STORE_RETRY_S"}


def cluster_nodes() -> list[dict[str, float]]:
    """The resources of each alive node of the connected cluster."""
    import ray

    return [dict(n.get("Resources", {})) for n in ray.nodes() if n.get("Alive")]


def node_count() -> int:
    import ray

    return sum(1 for n in ray.nodes() if n.get("Alive"))
