"""Starting a local Ray: `ray.init` tried again while it times out, each timed-out try's processes stopped
first. Ray gives its raylet a fixed 30 s to register with the GCS, which a start on 2 busy cores can miss
by a little; the command's one-line error is cluster.connect's."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from trainables import process_owner


# What ray.init raises when the raylet has not registered with the GCS within Ray's fixed 30 s
# (ray._private.node): on 2 busy cores that happens to a start that would have finished a little later.
START_TIMED_OUT = "timed out during startup"
START_TRIES = 3  # CI once saw two timeouts in a row, with the other test process training on the second core


def start_local_ray(init_kwargs: dict) -> None:
    """ray.init for a local Ray, tried up to START_TRIES times while it times out. A timed-out try leaves its
    GCS and raylet running (they die with this process, not with the failed call): they are stopped first, so
    that the next start has the machine to itself. The last timeout is raised to the caller."""
    import ray

    for attempt in range(1, START_TRIES + 1):
        before = child_pids()
        try:
            ray.init(**init_kwargs)
            return
        except Exception as err:  # noqa: BLE001  Ray raises a bare Exception
            stop_children(child_pids() - before)
            if START_TIMED_OUT not in str(err) or attempt == START_TRIES:
                raise
        print(f"[{time.strftime('%H:%M:%S')}] ray    a local Ray did not start within Ray's 30 s (the machine is "
              f"busy): starting it again (try {attempt + 1} of {START_TRIES})", flush=True)


def child_pids() -> set[int]:
    """The processes this process started and that are still running (Linux's /proc; empty elsewhere)."""
    me, found = os.getpid(), set()
    for entry in Path("/proc").glob("[0-9]*/stat"):
        fields = process_owner.stat_fields(int(entry.parent.name))
        if fields and int(fields[1]) == me and fields[0] != "Z":  # None: the process ended while we looked
            found.add(int(entry.parent.name))
    return found


def stop_children(pids: set[int]) -> None:
    """SIGKILL these children of this process and reap them (a raylet's workers die with it: Ray sets their
    parent-death signal)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
