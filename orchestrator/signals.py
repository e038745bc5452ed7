"""Ctrl-C and SIGTERM for a sweep: the first stops it cleanly, a second stops it at once.

Tune catches the first SIGINT itself while `fit()` runs: it stops the trials, saves its state and
`fit()` returns normally (whether the sweep finished is then decided from our own records, see
accounting.py). SIGTERM (what `kill`, a scheduler or `ray job stop` sends) is turned into that same
SIGINT, so it stops as cleanly. Outside `fit()` (start-up, preflight, the final report) our own
handler raises KeyboardInterrupt. Tune puts back the handler it found (ours) after the first SIGINT,
so a second one raises KeyboardInterrupt at once.

The exit status says which signal came first: 130 or 143. Our handlers note it; while Tune's SIGINT
handler is installed, `watch_tune_stop` wraps it so that the first signal is noted there too.
"""

from __future__ import annotations

import logging
import signal
import threading

EXIT_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}
_first: list[int] = []


def first_signal() -> int | None:
    return _first[0] if _first else None


def exit_status(default: int = 130) -> int:
    return EXIT_STATUS.get(first_signal(), default)


def _record(signum: int) -> None:
    if not _first:
        _first.append(signum)


def _on_sigterm(signum, frame) -> None:
    _record(signum)
    signal.raise_signal(signal.SIGINT)  # Tune's own clean stop (or KeyboardInterrupt outside fit)


def _on_sigint(signum, frame) -> None:
    _record(signum)
    raise KeyboardInterrupt


class _Noting:
    """Another handler (Tune's), called after the signal is noted."""

    def __init__(self, handler):
        self.handler = handler

    def __call__(self, signum, frame):
        _record(signum)
        if callable(self.handler):
            return self.handler(signum, frame)
        if self.handler == signal.SIG_DFL:
            raise KeyboardInterrupt
        return None  # SIG_IGN


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def install() -> None:
    """Called once in the driver, before the sweep's start-up; a no-op off the main thread."""
    _first.clear()
    if not _on_main_thread():
        return
    signal.signal(signal.SIGTERM, _on_sigterm)
    if signal.getsignal(signal.SIGINT) in (signal.default_int_handler, _on_sigint) or isinstance(
            signal.getsignal(signal.SIGINT), _Noting):
        signal.signal(signal.SIGINT, _on_sigint)  # Tune saves this one and restores it after its own


def watch_tune_stop() -> None:
    """Called from inside `fit()` (a callback's setup), once Tune has installed its SIGINT handler: wrap
    it so that a first SIGINT is noted before Tune starts its clean stop. Tune still restores ours."""
    if not _on_main_thread():
        return
    current = signal.getsignal(signal.SIGINT)
    if current is _on_sigint or isinstance(current, _Noting) or current is None:
        return
    signal.signal(signal.SIGINT, _Noting(current))


def take_back() -> None:
    """After `fit()`: our handler again (Tune leaves its own installed when no signal came), so a Ctrl-C
    while the final report is written raises KeyboardInterrupt and the sweep is recorded as interrupted."""
    if _on_main_thread():
        signal.signal(signal.SIGINT, _on_sigint)


def stop_fit() -> bool:
    """End `fit()` as a first Ctrl-C does (Tune saves its state, and running and pending trials stay
    resumable), without it counting as an interrupt: Tune's own handler is called, not the signal sent.
    Called from a Tune callback (budget.py); False when Tune's handler is not installed (off the main thread)."""
    current = signal.getsignal(signal.SIGINT)
    handler = current.handler if isinstance(current, _Noting) else current
    if not callable(handler) or handler in (_on_sigint, signal.default_int_handler):
        return False
    tune_log = logging.getLogger("ray.tune.tune")

    def quiet(record):  # Tune's "Stop signal received (e.g. via SIGINT/Ctrl+C)": it is not a Ctrl-C
        return "Stop signal received" not in record.getMessage()

    tune_log.addFilter(quiet)
    try:
        handler(signal.SIGINT, None)
    finally:
        tune_log.removeFilter(quiet)
    return True
