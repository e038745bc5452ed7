"""`model.freeze`: train only part of a model (seed 001 freezes its pretrained backbone).

`none` trains everything; `backbone` everything but the new head (timm's classifier, or the embedding
head of an `EmbeddingNet`); `stages:N` the stem and the first N stages, as timm's coarse `group_matcher`
orders them. A frozen parameter has `requires_grad=False`, so DDP leaves it out of its reducer (no
unused-parameter error) and the optimizer gives it no group and no state. Its BatchNorm layers stay in
eval mode, so their running statistics do not move either: `keep_frozen_norms_eval` after every
`train()`. The model's classes and state_dict keys are unchanged, so export and predict are too.
"""

from __future__ import annotations

from timm.models import group_parameters
from torch import nn

from trainables.config_sections import parse_freeze
from trainables.errors import UserError

def _split(model: nn.Module) -> tuple[nn.Module, str, set[str]]:
    """(the timm backbone, its name prefix in `model`, the names in `model` of the head's parameters)."""
    inner, prefix = (model.backbone, "backbone.") if isinstance(getattr(model, "backbone", None), nn.Module) else (model, "")
    head = set()
    if prefix:  # an EmbeddingNet: its embedding head is new
        head |= {n for n, _ in model.named_parameters() if not n.startswith(prefix)}
    classifier = inner.get_classifier() if hasattr(inner, "get_classifier") else None
    if isinstance(classifier, nn.Module):
        ids = {id(p) for p in classifier.parameters()}
        head |= {prefix + n for n, p in inner.named_parameters() if id(p) in ids}
    return inner, prefix, head


def frozen_names(model: nn.Module, value: str) -> set[str]:
    """The names of the parameters `model.freeze=value` freezes."""
    kind, count = parse_freeze(value)
    if kind == "none":
        return set()
    inner, prefix, head = _split(model)
    if kind == "backbone":
        return {n for n, _ in model.named_parameters() if n not in head}
    matcher = getattr(inner, "group_matcher", None)
    if matcher is None:
        raise UserError(f"model.freeze={value}: backbone {type(inner).__name__} declares no stages; "
                        "use --set model.freeze=backbone")
    groups = [[prefix + n for n in names] for _, names in sorted(group_parameters(inner, matcher(coarse=True)).items())]
    groups = [g for g in groups if not set(g) & head]  # the stem, then the stages
    if count > len(groups) - 1:
        raise UserError(f"model.freeze={value}: {type(inner).__name__} has {len(groups) - 1} stages; "
                        f"use --set model.freeze=stages:{len(groups) - 1} or less, or model.freeze=backbone")
    return {n for g in groups[:count + 1] for n in g}


def freeze(model: nn.Module, value: str) -> int:
    """Freeze what `value` names, in place, and put its norms in eval mode; returns the trainable count."""
    names = frozen_names(model, value)
    for name, param in model.named_parameters():
        if name in names:
            param.requires_grad_(False)
    keep_frozen_norms_eval(model)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def keep_frozen_norms_eval(module: nn.Module) -> None:
    """Every BatchNorm whose parameters are all frozen back in eval mode (call after `module.train()`)."""
    for sub in module.modules():
        if isinstance(sub, nn.modules.batchnorm._BatchNorm):
            params = list(sub.parameters())
            if params and not any(p.requires_grad for p in params):
                sub.eval()
