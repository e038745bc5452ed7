"""Sweeps: the built-in ones, one module per question, each a function returning a `Sweep` found by
name here; and a user's own sweep file (`my_sweep.yaml`, read by `search_spaces.loader`).

A built-in sweep registers itself with `@register`; its docstring's first line is the question it
answers (shown by `python -m orchestrator list`).
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable

from trainables.errors import UserError
from trainables.registry import Registry


@dataclass
class Sweep:
    name: str
    question: str
    param_space: dict[str, Any]          # dotted config keys -> fixed values or Tune domains
    metric: str = "val/mean_accuracy"
    mode: str = "max"
    num_samples: int = 1                 # samples per grid point
    grace_period: int = 1                # ASHA: epochs before a trial can be stopped; 0 disables ASHA
    reduction_factor: int = 2            # ASHA: keeps the best 1/reduction_factor of the trials at each rung
    search: str = ""                     # "" (Tune's basic variant generator) or "optuna"
    workers_per_trial: int = 2           # DDP workers of one trial, unless --num-workers says otherwise
    report: list[str] = field(default_factory=list)  # extra metrics shown in the final table
    runner: str = "train"                # "train": trials train models; "thresholds": trials score stored predictions
    tags: dict[str, str] = field(default_factory=dict)
    source: str = ""                     # the sweep file it was read from; "" for a built-in sweep


SweepFactory = Callable[..., Sweep]
NOT_SWEEPS = ("loader", "distributions")  # the modules here that define no built-in sweep


def _load_all() -> None:
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_") and module.name not in NOT_SWEEPS:
            importlib.import_module(f"{__name__}.{module.name}")


class _Sweeps(Registry[SweepFactory]):
    def unknown(self, name: str) -> UserError:
        return UserError(f"{super().unknown(name)} (see `python -m orchestrator list`), "
                         f"or give the path of a sweep file such as my_sweep.yaml")


SWEEPS = _Sweeps("sweep", loader=_load_all)
register = SWEEPS.register
names = SWEEPS.names


def question(name: str) -> str:
    return (SWEEPS.get(name).__doc__ or "").strip().splitlines()[0]


def get(name: str) -> SweepFactory:
    """The factory of sweep `name`, a built-in sweep's name or a sweep file's path; call it as
    `factory(real_data=..., smoke=...)`."""
    from search_spaces import loader

    if name not in SWEEPS and loader.is_sweep_file(name):
        return loader.factory(name)
    return SWEEPS.get(name)
