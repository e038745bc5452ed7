"""Where a command's CPU goes, by kind of process: run the test suite (or any command) under a /proc sampler.

The suite's wall time on 2 cores is its CPU time over two: both pytest-xdist processes keep the cores busy. So
the question for a faster suite is which processes spend that CPU: Ray Train's workers (our training function,
torch's and timm's imports), the chain of actors that Ray Tune and Ray Train start for every trial, Ray's own
processes (GCS, raylet, dashboard, agents), the CLI drivers the stories start, or the pytest processes.

Every SAMPLE_S seconds every process is read from /proc: its CPU (utime+stime) and its title (Ray renames a
worker when it becomes an actor, so the latest title wins). A process alive before the command started
counts only what it spent since. CPU a process spends after its last sample is not seen by the sampler; the
machine's busy time from /proc/stat, measured over the same span, gives the total, and `unattributed` is
the difference (it also holds whatever else ran on the machine).

    python benchmarks/suite_cpu.py                         # the README's test command
    python benchmarks/suite_cpu.py -- bash .ci/run         # any command; its own processes and children

The last line is

    wall_s=W busy_cpu_s=B train_workers=P% actor_chain=P% ray_system=P% drivers=P% pytest=P% other=P%

with each share of the machine's busy time.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import threading
import time
from collections import defaultdict

SAMPLE_S = 1.0
TICK = os.sysconf("SC_CLK_TCK")

# Kinds, in the order they are tried on a process's latest title; the first that matches names it.
KINDS = [
    ("train_workers", "Ray Train workers (RayTrainWorker)", r"^ray::RayTrainWorker"),
    ("actor_chain", "Tune's and Train's actors of each trial", r"^ray::(ImplicitFunc|TrainController|"
     r"PlacementGroupCleaner|SynchronizationActor|_QueueActor|_AutoscalingCoordinatorActor|TrainTrainable)"),
    ("serve", "Ray Serve (controller, proxies, replicas)", r"^ray::(Serve|ProxyActor|HTTPProxy)"),
    ("ray_idle", "Ray workers never given work (ray::IDLE)", r"^ray::IDLE"),
    ("ray_system", "Ray's own processes (GCS, raylet, dashboard, agents, monitors)",
     r"^ray::(DashboardAgent|RuntimeEnvAgent)|gcs_server|raylet|dashboard|log_monitor|runtime_env|ray/autoscaler|"
     r"ray/_private/(monitor|workers)|default_worker\.py"),
    ("ray_other_actor", "other Ray actors and tasks", r"^ray::"),
    ("drivers", "CLI drivers (python -m orchestrator)", r"-m orchestrator|orchestrator/__main__"),
    ("pytest", "pytest and its xdist workers (in-process tests)", r"pytest|import sys;exec|execnet"),
    ("mlflow", "MLflow servers", r"mlflow|uvicorn|gunicorn|huey"),
    ("s3", "the S3 server (moto)", r"moto"),
    ("browser", "Chromium", r"chrom"),
    ("pip", "pip (installing)", r"\bpip\b"),
]
SUMMARY = ("train_workers", "actor_chain", "ray_system", "drivers", "pytest")


def kind_of(title: str) -> str:
    for kind, _, pattern in KINDS:
        if re.search(pattern, title):
            return kind
    return "other"


def busy_ticks() -> int:
    """The machine's CPU time in use since boot (all cores), in clock ticks."""
    fields = [int(v) for v in open("/proc/stat").readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields[:8]) - idle


def read_stat(pid: str) -> tuple[float, str]:
    """(CPU seconds the process has spent, its start time in ticks since boot: with the pid, its identity).
    A zombie, ended but not yet reaped by its parent, still answers with all it spent."""
    with open(f"/proc/{pid}/stat") as handle:
        stat = handle.read()
    rest = stat[stat.rindex(")") + 2:].split()  # past the title, which may hold spaces and parentheses
    return (int(rest[11]) + int(rest[12])) / TICK, rest[19]


class Sampler:
    """Every process's CPU since the sampler started, by (pid, start time), with its latest title."""

    def __init__(self):
        self.first: dict[tuple[str, str], float] = {}
        self.last: dict[tuple[str, str], float] = {}
        self.title: dict[tuple[str, str], str] = {}
        self.me = str(os.getpid())
        self.stopped = threading.Event()
        self.sample(initial=True)

    def sample(self, initial: bool = False) -> None:
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or pid == self.me:
                continue
            try:
                cpu, started = read_stat(pid)
                key = (pid, started)
                with open(f"/proc/{pid}/cmdline", "rb") as handle:
                    title = handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except (OSError, ValueError, IndexError):
                continue  # ended while read
            self.first.setdefault(key, cpu if initial else 0.0)
            self.last[key] = cpu
            if title:
                self.title[key] = title[:200]

    def run(self) -> None:
        while not self.stopped.wait(SAMPLE_S):
            self.sample()

    def by_kind(self) -> dict[str, list]:
        kinds: dict[str, list] = defaultdict(lambda: [0.0, 0])
        for key, cpu in self.last.items():
            spent = cpu - self.first[key]
            if spent <= 0:
                continue
            kind = kind_of(self.title.get(key, ""))
            kinds[kind][0] += spent
            kinds[kind][1] += 1
        return kinds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs="*", help="the command to run (default: python -m pytest)")
    args = parser.parse_args()
    command = args.command or [sys.executable, "-m", "pytest", "-q"]
    sampler = Sampler()
    busy_before, started = busy_ticks(), time.time()
    thread = threading.Thread(target=sampler.run, daemon=True)
    thread.start()
    code = subprocess.call(command)
    sampler.stopped.set()
    thread.join()
    sampler.sample()
    wall, busy = time.time() - started, (busy_ticks() - busy_before) / TICK
    kinds = sampler.by_kind()
    seen = sum(cpu for cpu, _ in kinds.values())
    names = {kind: name for kind, name, _ in KINDS} | {"other": "anything else"}
    print(f"\n{'CPU s':>8} {'share':>6} {'procs':>6}  kind")
    for kind, (cpu, count) in sorted(kinds.items(), key=lambda item: -item[1][0]):
        print(f"{cpu:8.0f} {100 * cpu / busy:5.1f}% {count:6d}  {names[kind]}")
    print(f"{max(0.0, busy - seen):8.0f} {100 * max(0.0, busy - seen) / busy:5.1f}%         unattributed "
          "(spent after a process's last sample, or by the machine's own processes)")
    print(f"{busy:8.0f} 100.0%         the machine's busy time over {wall:.0f} s ({os.cpu_count()} cores: "
          f"{100 * busy / wall / os.cpu_count():.0f}% busy)")
    shares = " ".join(f"{kind}={100 * kinds[kind][0] / busy:.1f}%" for kind in SUMMARY)
    rest = busy - sum(kinds[kind][0] for kind in SUMMARY)
    print(f"wall_s={wall:.0f} busy_cpu_s={busy:.0f} {shares} other={100 * rest / busy:.1f}%")
    return code


if __name__ == "__main__":
    sys.exit(main())
