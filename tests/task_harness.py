"""Running a task in one process as a worker would (no Ray): prepare, build, one epoch, evaluation."""

from __future__ import annotations

import torch

from trainables.loop import InputPipe, TrainModule, train_one_epoch
from trainables.models import input_normalization
from trainables.optim import build_optimizer
from trainables.tasks import DataSummary, EvalContext, TaskSetup, get_task


def prepare(cfg, say=print) -> DataSummary:
    return get_task(cfg.task).prepare(cfg, say)


def build(cfg) -> TaskSetup:
    return get_task(cfg.task).build(cfg)


def pipe_for(task: TaskSetup) -> InputPipe:
    return InputPipe(torch.device("cpu"), *input_normalization(task.model))


def one_epoch(task: TaskSetup, cfg, batch: int, epoch: int = 0):
    """Train one epoch on rank 0 of 1; returns the epoch's stats."""
    module = TrainModule(task.model, task.criterion)
    steps = task.train_rows(1) // batch
    optimizer, scheduler = build_optimizer(cfg.optim, module, steps, task.param_groups)
    stats = train_one_epoch(module, task.train_loader(epoch, 0, 1, batch, 0), optimizer, pipe_for(task), scheduler)
    assert stats.examples == steps * batch
    return stats


def evaluate(task: TaskSetup, rank: int = 0, world: int = 1, batch: int = 32):
    return task.evaluate(task.model, EvalContext(pipe_for(task), rank=rank, world=world, batch_size=batch,
                                                 loader_workers=0))
