"""`train_fn_per_worker`: what each Ray Train DDP worker runs for one trial.

This is the only module of `trainables` that talks to `ray.train`. The task (see
`trainables/tasks`) supplies model, criterion, data and evaluation; this file runs epochs,
reduces metrics over all ranks first (Tune only sees rank 0's report), and has rank 0 write the
checkpoint with the task's result files every epoch, because an ASHA stop ends the trial after
any report.
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

from trainables.config import TrainConfig
from trainables.distributed import all_reduce_max, all_reduce_sum
from trainables.loop import InputPipe, TrainModule, train_one_epoch
from trainables.models import input_normalization
from trainables.optim import build_optimizer
from trainables.tasks import EvalContext, build_task

MODEL_FILE, STATE_FILE, META_FILE = "model.pt", "train_state.pt", "meta.json"


def _threads() -> int:
    """Ray sets OMP_NUM_THREADS to the worker's CPU share; torch should use exactly that."""
    return max(1, int(os.environ.get("OMP_NUM_THREADS", "1") or 1))


def train_fn_per_worker(config: dict) -> None:
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

    task = build_task(cfg)
    mean, std = input_normalization(task.model)
    if on_gpu and cfg.model.channels_last:
        task.model = task.model.to(memory_format=torch.channels_last)
    module = ray.train.torch.prepare_model(TrainModule(task.model, task.criterion))
    pipe = InputPipe(device, mean, std, channels_last=on_gpu and cfg.model.channels_last)
    workers = int(os.environ.get("FACE_ORCHESTRATOR_LOADER_WORKERS", "0"))
    batch = cfg.optim.batch_size
    steps_per_epoch = task.rows_per_rank(world) // batch
    optimizer, scheduler = build_optimizer(cfg.optim, module, steps_per_epoch, task.param_groups)
    start_epoch, last_metrics = _restore(task.model, task.criterion, optimizer, scheduler)
    eval_ctx = EvalContext(pipe, rank, world, batch, workers)
    if start_epoch >= cfg.optim.epochs and last_metrics:
        # The Train run had already finished when its trial was restarted (a driver killed after a
        # trial ended but before Tune saved that): hand Tune the final result again, not nothing.
        _report_again(rank, last_metrics)
        return

    for epoch in range(start_epoch, cfg.optim.epochs):
        loader = task.loader(epoch, rank, world, batch, workers, cfg.seed)
        stats = train_one_epoch(module, loader, optimizer, pipe, scheduler, epoch * steps_per_epoch,
                                cfg.optim.grad_clip)
        evaluation = task.evaluate(task.model, eval_ctx)
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
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=checkpoint)


def _save(out: Path, model, criterion, optimizer, scheduler, epoch: int, cfg: TrainConfig, metrics: dict) -> None:
    torch.save(model.state_dict(), out / MODEL_FILE)
    state = {"criterion": criterion.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict() if scheduler else None}
    torch.save(state, out / STATE_FILE)
    meta = {"epoch": epoch + 1, "config": cfg.to_flat_dict(), "metrics": metrics}
    (out / META_FILE).write_text(json.dumps(meta, indent=1, default=float))


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
        model.load_state_dict(torch.load(folder / MODEL_FILE, map_location="cpu", weights_only=True))
        state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
        criterion.load_state_dict(state["criterion"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state["scheduler"] is not None:
            scheduler.load_state_dict(state["scheduler"])
        meta = json.loads((folder / META_FILE).read_text())
        return int(meta["epoch"]), meta.get("metrics", {})
