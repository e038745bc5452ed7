"""Optimizer and learning-rate schedule by name, through timm's factories."""

from __future__ import annotations

from timm.optim import create_optimizer_v2, list_optimizers
from timm.scheduler import create_scheduler_v2
from torch import nn

from trainables.config import OptimConfig
from trainables.errors import UserError

SCHEDULERS = ("cosine", "tanh", "step", "multistep", "plateau", "poly", "none")


def check_optim_names(cfg: OptimConfig) -> None:
    if cfg.name not in list_optimizers():
        raise UserError(f"unknown optimizer '{cfg.name}' (optim.name); e.g. adamw, sgd, lamb, or any of timm.optim.list_optimizers()")
    if cfg.scheduler not in SCHEDULERS:
        raise UserError(f"unknown scheduler '{cfg.scheduler}' (optim.scheduler); known: {', '.join(SCHEDULERS)}")


def build_optimizer(cfg: OptimConfig, params: nn.Module | list, updates_per_epoch: int):
    """(optimizer, scheduler or None). The schedule steps per update, so short runs still anneal smoothly."""
    check_optim_names(cfg)
    kwargs = {"momentum": cfg.momentum} if cfg.name in ("sgd", "nesterov", "momentum") else {}
    optimizer = create_optimizer_v2(params, opt=cfg.name, lr=cfg.lr, weight_decay=cfg.weight_decay, **kwargs)
    if cfg.scheduler == "none":
        return optimizer, None
    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched=cfg.scheduler,
        num_epochs=cfg.epochs,
        warmup_epochs=cfg.warmup_epochs,
        step_on_epochs=False,
        updates_per_epoch=max(1, updates_per_epoch),
    )
    return optimizer, scheduler
