"""Optimizer and learning-rate schedule by name, through timm's factories."""

from __future__ import annotations

from timm.optim import create_optimizer_v2, list_optimizers, param_groups_weight_decay
from timm.scheduler import create_scheduler_v2
from torch import nn

from trainables.config_sections import OptimConfig
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
    groups = [{**g, "params": [p for p in g["params"] if id(p) not in special]} for g in decay_groups(module, cfg.weight_decay)]
    groups = [g for g in groups if g["params"]] + [dict(g) for g in extra_groups]
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


def decay_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """timm's groups: no weight decay on biases, norms (1-d tensors) and whatever a model names in its
    `no_weight_decay()` (a ViT's position embedding and class token), wherever that model sits inside
    `module` (a TrainModule, maybe DDP-wrapped). Frozen parameters are in no group."""
    skip = set()
    for prefix, sub in module.named_modules():
        names = getattr(sub, "no_weight_decay", None)
        if callable(names):
            skip |= {f"{prefix}.{name}" if prefix else name for name in names()}
    return param_groups_weight_decay(module, weight_decay, no_weight_decay_list=skip)
