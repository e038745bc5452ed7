"""Which process wrote a record, and whether it still runs.

A prepare's marker in its output folder (data/prepared_output.py) and a running sweep's record in its storage
(orchestrator/driver_lease.py) both name their writer as `owner()` does: its host, its pid and that process's
start time, so that a pid the kernel has since given to another process is not taken for the writer. Only the
writer's own host can tell whether it runs (`alive_here`); elsewhere the record's own clock must say.
"""

from __future__ import annotations

import os
import socket


def stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command's name (state first, parent pid second, start time in
    clock ticks since boot at index 19), or None when the process is gone or this is not Linux."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def start_time(pid: int) -> str | None:
    """When the process started, in clock ticks since boot; None when it is gone or this is not Linux."""
    fields = stat_fields(pid)
    return fields[19] if fields and len(fields) > 19 else None


def owner() -> dict:
    """This process, as a record names it."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": start_time(os.getpid())}


def on_this_host(record: dict) -> bool:
    return record.get("host") == socket.gethostname()


def alive_here(record: dict) -> bool:
    """Whether the process a record of this host names still runs: its pid exists (another user's counts) and,
    where the record and /proc both know it, started when the record says."""
    try:
        pid = int(record["pid"])
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    except (KeyError, TypeError, ValueError, OverflowError):  # no pid to look at: nothing shows it ended
        return True
    started, now = record.get("started"), start_time(pid)
    return started is None or now is None or now == started
