"""Waiting for a condition, never for a fixed time: what the tests that start servers and browsers share."""

from __future__ import annotations

import time


def wait_until(condition, seconds: float, what: str, every: float = 0.1):
    """Poll `condition` until it returns something true, and return that; fail naming `what` after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)  # polling for a condition, not waiting a fixed time
    raise AssertionError(f"timed out after {seconds:g}s waiting for {what}")
