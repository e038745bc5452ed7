"""A registry of multi-label attribute losses, built by name from the `loss.*` config fields.

Each loss is an nn.Module whose constructor arguments are exactly its config keys, so the config
layer passes `loss.<arg>` fields straight through and `loss_arguments` can tell it which keys exist.
`train_prior` (the training positive rate of each attribute) is not a config key: the caller
supplies it from the data, and only losses whose constructor names it receive it.
Every forward takes logits (N, A) and float 0/1 targets (N, A) and returns a scalar mean.
"""

from __future__ import annotations

import inspect

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import sigmoid_focal_loss

from trainables.errors import UserError
from trainables.registry import Registry

LOSSES: Registry[type[nn.Module]] = Registry("loss", key="loss.name")

# Bounds a positive rate away from 0 and 1 so (1-p)/p stays finite for an attribute that is
# never (or always) positive in the training split.
_PRIOR_CLIP = (1e-4, 1.0 - 1e-4)


def register_loss(name: str):
    """Class decorator that makes the loss buildable as `loss.name=<name>`."""
    return LOSSES.register(name)


def loss_arguments(name: str) -> list[str]:
    """The config keys the named loss takes (its constructor's arguments, without train_prior)."""
    params = inspect.signature(LOSSES.get(name)).parameters
    return [arg for arg in params if arg != "train_prior"]


def build_loss(name: str, train_prior: np.ndarray | None = None, **kwargs) -> nn.Module:
    """The named loss built with `kwargs`; `train_prior` goes to losses that accept it."""
    cls = LOSSES.get(name)
    known = loss_arguments(name)
    for arg in kwargs:
        if arg not in known:
            raise UserError(
                f"loss {name!r} takes no argument {arg!r}; its arguments: {', '.join(known) or 'none'}"
            )
    if "train_prior" in inspect.signature(cls).parameters:
        kwargs["train_prior"] = train_prior
    return cls(**kwargs)


@register_loss("bce")
class BCELoss(nn.Module):
    """Binary cross-entropy on logits; `pos_weight=True` weighs each attribute's positives by (1-p)/p."""

    def __init__(self, pos_weight: bool = False, train_prior: np.ndarray | None = None):
        super().__init__()
        weight = None
        if pos_weight:
            if train_prior is None:
                raise ValueError("bce with pos_weight=True needs train_prior, the training positive rates")
            p = np.clip(np.asarray(train_prior, dtype=np.float64), *_PRIOR_CLIP)
            weight = torch.as_tensor((1.0 - p) / p, dtype=torch.float32)
        # A non-persistent buffer follows .to(device) without entering any checkpoint.
        self.register_buffer("pos_weight", weight, persistent=False)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, targets, pos_weight=self.pos_weight)


@register_loss("focal")
class FocalLoss(nn.Module):
    """torchvision's sigmoid focal loss (Lin et al. 2017); a negative alpha disables alpha weighting."""

    def __init__(self, alpha: float = -1.0, gamma: float = 2.0):
        super().__init__()
        self.alpha = float(alpha)
        self.gamma = float(gamma)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return sigmoid_focal_loss(logits, targets, alpha=self.alpha, gamma=self.gamma, reduction="mean")


@register_loss("asl")
class AsymmetricLoss(nn.Module):
    """Asymmetric loss (Ridnik et al. 2021), following the paper's reference `AsymmetricLoss`.

    Negatives' probabilities are shifted down by `clip` (so easy negatives with p < clip add
    nothing) and the two sides are focused with their own gammas. The reference returns the sum
    over elements; this returns the mean over elements, so its scale matches bce and focal and
    does not grow with the batch size or the number of attributes.
    """

    eps = 1e-8

    def __init__(self, gamma_neg: float = 4.0, gamma_pos: float = 0.0, clip: float = 0.05):
        super().__init__()
        self.gamma_neg = float(gamma_neg)
        self.gamma_pos = float(gamma_pos)
        self.clip = float(clip)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # 1 - sigmoid loses everything below ~6e-8 in half precision: work in float32.
        prob = torch.sigmoid(logits.float())
        targets = targets.float()
        prob_neg = 1.0 - prob
        if self.clip > 0:
            prob_neg = (prob_neg + self.clip).clamp(max=1.0)
        loss = targets * torch.log(prob.clamp(min=self.eps))
        loss = loss + (1.0 - targets) * torch.log(prob_neg.clamp(min=self.eps))
        if self.gamma_neg > 0 or self.gamma_pos > 0:
            pt = prob * targets + prob_neg * (1.0 - targets)
            gamma = self.gamma_pos * targets + self.gamma_neg * (1.0 - targets)
            loss = loss * torch.pow(1.0 - pt, gamma)
        return -loss.mean()
