"""ASHA's rung records kept across `--resume`.

ASHA decides whether a trial goes on by comparing its metric at each rung (epoch 1, 2, 4, ...) with
what the earlier trials recorded there. Ray 2.60 saves the search algorithm and the callbacks with the
experiment, but not the scheduler: a restored sweep gets the scheduler as it was pickled at the start,
with empty rungs. A trial that runs after a `--resume` is then compared with nothing and runs to its
last epoch where the uninterrupted sweep would have stopped it, and the sweep can end with another
winner.

`RungKeeper` is a Tune callback whose saved state is the rungs of the scheduler it watches. Tune saves
it with every experiment checkpoint and restores it (`set_state`) before it queues the restored trials,
so the restored scheduler compares the next trial with the same records as an uninterrupted sweep.

It reads and writes `AsyncHyperBandScheduler._brackets[i]._rungs` (a list of (milestone,
{trial_id: signed metric})): private to Ray, and checked by tests/test_rungs.py against the installed Ray.
"""

from __future__ import annotations

from typing import Any

from ray.tune import Callback
from ray.tune.schedulers import AsyncHyperBandScheduler


class RungKeeper(Callback):
    """Saves and restores the rung records of one ASHA scheduler with Tune's experiment state."""

    def __init__(self, scheduler: AsyncHyperBandScheduler):
        self.scheduler = scheduler

    def get_state(self) -> dict[str, Any]:
        brackets = [[(milestone, dict(recorded)) for milestone, recorded in bracket._rungs]
                    for bracket in self.scheduler._brackets]
        return {"rungs": brackets}  # never empty: Tune saves only a truthy state

    def set_state(self, state: dict[str, Any]) -> None:
        for bracket, saved in zip(self.scheduler._brackets, state.get("rungs", [])):
            by_milestone = dict(saved)
            for milestone, recorded in bracket._rungs:
                for trial_id, value in by_milestone.get(milestone, {}).items():
                    recorded.setdefault(trial_id, value)  # a value recorded in this process wins


def keeper_for(scheduler: Any) -> list[RungKeeper]:
    """[a RungKeeper] for an ASHA scheduler, [] for none or another kind."""
    return [RungKeeper(scheduler)] if isinstance(scheduler, AsyncHyperBandScheduler) else []
