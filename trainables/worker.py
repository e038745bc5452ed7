"""`train_fn_per_worker`: what each Ray Train DDP worker runs for one trial.

This is the only module of `trainables` that talks to `ray.train`. The task (see
`trainables/tasks`) supplies model, criterion, data and evaluation; `loop.train_and_evaluate` runs
each epoch; this file reduces metrics over all ranks first (Tune only sees rank 0's report), and has
rank 0 write the checkpoint with the task's result files every epoch, because an ASHA stop ends the
trial after any report. A user's mistake found here (a UserError) ends the trial with its one line.

Its top level imports only the standard library and Ray: every Train worker, and the trial's own
actor, import this module before a trial can start, so torch, timm and the task are imported inside
the training function, timed as the `imports` phase of the trial's start (`timing/*_s`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import ray.train

from trainables.artifacts import CHECKPOINT_META, MODEL_WEIGHTS, OBJECTIVE, RESUMED, TAG, TRAIN_STATE, WEIGHTS_REPORT
from trainables.errors import UserError, filter_once

if TYPE_CHECKING:
    from trainables.config import TrainConfig
    from trainables.position import Position
    from trainables.tasks import TaskSetup


def _threads() -> int:
    """The worker's CPU share in whole threads. Ray sets OMP_NUM_THREADS to int(share), so the one
    worker of a trial on 2 CPUs (1.99, the driver has 0.01) would use one core of two."""
    share = ray.get_runtime_context().get_assigned_resources().get("CPU") if _in_ray_worker() else None
    if share:
        return max(1, int(share + 0.05))
    return max(1, int(os.environ.get("OMP_NUM_THREADS", "1") or 1))


class _UserErrorsOnce(logging.Filter):
    """Ray Train logs each worker's failure with its traceback; a user's mistake is reported once, in one
    line, by the driver (its progress line and the child run's `error` tag)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return f"{UserError.__module__}.{UserError.__name__}: " not in record.getMessage()


# Ray 2.60 logs "Error in training function:" and the traceback from this logger, on every worker.
_TRAIN_FN_ERRORS = "ray.train.v2._internal.util"


def train_fn_per_worker(config: dict) -> None:
    filter_once(_TRAIN_FN_ERRORS, _UserErrorsOnce)
    try:
        config = dict(config)
        _train(config, config.pop(OBJECTIVE, None) or {})
    except UserError as err:
        # One line, not a traceback per worker: the driver shows it and tags the child run with it.
        raise UserError(str(err)) from None


def _in_ray_worker() -> bool:
    return ray.is_initialized() and ray.get_runtime_context().worker.mode == ray.WORKER_MODE


def _node_id() -> str:
    """The Ray node this process runs on ("local" outside a Ray worker)."""
    return ray.get_runtime_context().get_node_id() if _in_ray_worker() else "local"


def loader_workers(configured: int, on_gpu: bool) -> int:
    """`data.loader_workers`, with -1 resolved: the CPU threads less one on a GPU (the GPU outruns one
    decoding process; the training process needs one thread), none on CPU (the cores train)."""
    if configured >= 0:
        return configured
    return max(0, _threads() - 1) if on_gpu else 0


def steps_per_epoch(task: TaskSetup, world: int, batch: int) -> int:
    rows = task.train_rows(world)
    if rows < batch:
        raise UserError(f"optim.batch_size={batch} is larger than a worker's share of the training data ({rows} "
                        f"rows each over {world} workers), so no step would run: use --set optim.batch_size={max(rows, 1)} "
                        "or less, or fewer workers")
    return rows // batch


def _train(config: dict, objective: dict) -> None:
    """`objective`: the sweep's {"metric", "mode"} (patience watches that metric)."""
    entered = time.time()
    # Ray Train logs every report (with every metric) at INFO; progress is the driver's job.
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    import ray.train.torch
    import torch

    from trainables import rng, timing
    from trainables.config import TrainConfig
    from trainables.distributed import all_gather_objects, all_reduce_max, all_reduce_sum
    from timm.utils import ModelEmaV3

    from trainables.loop import (EpochBatches, TrainModule, ema_updater, evaluate_on_every_rank, laid_out,
                                 train_one_epoch)
    from trainables.models import input_normalization
    from trainables.models.freeze import freeze
    from trainables.models.weights import report_of
    from trainables.optim import build_optimizer
    from trainables.patience import Patience
    from trainables.position import Segment
    from trainables.tasks import EvalContext, get_task

    cfg = TrainConfig.from_dict(config)
    task_spec = get_task(cfg.task)  # imports the task's own modules
    timing.take()
    imported = time.time()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(_threads())
    torch.manual_seed(cfg.seed)
    device = ray.train.torch.get_device()
    on_gpu = device.type == "cuda"

    task = task_spec.build(cfg)
    built = time.time()
    weights_report = report_of(task.model)  # before DDP wraps it; beside every checkpoint
    trainable_params = freeze(task.model, cfg.model.freeze)  # before DDP, which then syncs only the rest
    mean, std = input_normalization(task.model)
    task.model, pipe = laid_out(task.model, device, mean, std, cfg.model.channels_last)
    module = ray.train.torch.prepare_model(TrainModule(task.model, task.criterion))
    wrapped = time.time()
    workers = loader_workers(cfg.data.loader_workers, on_gpu)
    if workers:  # the loader processes decode on the other cores
        torch.set_num_threads(max(1, _threads() - workers))
    batch = cfg.optim.batch_size
    accum = cfg.optim.accum_steps
    batches_per_epoch = steps_per_epoch(task, world, batch)
    steps = -(-batches_per_epoch // accum)  # optimizer updates per epoch: the schedule counts these
    optimizer, scheduler = build_optimizer(cfg.optim, module, steps, task.param_groups)
    # Built from the same weights on every rank (DDP broadcast them), updated from the same reduced steps.
    ema = ModelEmaV3(task.model, decay=cfg.optim.ema) if cfg.optim.ema else None
    patience = Patience(cfg.optim.patience, objective.get("mode", "max"))
    position, last_metrics, streams = _restore(task.model, task.criterion, optimizer, scheduler, steps, ema, patience)
    eval_ctx = EvalContext(pipe, rank, world, batch, workers)
    if (position.epoch >= cfg.optim.epochs or patience.exhausted) and last_metrics:
        # The Train run had already finished when its trial was restarted (a driver killed after a
        # trial ended but before Tune saved that): hand Tune the final result again, not nothing.
        _report_again(rank, last_metrics)
        return
    if position.evaluations and last_metrics:
        # The result of the checkpoint this attempt starts from may never have reached Tune (seen: a node
        # lost between the two): report it again, first. The driver logs each epoch once.
        ray.train.report({**{k: v for k, v in last_metrics.items() if not k.endswith("_unix")}, RESUMED: 1})
    model_seconds = timing.take().get("model_build", 0.0)
    start_phases = {"imports": imported - entered, "data_open": built - imported - model_seconds,
                    "model_build": model_seconds, "ddp_setup": wrapped - built}
    # Which node each rank runs on, in rank order: a trial's record shows where its workers were.
    placement = all_gather_objects(_node_id())

    every = cfg.eval.every_steps
    segment = Segment()  # the training since the last evaluation
    rng.restore_rank(streams, rank, world)  # last before the loop: nothing after the checkpoint drew before it
    first_report = True
    while position.epoch < cfg.optim.epochs:
        batches = EpochBatches(task.train_loader(position.epoch, rank, world, batch, workers), skip=position.batches)
        while not batches.exhausted:
            stats = train_one_epoch(module, batches, optimizer, pipe, scheduler, position.updates, cfg.optim.grad_clip,
                                    cfg.optim.nan_check_every, accum, ema_updater(task.model, ema),
                                    max_updates=every - position.updates % every if every else None)
            segment.add(stats)
            position.advance(stats.updates, batches, cfg.optim.epochs)
            if not position.evaluation_due(every, stats.updates, cfg.optim.epochs):
                continue
            evaluation = evaluate_on_every_rank(task, eval_ctx, ema)
            position.evaluations += 1
            train_loss, train_n = all_reduce_sum([segment.loss_sum, segment.examples])
            seconds = all_reduce_max(segment.seconds)
            metrics = {
                **evaluation.metrics,
                **position.reported(every, batches_per_epoch),
                "train/loss": train_loss / max(train_n, 1),
                "train/images_per_sec": train_n / max(seconds, 1e-9),
                "train/lr": optimizer.param_groups[0]["lr"],
                "train/threads_per_worker": torch.get_num_threads(),
            }
            metrics = patience.observe(metrics, objective.get("metric", ""), step=position.mlflow_step(every))
            if first_report:
                first_report = False
                metrics["workers/nodes"] = len(set(placement))
                metrics["model/trainable_params"] = trainable_params
                metrics["optim/effective_batch"] = batch * world * accum
                metrics[TAG + "worker_nodes"] = ",".join(placement)
                metrics[TAG + "device"] = torch.cuda.get_device_name(device) if on_gpu else "cpu"
                if segment.first_step_time is not None:
                    # Absolute times, so the driver can measure from its own clock (trial start, or fit()).
                    metrics["timing/first_step_unix"] = segment.first_step_time
                    metrics["timing/worker_start_unix"] = entered
                    metrics["timing/worker_setup_s"] = segment.first_step_time - entered
                    start_phases["first_batch"] = segment.first_step_time - wrapped
                    metrics.update({f"timing/{name}_s": value for name, value in start_phases.items()})
            segment = Segment()

            streams = all_gather_objects(rng.capture())  # every rank's, for a resume that goes on as this run
            with tempfile.TemporaryDirectory() as tmp:
                checkpoint = None
                if rank == 0:
                    _save(Path(tmp), task.model, task.criterion, optimizer, scheduler, position, cfg, metrics, ema,
                          patience.state(), streams)
                    evaluation.write_files(Path(tmp))
                    (Path(tmp) / WEIGHTS_REPORT).write_text(json.dumps(weights_report, indent=1))
                    checkpoint = ray.train.Checkpoint.from_directory(tmp)
                _report(metrics, checkpoint)
            if patience.exhausted:  # the best checkpoint is the one Train keeps (scored by the sweep's metric)
                return


def _report(metrics: dict, checkpoint) -> None:
    """ray.train.report; a checkpoint the store would not take (after its bounded retries) ends the trial
    with one line naming where it went, and Tune retries the trial from its last checkpoint."""
    try:
        ray.train.report(metrics, checkpoint=checkpoint)
    except OSError as err:
        from trainables.storage_fs import one_line

        storage = ray.train.get_context().get_storage()
        where = f"{storage.storage_filesystem.type_name}://{storage.experiment_fs_path}"
        raise UserError(f"cannot write the checkpoint to {where}: {one_line(err)}; the trial is retried from its "
                        "last checkpoint (or continue with --resume once the store answers)") from None


def _save(out: Path, model, criterion, optimizer, scheduler, position: Position, cfg: TrainConfig, metrics: dict,
          ema=None, patience: dict | None = None, streams: list[dict] | None = None) -> None:
    """MODEL_WEIGHTS holds the evaluated weights (the EMA's when on: export and predict use those); the
    training weights an EMA run resumes from go into TRAIN_STATE, with every rank's random streams (rng.py)."""
    from trainables.loop import evaluated_model

    save_or_say(evaluated_model(model, ema).state_dict(), out / MODEL_WEIGHTS)
    state = {"criterion": criterion.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict() if scheduler else None, "rng": streams}
    if ema is not None:
        state["model"] = model.state_dict()
    save_or_say(state, out / TRAIN_STATE)
    # "step": the MLflow step of this checkpoint's metrics (export and the model registry read them there).
    meta = {"epoch": position.epoch, "step": metrics.get("step", position.epoch), "position": position.state(),
            "config": cfg.to_flat_dict(), "metrics": metrics, "patience": patience}
    (out / CHECKPOINT_META).write_text(json.dumps(meta, indent=1, default=float))


FREE_MARGIN = 16 * 2**20  # bytes beyond the checkpoint's own below which a failed save is read as a full disk


def tensor_bytes(obj) -> int:
    """The bytes of every tensor in a (nested) state dict: about what torch.save writes."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def save_or_say(obj, path: Path) -> None:
    """torch.save, with a full disk said in one line. torch reports a short write only as "unexpected pos N vs M"
    or "iostream error"; when the folder's disk has less room than the checkpoint, that is what happened."""
    import torch

    try:
        torch.save(obj, path)
    except (RuntimeError, OSError):
        free, needed = shutil.disk_usage(path.parent).free, tensor_bytes(obj)
        if free >= needed + FREE_MARGIN:
            raise  # not the disk: as it was
        raise UserError(f"cannot write the checkpoint to {path.parent}: its disk has {free / 2**20:.0f} MiB free and "
                        f"the checkpoint needs about {needed / 2**20:.0f} MiB; free some space there (or point TMPDIR "
                        "at a larger disk): the trial is retried from its last checkpoint (or continue with --resume)"
                        ) from None


def _report_again(rank: int, metrics: dict) -> None:
    """Report a finished run's last metrics once more, with a copy of its last checkpoint (rank 0)."""
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if rank == 0:
            with ray.train.get_checkpoint().as_directory() as folder:
                shutil.copytree(folder, tmp, dirs_exist_ok=True)
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        _report(metrics, checkpoint)


def _restore(model, criterion, optimizer, scheduler, steps_per_epoch: int, ema=None,
             patience=None) -> tuple[Position, dict, list[dict] | None]:
    """Resume from Ray Train's latest checkpoint if this trial is restarting.

    Returns where training goes on (the start, without a checkpoint), the metrics reported with that
    checkpoint, and every rank's random streams when it was taken (None in an older checkpoint).
    """
    import torch

    from trainables.position import Position

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return Position(), {}, None
    with checkpoint.as_directory() as folder:
        folder = Path(folder)
        evaluated = torch.load(folder / MODEL_WEIGHTS, map_location="cpu", weights_only=True)
        state = torch.load(folder / TRAIN_STATE, map_location="cpu", weights_only=True)
        model.load_state_dict(state.get("model", evaluated))
        if ema is not None:
            ema.module.load_state_dict(evaluated)
        criterion.load_state_dict(state["criterion"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state["scheduler"] is not None:
            scheduler.load_state_dict(state["scheduler"])
        meta = json.loads((folder / CHECKPOINT_META).read_text())
        if patience is not None:
            patience.load(meta.get("patience"))
        return Position.load(meta, steps_per_epoch), meta.get("metrics", {}), state.get("rng")
