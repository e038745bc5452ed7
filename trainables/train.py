"""`train_fn_per_worker`: what each Ray Train DDP worker runs for one trial.

This is the only module of `trainables` that talks to `ray.train`. Every reported metric is
reduced over all ranks first (Tune only sees rank 0's report); rank 0 writes the checkpoint and
the result files beside it, every epoch, because an ASHA stop ends the trial after any report.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import ray.train
import ray.train.torch
import torch

from trainables.attributes import build_attribute_data, epoch_metrics, write_attribute_files
from trainables.config import TrainConfig
from trainables.data.loading import eval_share, make_loader, train_share
from trainables.data.sources import load_index
from trainables.distributed import all_gather_rows, all_reduce_max, all_reduce_sum
from trainables.loop import InputPipe, evaluate, train_one_epoch
from trainables.losses import build_loss, loss_arguments
from trainables.models import build_model, input_normalization
from trainables.optim import build_optimizer

MODEL_FILE, STATE_FILE, META_FILE = "model.pt", "train_state.pt", "meta.json"


def _threads() -> int:
    """Ray sets OMP_NUM_THREADS to the worker's CPU share; torch should use exactly that."""
    return max(1, int(os.environ.get("OMP_NUM_THREADS", "1") or 1))


def _loss_kwargs(cfg: TrainConfig) -> dict:
    return {name: getattr(cfg.loss, name) for name in loss_arguments(cfg.loss.name)}


def train_fn_per_worker(config: dict) -> None:
    fit_started = time.time()
    cfg = TrainConfig.from_dict(config)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(_threads())
    torch.manual_seed(cfg.seed)
    device = ray.train.torch.get_device()

    data = build_attribute_data(load_index(cfg.data), cfg)
    model = build_model(cfg.model, num_outputs=len(data.names))
    mean, std = input_normalization(model)
    on_gpu = device.type == "cuda"
    if on_gpu and cfg.model.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = ray.train.torch.prepare_model(model)
    loss_fn = build_loss(cfg.loss.name, train_prior=data.train_prior, **_loss_kwargs(cfg)).to(device)
    pipe = InputPipe(device, mean, std, channels_last=on_gpu and cfg.model.channels_last)

    workers = int(os.environ.get("FACE_ORCHESTRATOR_LOADER_WORKERS", "0"))
    batch = cfg.optim.batch_size
    steps_per_epoch = (len(data.train) // world) // batch
    optimizer, scheduler = build_optimizer(cfg.optim, model, steps_per_epoch)
    start_epoch = _restore(model, optimizer, scheduler)

    val_loader = make_loader(data.val, eval_share(len(data.val), rank, world), batch, workers, train=False)
    test_loader = make_loader(data.test, eval_share(len(data.test), rank, world), batch, workers, train=False)

    for epoch in range(start_epoch, cfg.optim.epochs):
        share = train_share(len(data.train), rank, world, epoch, cfg.seed)
        loader = make_loader(data.train, share, batch, workers, train=True)
        stats = train_one_epoch(
            model, loader, loss_fn, optimizer, pipe, scheduler, epoch * steps_per_epoch, cfg.optim.grad_clip
        )
        val_loss, val_scores, val_labels = evaluate(model, val_loader, loss_fn, pipe)
        _, test_scores, test_labels = evaluate(model, test_loader, loss_fn, pipe)
        val_scores, val_labels, test_scores, test_labels = all_gather_rows(val_scores, val_labels, test_scores, test_labels)
        train_loss, train_n, val_loss_sum = all_reduce_sum([stats.loss_sum, stats.examples, val_loss])
        seconds = all_reduce_max(stats.seconds)

        metrics, thresholds = epoch_metrics(
            val_scores, val_labels, test_scores, test_labels, data.train_prior, cfg.eval.threshold
        )
        metrics.update({
            "epoch": epoch + 1,
            "train/loss": train_loss / max(train_n, 1),
            "val/loss": val_loss_sum / max(len(val_labels), 1),
            "train/images_per_sec": train_n / max(seconds, 1e-9),
            "train/lr": optimizer.param_groups[0]["lr"],
            "train/threads_per_worker": torch.get_num_threads(),
        })
        if epoch == start_epoch and stats.first_step_time is not None:
            # Absolute, so the driver can measure from its own clock (trial start, or fit()).
            metrics["timing/first_step_unix"] = stats.first_step_time
            metrics["timing/worker_setup_s"] = stats.first_step_time - fit_started

        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if rank == 0:
                out = Path(tmp)
                _save(out, model, optimizer, scheduler, epoch, cfg)
                splits = {"val": (val_scores, val_labels), "test": (test_scores, test_labels)}
                write_attribute_files(out, data.names, thresholds, data.train_prior, splits)
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=checkpoint)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def _save(out: Path, model, optimizer, scheduler, epoch: int, cfg: TrainConfig) -> None:
    torch.save(_unwrap(model).state_dict(), out / MODEL_FILE)
    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict() if scheduler else None}
    torch.save(state, out / STATE_FILE)
    (out / META_FILE).write_text(json.dumps({"epoch": epoch + 1, "config": cfg.to_flat_dict()}, indent=1))


def _restore(model, optimizer, scheduler) -> int:
    """Resume from Ray Train's latest checkpoint if this trial is restarting; returns the first epoch to run."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0
    with checkpoint.as_directory() as folder:
        folder = Path(folder)
        _unwrap(model).load_state_dict(torch.load(folder / MODEL_FILE, map_location="cpu", weights_only=True))
        state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state["scheduler"] is not None:
            scheduler.load_state_dict(state["scheduler"])
        return int(json.loads((folder / META_FILE).read_text())["epoch"])
