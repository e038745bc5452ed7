"""Wall-clock phases of a trial's start (model build, data opening, ...), measured where they run.

The worker reports them with its first epoch as `timing/<phase>_s`, so a slow start shows in
MLflow next to the trial, and `benchmarks/trial_overhead.py` prints where the first step went.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

_phases: dict[str, float] = {}


@contextmanager
def phase(name: str):
    """Add the seconds the block takes to phase `name` of this process."""
    started = time.perf_counter()
    try:
        yield
    finally:
        _phases[name] = _phases.get(name, 0.0) + time.perf_counter() - started


def take() -> dict[str, float]:
    """The phases measured so far, and forget them."""
    measured = dict(_phases)
    _phases.clear()
    return measured
