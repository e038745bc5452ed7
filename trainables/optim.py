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


def build_optimizer(cfg: OptimConfig, module: nn.Module, updates_per_epoch: int, extra_groups: list[dict] = ()):
    """(optimizer, scheduler or None). The schedule steps per update, so short runs still anneal smoothly.

    `extra_groups` are param groups with their own settings (e.g. center-loss centers with their own
    learning rate); their parameters are left out of the main groups.
    """
    check_optim_names(cfg)
    kwargs = {"momentum": cfg.momentum} if cfg.name in ("sgd", "nesterov", "momentum") else {}
    special = {id(p) for group in extra_groups for p in group["params"]}
    main = [(n, p) for n, p in module.named_parameters() if p.requires_grad and id(p) not in special]
    groups = _decay_groups(main, cfg.weight_decay) + [dict(g) for g in extra_groups]
    optimizer = create_optimizer_v2(groups, opt=cfg.name, lr=cfg.lr, weight_decay=cfg.weight_decay, **kwargs)
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


def _decay_groups(named: list, weight_decay: float) -> list[dict]:
    """No weight decay on biases and norm weights (1-d tensors), as timm does for a whole model."""
    decay = [p for _, p in named if p.ndim > 1]
    no_decay = [p for _, p in named if p.ndim <= 1]
    return [g for g in ({"params": decay, "weight_decay": weight_decay},
                        {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
