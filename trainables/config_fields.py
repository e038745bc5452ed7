"""How a config field declares itself: its one-line help, its valid range, and whether it holds a path.

Every section of a trial's config (the shared ones in config_sections.py, each task's own) declares its
fields with these helpers, so `list --keys` and every error line about a key can quote what the key is
for. Fields marked `path()` hold file or folder paths, which the driver makes absolute (or URIs) once,
before any trial sees them, because a trial's working directory is not the driver's. Fields marked
`bounded()` declare their valid range beside their default; config.py checks it whenever a config is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def path(default: Any = "", help: str = "", **kwargs):
    """A dataclass field that holds a path (or a list of them), with its one-line help."""
    metadata = {"path": True, **({"help": help} if help else {})}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata, **kwargs)
    return field(default=default, metadata=metadata, **kwargs)


def helped(default: Any, help: str, *, only_with: dict | None = None, **metadata):
    """A dataclass field with its one-line help, shown by `list --keys`. `only_with`: see `bounded`."""
    return field(default=default, metadata={"help": help, **({"only_with": only_with} if only_with else {}),
                                            **metadata})


@dataclass(frozen=True)
class Range:
    """The values a numeric field accepts: `low`/`high` are None when unbounded on that side."""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    note: str = ""                   # what a special value means, e.g. "0 disables"

    def __contains__(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def __str__(self) -> str:
        if self.low is not None and self.high is not None:
            text = f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        elif self.low is not None:
            text = f"{'above' if self.low_open else 'at least'} {self.low:g}"
        else:
            text = f"{'below' if self.high_open else 'at most'} {self.high:g}"
        return f"{text} ({self.note})" if self.note else text


def bounded(default: float, *, at_least: float | None = None, above: float | None = None,
            at_most: float | None = None, below: float | None = None, note: str = "", help: str = "",
            only_with: dict | None = None):
    """A numeric dataclass field with its valid range, e.g. `bounded(0.9, at_least=0, below=1)` for [0, 1).
    `only_with={"name": ("focal",)}`: the field acts only when its section's `name` is one of those (a trial's
    name leaves it out otherwise: config_keys.key_acts)."""
    low, high = (above if at_least is None else at_least), (below if at_most is None else at_most)
    valid = Range(low, high, low_open=above is not None, high_open=below is not None, note=note)
    return field(default=default, metadata={"range": valid, **({"help": help} if help else {}),
                                            **({"only_with": only_with} if only_with else {})})
