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
from typing import Callable

from torch import nn
from torch.utils.data import Dataset

from trainables.config import TrainConfig
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
    model: nn.Module                  # what is checkpointed, exported and used for prediction
    criterion: nn.Module              # forward(model outputs, targets) -> scalar loss
    train_set: Dataset
    evaluate: Callable[[nn.Module, EvalContext], EvalResult]
    param_groups: list[dict] = field(default_factory=list)  # extra optimizer groups (e.g. centers)
    num_outputs: int = 0


TaskBuilder = Callable[[TrainConfig], TaskSetup]
TASKS: dict[str, TaskBuilder] = {}


def register_task(name: str) -> Callable[[TaskBuilder], TaskBuilder]:
    def add(builder: TaskBuilder) -> TaskBuilder:
        TASKS[name] = builder
        return builder

    return add


def build_task(cfg: TrainConfig) -> TaskSetup:
    _load_all()
    if cfg.task not in TASKS:
        close = difflib.get_close_matches(cfg.task, TASKS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise UserError(f"unknown task '{cfg.task}'{hint}; known: {', '.join(sorted(TASKS))}")
    return TASKS[cfg.task](cfg)


def _load_all() -> None:
    from trainables.tasks import attributes  # noqa: F401  (each task module registers itself)
