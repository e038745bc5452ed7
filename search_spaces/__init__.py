"""Sweeps: the built-in ones, one module per question, each a function returning a `Sweep` found by
name here; and a user's own sweep file (`my_sweep.yaml`, read by `search_spaces.loader`).

A built-in sweep registers itself with `@register`; its docstring's first line is the question it
answers (shown by `python -m orchestrator list`).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from trainables.errors import UserError
from trainables.registry import Registry


DEFAULT_SEED = 0  # a sweep without a `seed` draws the same configs every time it runs
MODES = ("max", "min")


@dataclass
class Sweep:
    name: str
    question: str
    param_space: dict[str, Any]          # dotted config keys -> fixed values or Tune domains
    task: str                            # what the trials learn (a trainables task); no sweep goes without one
    # One objective, or several as lists (`metric=[acc, gap], mode=["max", "min"]`): a Pareto front. After
    # construction `metric`/`mode` are the first objective (what Tune, ASHA and checkpoints rank by) and
    # `objectives` lists every (metric, mode) pair. A sweep names its own: no metric is assumed.
    metric: str | list[str]
    mode: str | list[str] = "max"
    num_samples: int = 1                 # samples per grid point
    grace_period: int = 1                # ASHA: evaluations before a trial can be stopped (epochs, unless
    #                                      eval.every_steps); 0 disables ASHA
    reduction_factor: int = 2            # ASHA: keeps the best 1/reduction_factor of the trials at each rung
    search: str = ""                     # "" (Tune's basic variant generator) or "optuna"
    workers_per_trial: int = 2           # DDP workers of one trial, unless --num-workers says otherwise
    report: list[str] = field(default_factory=list)  # extra metrics shown in the final table
    # Optuna: full points of the searched keys tried first, in order, before Optuna's own draws (a question
    # such as "BCE, focal or ASL?" then sees each once; orchestrator.space.starting_points keeps those that fit
    # the space after --set).
    first_points: list[dict] = field(default_factory=list)
    runner: str = "train"                # "train": trials train models; "policies": the task's decision policies
    #                                      (`Task.policy`) scored on a finished trial's stored predictions
    tags: dict[str, str] = field(default_factory=dict)
    source: str = ""                     # the sweep file it was read from; "" for a built-in sweep
    seed: int = DEFAULT_SEED              # seeds Optuna's sampler and Tune's random draws: a rerun draws the same
    max_gap: float | None = None         # several objectives: best_run_id is picked among front members whose
                                         # second objective is at most this (e.g. a group gap of 0.05)
    objectives: list[tuple[str, str]] = field(init=False, repr=False)

    def __post_init__(self):
        if not isinstance(self.task, str) or not self.task:
            raise UserError(f"sweep {self.name}: `task` is missing: every sweep names the task its trials learn")
        if self.runner == "train":  # a training trial's config holds its task, like every other key
            named = self.param_space.get("task", self.task)
            if named != self.task:
                raise UserError(f"sweep {self.name}: its space says task {named!r} but the sweep's task is "
                                f"{self.task!r}: name the task once, as the sweep's `task`")
            self.param_space = {"task": self.task, **self.param_space}
        self.objectives = objectives_of(self.metric, self.mode, "metric", "mode")
        self.metric, self.mode = self.objectives[0]
        if self.max_gap is not None and (len(self.objectives) < 2 or self.objectives[1][1] != "min"):
            raise UserError(f"sweep {self.name}: max_gap limits the second objective, which must be minimised "
                            f"(mode min): name two objectives, the second with mode min, or drop max_gap")



def objectives_of(metric, mode, metric_key: str, mode_key: str) -> list[tuple[str, str]]:
    """[(metric, mode), ...] from one metric and mode, or from two lists of equal length; a mistake is one
    line naming the keys (`metric_key`, `mode_key`: how the caller spells them, e.g. `--metric`)."""
    metrics = list(metric) if isinstance(metric, (list, tuple)) else [metric]
    modes = list(mode) if isinstance(mode, (list, tuple)) else [mode]
    if not metrics or not all(isinstance(m, str) and m.strip() for m in metrics):
        raise UserError(f"{metric_key}: expects a metric name or a list of them, e.g. val/race/accuracy, got {metric!r}")
    if len(modes) != len(metrics):
        raise UserError(f"{metric_key} names {len(metrics)} objective(s) but {mode_key} gives {len(modes)} mode(s): "
                        f"give one mode (max or min) per objective, in the same order")
    for m in modes:
        if m not in MODES:
            raise UserError(f"{mode_key}: unknown mode {m!r}: write one of max, min for each objective")
    if len(set(metrics)) != len(metrics):
        raise UserError(f"{metric_key}: an objective is named twice ({metrics}): name each metric once")
    return [(m.strip(), d) for m, d in zip(metrics, modes)]


def with_options(sweep: Sweep, metric: list[str] | None = None, mode: list[str] | None = None,
                 seed: int | None = None) -> Sweep:
    """The sweep with the command line's `--metric`/`--mode` (each repeatable) and `--seed`, when given."""
    if mode and not metric:
        raise UserError("--mode needs --metric: give one --metric per --mode (e.g. --metric val/race/accuracy "
                        "--mode max --metric val/race/group_gap --mode min)")
    changes: dict[str, Any] = {}
    if metric:
        pairs = objectives_of(metric, mode or [], "--metric", "--mode")
        for name, _ in pairs:
            if not name.startswith("val/"):
                raise UserError(f"--metric {name}: the objectives are validation metrics a trial reports, "
                                f"e.g. {sweep.metric}")
        changes.update(metric=[p[0] for p in pairs], mode=[p[1] for p in pairs])
        if sweep.max_gap is not None and (len(pairs) < 2 or pairs[1][1] != "min"):
            changes["max_gap"] = None  # the sweep's gap limit was for its own second objective
    if seed is not None:
        changes["seed"] = seed
    if not changes:
        return sweep
    return replace(sweep, **{"metric": [m for m, _ in sweep.objectives], "mode": [d for _, d in sweep.objectives],
                             **changes})


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


SUFFIXES = (".yaml", ".yml")


def is_sweep_file(name: str) -> bool:
    """Whether a sweep name means a file: it ends in .yaml/.yml, has a folder in it, or is a file."""
    return name.endswith(SUFFIXES) or "/" in name or os.sep in name or Path(name).is_file()


def get(name: str) -> SweepFactory:
    """The factory of sweep `name`, a built-in sweep's name or a sweep file's path; call it as
    `factory(real_data=..., smoke=...)`. A built-in's name, or an unknown one, is answered without importing
    torch (the file loader checks keys against the tasks, which do): `list` and a mistyped name take a second."""
    if name not in SWEEPS and is_sweep_file(name):
        from search_spaces import loader

        return loader.factory(name)
    return SWEEPS.get(name)
