"""How benchmarks/data_loader.py times a loader: one full pass in images per wall-clock second and per CPU
second (this process, its reaped children and the live loader workers), and a function's cost per item.

Images per CPU second is what other users of a shared machine disturb least; a pass is timed from its
first batch, so loader worker start-up is excluded. A helper of data_loader.py, not a benchmark itself.
"""

from __future__ import annotations

import os
import time


def _worker_cpu(it) -> float:
    """CPU seconds the iterator's live loader workers have used so far (Linux /proc; 0 elsewhere)."""
    total = 0.0
    for worker in getattr(it, "_workers", []):
        try:
            with open(f"/proc/{worker.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
        except (OSError, ValueError, IndexError):
            pass
    return total


def _children_cpu() -> float:
    t = os.times()
    return t.children_user + t.children_system


def _cpu(it) -> float:
    """CPU seconds of this process, its reaped children and the iterator's live loader workers."""
    return time.process_time() + _children_cpu() + _worker_cpu(it)


def images_per_second(loader) -> tuple[float, float]:
    """One full pass, timed from its first batch (so worker start-up is excluded): (images per
    wall-clock second, images per CPU second of this process and its loader workers). The second is
    what a loaded, shared machine disturbs least. A worker reaped within the pass moves its time from
    the live workers' to this process's children's, so both are counted at both ends; persistent
    workers stay live."""
    it = iter(loader)
    next(it)
    cpu = _cpu(it)
    start, n = time.perf_counter(), 0
    for batch in it:
        n += len(batch[0])
    wall = time.perf_counter() - start
    cpu = _cpu(it) - cpu
    del it  # shuts non-persistent workers down, if the pass did not
    return n / wall, n / max(cpu, 1e-9)


def per_image_us(fn, items, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, time.perf_counter() - start)
    return best / len(items) * 1e6
