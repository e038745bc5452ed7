"""How trials rank by a metric, in one place: the sweep's pick (its `best:` line, `best/*`, the exported
model), the order and the `*` of its table, and the progress lines' best so far.

Values that agree to 9 decimal places are a tie: a mean of fold accuracies can differ in its last bit
between two trials that got the same pairs right, and 600 demo pairs give accuracies in steps of 1/600,
so two trials at 0.9767 are common. A tie goes to the trial created first, as Tune's own pick has it (an
extended sweep lists its own trials before the earlier sweep's, and so prefers them); the sweep says which
trials tied, so a user never takes a coin toss for a lead.
"""

from __future__ import annotations

import math

PLACES = 9


def comparable(value) -> float | None:
    """The value as ranks compare it (rounded to PLACES), or None when it is missing or not finite."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return round(number, PLACES) if math.isfinite(number) else None


def better(value: float, than: float, mode: str) -> bool:
    """Whether `value` ranks strictly above `than` (both from `comparable`)."""
    return value > than if mode == "max" else value < than


def best_index(values: list, mode: str) -> int | None:
    """The index of the best of `values` (in creation order), the first of equals; None when none counts."""
    pick = None
    for index, value in enumerate(values):
        value = comparable(value)
        if value is not None and (pick is None or better(value, pick[1], mode)):
            pick = (index, value)
    return pick[0] if pick else None


def tied_with(values: list, index: int) -> list[int]:
    """The other indices whose value ties with `values[index]`."""
    mine = comparable(values[index])
    return [i for i, value in enumerate(values) if i != index and mine is not None and comparable(value) == mine]
