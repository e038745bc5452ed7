"""`train_fn_per_worker`: what each Ray Train DDP worker runs for one trial.

This is the only module of `trainables` that talks to `ray.train`. The task (see
`trainables/tasks`) supplies model, criterion, data and evaluation; `loop.train_and_evaluate` runs
each epoch; this file reduces metrics over all ranks first (Tune only sees rank 0's report), and has
rank 0 write the checkpoint with the task's result files every epoch, because an ASHA stop ends the
trial after any report. A user's mistake found here (a UserError) ends the trial with its one line.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import ray.train
import ray.train.torch
import torch

from trainables.artifacts import CHECKPOINT_META, MODEL_WEIGHTS, TRAIN_STATE, WEIGHTS_REPORT
from trainables.config import TrainConfig
from trainables.distributed import all_reduce_max, all_reduce_sum
from trainables.errors import UserError
from trainables.loop import InputPipe, TrainModule, train_and_evaluate
from trainables.models import input_normalization
from trainables.models.weights import report_of
from trainables.optim import build_optimizer
from trainables.tasks import EvalContext, TaskSetup, get_task


def _threads() -> int:
    """Ray sets OMP_NUM_THREADS to the worker's CPU share; torch should use exactly that."""
    return max(1, int(os.environ.get("OMP_NUM_THREADS", "1") or 1))


class _UserErrorsOnce(logging.Filter):
    """Ray Train logs each worker's failure with its traceback; a user's mistake is reported once, in one
    line, by the driver (its progress line and the child run's `error` tag)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return f"{UserError.__module__}.{UserError.__name__}: " not in record.getMessage()


# Ray 2.60 logs "Error in training function:" and the traceback from this logger, on every worker.
_TRAIN_FN_ERRORS = logging.getLogger("ray.train.v2._internal.util")


def train_fn_per_worker(config: dict) -> None:
    if not any(isinstance(f, _UserErrorsOnce) for f in _TRAIN_FN_ERRORS.filters):
        _TRAIN_FN_ERRORS.addFilter(_UserErrorsOnce())
    try:
        _train(config)
    except UserError as err:
        # One line, not a traceback per worker: the driver shows it and tags the child run with it.
        raise UserError(str(err)) from None


def steps_per_epoch(task: TaskSetup, world: int, batch: int) -> int:
    rows = task.train_rows(world)
    if rows < batch:
        raise UserError(f"optim.batch_size={batch} is larger than a worker's share of the training data ({rows} "
                        f"rows each over {world} workers), so no step would run: use --set optim.batch_size={max(rows, 1)} "
                        "or less, or fewer workers")
    return rows // batch


def _train(config: dict) -> None:
    fit_started = time.time()
    # Ray Train logs every report (with every metric) at INFO; progress is the driver's job.
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    cfg = TrainConfig.from_dict(config)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(_threads())
    torch.manual_seed(cfg.seed)
    device = ray.train.torch.get_device()
    on_gpu = device.type == "cuda"

    task = get_task(cfg.task).build(cfg)
    weights_report = report_of(task.model)  # before DDP wraps it; beside every checkpoint
    mean, std = input_normalization(task.model)
    if on_gpu and cfg.model.channels_last:
        task.model = task.model.to(memory_format=torch.channels_last)
    module = ray.train.torch.prepare_model(TrainModule(task.model, task.criterion))
    pipe = InputPipe(device, mean, std, channels_last=on_gpu and cfg.model.channels_last)
    workers = int(os.environ.get("FACE_ORCHESTRATOR_LOADER_WORKERS", "0"))
    batch = cfg.optim.batch_size
    steps = steps_per_epoch(task, world, batch)
    optimizer, scheduler = build_optimizer(cfg.optim, module, steps, task.param_groups)
    start_epoch, last_metrics = _restore(task.model, task.criterion, optimizer, scheduler)
    eval_ctx = EvalContext(pipe, rank, world, batch, workers)
    if start_epoch >= cfg.optim.epochs and last_metrics:
        # The Train run had already finished when its trial was restarted (a driver killed after a
        # trial ended but before Tune saved that): hand Tune the final result again, not nothing.
        _report_again(rank, last_metrics)
        return

    for epoch in range(start_epoch, cfg.optim.epochs):
        loader = task.train_loader(epoch, rank, world, batch, workers)
        stats, evaluation = train_and_evaluate(module, task, loader, optimizer, pipe, eval_ctx, scheduler,
                                               epoch * steps, cfg.optim.grad_clip)
        train_loss, train_n = all_reduce_sum([stats.loss_sum, stats.examples])
        seconds = all_reduce_max(stats.seconds)
        metrics = {
            **evaluation.metrics,
            "epoch": epoch + 1,
            "train/loss": train_loss / max(train_n, 1),
            "train/images_per_sec": train_n / max(seconds, 1e-9),
            "train/lr": optimizer.param_groups[0]["lr"],
            "train/threads_per_worker": torch.get_num_threads(),
        }
        if epoch == start_epoch and stats.first_step_time is not None:
            # Absolute, so the driver can measure from its own clock (trial start, or fit()).
            metrics["timing/first_step_unix"] = stats.first_step_time
            metrics["timing/worker_setup_s"] = stats.first_step_time - fit_started

        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if rank == 0:
                _save(Path(tmp), task.model, task.criterion, optimizer, scheduler, epoch, cfg, metrics)
                evaluation.write_files(Path(tmp))
                (Path(tmp) / WEIGHTS_REPORT).write_text(json.dumps(weights_report, indent=1))
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=checkpoint)


def _save(out: Path, model, criterion, optimizer, scheduler, epoch: int, cfg: TrainConfig, metrics: dict) -> None:
    torch.save(model.state_dict(), out / MODEL_WEIGHTS)
    state = {"criterion": criterion.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict() if scheduler else None}
    torch.save(state, out / TRAIN_STATE)
    meta = {"epoch": epoch + 1, "config": cfg.to_flat_dict(), "metrics": metrics}
    (out / CHECKPOINT_META).write_text(json.dumps(meta, indent=1, default=float))


def _report_again(rank: int, metrics: dict) -> None:
    """Report a finished run's last metrics once more, with a copy of its last checkpoint (rank 0)."""
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if rank == 0:
            with ray.train.get_checkpoint().as_directory() as folder:
                shutil.copytree(folder, tmp, dirs_exist_ok=True)
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=checkpoint)


def _restore(model, criterion, optimizer, scheduler) -> tuple[int, dict]:
    """Resume from Ray Train's latest checkpoint if this trial is restarting.

    Returns the first epoch to run and the metrics reported with that checkpoint.
    """
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0, {}
    with checkpoint.as_directory() as folder:
        folder = Path(folder)
        model.load_state_dict(torch.load(folder / MODEL_WEIGHTS, map_location="cpu", weights_only=True))
        state = torch.load(folder / TRAIN_STATE, map_location="cpu", weights_only=True)
        criterion.load_state_dict(state["criterion"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state["scheduler"] is not None:
            scheduler.load_state_dict(state["scheduler"])
        meta = json.loads((folder / CHECKPOINT_META).read_text())
        return int(meta["epoch"]), meta.get("metrics", {})
