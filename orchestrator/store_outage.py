"""An object store that stops answering, as the user sees it: one line, not Ray's tracebacks.

While the store is down, Tune's driver keeps trying to save the sweep's state there every few seconds,
and Ray's storage layer logs each failed attempt with its traceback (`Caught exception when creating
directory at ...`, `Saving experiment state ... failed`). Tune keeps that state in its local staging
folder and saves it again once the store answers, so there is nothing for the user to do but wait or
fix the store: `StoreOutageLines` says so once (again only after QUIET_S without a failure), and drops
the tracebacks. A trial's own reads and writes fail after their bounded retries with one line of their
own (trainables/storage_fs.py) and are retried by Tune.
"""

from __future__ import annotations

import logging
import re
import sys
import time

from trainables.storage_fs import one_line

# The loggers of Ray 2.60 that report a failed save of the experiment state, each with a traceback.
RAY_STORAGE_LOGGERS = ("ray.train._internal.storage", "ray.train._internal.syncer",
                       "ray.tune.execution.experiment_state")
QUIET_S = 600.0
_STORE_ERROR = re.compile(r"(AWS Error [A-Z_]+ during \w+ operation[^;\n]*)")


def store_error(text: str) -> str | None:
    """The store's own error (`AWS Error NETWORK_CONNECTION during HeadBucket operation: ...`) in a text,
    or None when there is none."""
    found = _STORE_ERROR.search(text)
    return found.group(1).strip() if found else None


class StoreOutageLines(logging.Filter):
    """Turns Ray's failed saves of the sweep's state into one line on the console."""

    def __init__(self, storage: str, stream=None):
        super().__init__()
        self.storage, self.stream, self.last = storage, stream, 0.0

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        text = record.getMessage() + (f" {error}" if error is not None else "")
        if record.levelno < logging.WARNING or not (isinstance(error, OSError) or store_error(text)):
            return True
        now = time.time()
        if now - self.last > QUIET_S:
            reason = store_error(text) or one_line(error or text)
            print(f"[{time.strftime('%H:%M:%S')}] store  {self.storage} does not answer ({reason}): Tune keeps the "
                  "sweep's state locally and saves it there again once it answers; each trial retries its own "
                  "reads and writes, then fails and is retried from its last checkpoint",
                  file=self.stream or sys.stdout, flush=True)
        self.last = now
        return False


def install(storage: str) -> StoreOutageLines:
    """Attach one filter (for this sweep's storage) to each of Ray's storage loggers in this process."""
    line = StoreOutageLines(storage)
    for name in RAY_STORAGE_LOGGERS:
        log = logging.getLogger(name)
        for old in [f for f in log.filters if isinstance(f, StoreOutageLines)]:
            log.removeFilter(old)
        log.addFilter(line)
    return line
