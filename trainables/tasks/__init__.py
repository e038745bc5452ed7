"""Tasks: what a trial learns and how it is scored, chosen by the `task` config key.

A task turns a TrainConfig into the pieces `train.py` runs on every worker: a model, a criterion
(an nn.Module that may own parameters, such as ArcFace class weights or learned task weights, so
DDP synchronises them), the training set, and an evaluation that returns already-gathered metrics
plus the files to write beside the checkpoint.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from torch import nn
from torch.utils.data import Dataset

from trainables.config import TrainConfig
from trainables.data.decode import make_loader, train_share
from trainables.errors import UserError
from trainables.loop import InputPipe


@dataclass
class EvalContext:
    pipe: InputPipe
    rank: int
    world: int
    batch_size: int
    loader_workers: int


@dataclass
class EvalResult:
    metrics: dict[str, float]
    write_files: Callable[[Path], None]  # called on rank 0 with the checkpoint folder


@dataclass
class TaskSetup:
    """What a worker runs. Training data comes either as a map-style `train_set` (split by rank with
    `loading.train_share`) or as `train_loader(epoch, rank, world, batch, workers)` with `train_rows`
    rows per rank per epoch (e.g. streamed from Parquet shards)."""
    model: nn.Module                  # what is checkpointed, exported and used for prediction
    criterion: nn.Module              # forward(model outputs, targets) -> scalar loss
    evaluate: Callable[[nn.Module, EvalContext], EvalResult]
    train_set: Dataset | None = None
    train_loader: Callable[[int, int, int, int, int], Iterable] | None = None
    train_rows: Callable[[int], int] | None = None
    param_groups: list[dict] = field(default_factory=list)  # extra optimizer groups (e.g. centers)
    num_outputs: int = 0

    def rows_per_rank(self, world: int) -> int:
        return self.train_rows(world) if self.train_rows else len(self.train_set) // world

    def loader(self, epoch: int, rank: int, world: int, batch: int, workers: int, seed: int) -> Iterable:
        if self.train_loader is not None:
            return self.train_loader(epoch, rank, world, batch, workers)
        share = train_share(len(self.train_set), rank, world, epoch, seed)
        return make_loader(self.train_set, share, batch, workers, train=True)


@dataclass
class DataSummary:
    """What the driver learns once, before any trial: where the data is, and the baseline to beat."""
    root: str
    baseline: dict[str, float]  # logged on the sweep's parent run, e.g. {"val/majority_accuracy": 0.81}


@dataclass
class TaskSpec:
    build: Callable[[TrainConfig], TaskSetup]       # on every worker
    prepare: Callable[[TrainConfig], DataSummary]   # once in the driver: data built/validated, baseline
    check: Callable[[TrainConfig], None]            # in the driver, per config: the task's own names and values


TASKS: dict[str, TaskSpec] = {}


def register_task(name: str, prepare: Callable[[TrainConfig], DataSummary],
                  check: Callable[[TrainConfig], None] = lambda cfg: None):
    """Decorator for a task's build function; `prepare` runs once in the driver before any trial, and
    `check` raises a UserError for a config the task cannot run (before any compute is spent)."""
    def add(build: Callable[[TrainConfig], TaskSetup]):
        TASKS[name] = TaskSpec(build, prepare, check)
        return build

    return add


def task_spec(name: str) -> TaskSpec:
    _load_all()
    if name not in TASKS:
        close = difflib.get_close_matches(name, TASKS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise UserError(f"unknown task '{name}'{hint}; known: {', '.join(sorted(TASKS))}")
    return TASKS[name]


def build_task(cfg: TrainConfig) -> TaskSetup:
    return task_spec(cfg.task).build(cfg)


def prepare_task_data(cfg: TrainConfig) -> DataSummary:
    return task_spec(cfg.task).prepare(cfg)


def _load_all() -> None:
    """Import every task module once; each registers itself."""
    import importlib
    import pkgutil

    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
