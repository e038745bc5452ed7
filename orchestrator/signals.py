"""Ctrl-C and SIGTERM for a sweep: the first stops it cleanly, a second stops it at once.

Tune catches the first SIGINT itself: it stops the trials, saves its state and `fit()` returns
normally, with unfinished trials in its ResultGrid (see sweep.py, which tells that from a finished
sweep). SIGTERM (what `kill`, a scheduler or `ray job stop` sends) is turned into that same SIGINT,
so it stops as cleanly. Tune restores Python's own handler after the first SIGINT, so a second one
raises KeyboardInterrupt at once. The exit status says which signal came first: 130 or 143.

Tune's ResultGrid shows an interrupted trial as terminated, so the interrupt is told from Tune's
signal handling itself (`interrupted`), whichever signal caused it.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

EXIT_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}
_first: list[int] = []
_tune_stopped = threading.Event()
TUNE_STOP_LINE = "Stop signal received"  # what Tune 2.60 logs (ray.tune.tune) when it starts its clean stop


def first_signal() -> int | None:
    return _first[0] if _first else None


def exit_status(default: int = 130) -> int:
    return EXIT_STATUS.get(first_signal(), default)


def _record(signum: int) -> None:
    if not _first:
        _first.append(signum)


def _on_sigterm(signum, frame) -> None:
    _record(signum)
    os.kill(os.getpid(), signal.SIGINT)  # Tune's own clean stop (or KeyboardInterrupt outside fit)


def _on_sigint(signum, frame) -> None:
    _record(signum)
    raise KeyboardInterrupt


class _TuneStopWatcher(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if TUNE_STOP_LINE in record.getMessage():
            _tune_stopped.set()
        return True


def interrupted() -> bool:
    """Whether the sweep's `fit()` returned because it was stopped by a signal. Tune installs its SIGINT
    handler for the run, and puts back the one it found (ours) only when that handler fires; after a run
    that nothing stopped, its own is still installed."""
    if _tune_stopped.is_set():
        return True
    tune_handles_sigint = not int(os.getenv("TUNE_DISABLE_SIGINT_HANDLER", "0") or 0)
    on_main = threading.current_thread() is threading.main_thread()
    return tune_handles_sigint and on_main and signal.getsignal(signal.SIGINT) is _on_sigint


def install() -> None:
    """Called once in the driver, before the sweep starts; the handlers are a no-op off the main thread."""
    _first.clear()
    _tune_stopped.clear()
    tune_log = logging.getLogger("ray.tune.tune")
    if not any(isinstance(f, _TuneStopWatcher) for f in tune_log.filters):
        tune_log.addFilter(_TuneStopWatcher())
    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGTERM, _on_sigterm)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_sigint)  # Tune saves this one and restores it after its own
