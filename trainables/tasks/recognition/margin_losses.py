"""Face-recognition classification heads (softmax, ArcFace, CosFace, combined margin) and center loss.

Each head is an nn.Module that owns its (num_classes, D) class-weight Parameter, so wrapping the
model and the criterion in one DDP module synchronises it. A head's `forward(embeddings, labels)`
returns the logits its loss sees (margin applied to each row's target class, scaled by s); with
`labels=None` it returns the margin-free logits (s * cos theta) for prediction. Every head's `loss`
is a cross-entropy on those logits with two optional extras from seed 004:
  - `label_smoothing` (0 disables): torch's label-smoothed cross-entropy;
  - `focal_gamma` (0 disables): each example's cross-entropy weighted by (1 - p_t)^gamma, where p_t
    is the softmax probability of the target class (seed 004's multi-class focal loss).
`build_margin_head(name, ...)` builds a head by name from MARGIN_HEADS; `RecognitionCriterion`
adds an optional center loss and is what the training loop calls.
"""

from __future__ import annotations

import inspect
import math

import torch
import torch.nn.functional as F
from torch import nn

from trainables.errors import UserError
from trainables.registry import Registry

# Keeps acos / sqrt(1 - cos^2) differentiable at cos = +-1 (their derivatives are infinite there).
_COS_EPS = 1e-7


def margin_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0,
                         focal_gamma: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy with optional label smoothing and focal weighting (both 0: plain CE)."""
    ce = F.cross_entropy(logits, labels, reduction="none", label_smoothing=label_smoothing)
    if focal_gamma > 0.0:
        p_target = F.log_softmax(logits, dim=1).gather(1, labels[:, None]).squeeze(1).exp()
        ce = (1.0 - p_target).pow(focal_gamma) * ce
    return ce.mean()


class MarginHead(nn.Module):
    """Shared parts: the class weights, the cosine logits, the margin on the target, the loss."""

    def __init__(self, num_classes: int, embedding_size: int, s: float = 64.0,
                 label_smoothing: float = 0.0, focal_gamma: float = 0.0):
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise UserError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if focal_gamma < 0.0:
            raise UserError(f"focal_gamma must be >= 0 (0 disables), got {focal_gamma}")
        self.s = s
        self.label_smoothing = label_smoothing
        self.focal_gamma = focal_gamma
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size))
        nn.init.normal_(self.weight, std=0.01)

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """cos theta between each L2-normalised embedding and each L2-normalised class weight."""
        return F.linear(F.normalize(embeddings, dim=1), F.normalize(self.weight, dim=1))

    def target_margin(self, cos_target: torch.Tensor) -> torch.Tensor:
        """The target class's cosine after the margin (subclasses); the identity means no margin."""
        return cos_target

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        cos = self.cosine(embeddings)
        if cos.dtype in (torch.float16, torch.bfloat16):
            cos = cos.float()  # under autocast: acos/sqrt near +-1 and s=64 logits need float32
        if labels is None:
            return self.s * cos
        index = labels[:, None]
        # Only the target column changes, so the margin is computed on N values, not N x C.
        target = self.target_margin(cos.gather(1, index).clamp(-1.0 + _COS_EPS, 1.0 - _COS_EPS))
        return self.s * cos.scatter(1, index, target)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return margin_cross_entropy(logits, labels, self.label_smoothing, self.focal_gamma)


MARGIN_HEADS: Registry[type[MarginHead]] = Registry("margin head", key="head.name")


@MARGIN_HEADS.register("softmax")
class SoftmaxHead(MarginHead):
    """Plain softmax. `normalized=False` (default): linear logits W f on the UN-normalised embedding
    (no bias, `s` unused), the classic softmax baseline. `normalized=True`: s * cos theta (NormFace),
    which is ArcFace/CosFace with a zero margin."""

    def __init__(self, num_classes: int, embedding_size: int, normalized: bool = False, s: float = 64.0,
                 label_smoothing: float = 0.0, focal_gamma: float = 0.0):
        super().__init__(num_classes, embedding_size, s, label_smoothing, focal_gamma)
        self.normalized = normalized

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.normalized:
            return self.s * self.cosine(embeddings)
        return F.linear(embeddings, self.weight)


@MARGIN_HEADS.register("arcface")
class ArcFaceHead(MarginHead):
    """ArcFace: target logit s * cos(theta + m).

    Past theta + m > pi, cos(theta + m) would rise again and reward moving away from the class, so,
    as InsightFace does, the target becomes cos theta - m * sin(pi - m) when cos theta <= cos(pi - m)
    (a CosFace-like penalty continuous at the switch). With `easy_margin`, the margin applies only
    when cos theta > 0 and the target is plain cos theta otherwise.
    """

    def __init__(self, num_classes: int, embedding_size: int, s: float = 64.0, m: float = 0.5,
                 easy_margin: bool = False, label_smoothing: float = 0.0, focal_gamma: float = 0.0):
        super().__init__(num_classes, embedding_size, s, label_smoothing, focal_gamma)
        self.m = m
        self.easy_margin = easy_margin
        self.cos_m, self.sin_m = math.cos(m), math.sin(m)
        self.th = math.cos(math.pi - m)
        self.mm = math.sin(math.pi - m) * m

    def target_margin(self, cos_target: torch.Tensor) -> torch.Tensor:
        sin = torch.sqrt(1.0 - cos_target * cos_target)
        phi = cos_target * self.cos_m - sin * self.sin_m  # cos(theta + m)
        if self.easy_margin:
            return torch.where(cos_target > 0, phi, cos_target)
        return torch.where(cos_target > self.th, phi, cos_target - self.mm)


@MARGIN_HEADS.register("cosface")
class CosFaceHead(MarginHead):
    """CosFace: target logit s * (cos theta - m)."""

    def __init__(self, num_classes: int, embedding_size: int, s: float = 64.0, m: float = 0.35,
                 label_smoothing: float = 0.0, focal_gamma: float = 0.0):
        super().__init__(num_classes, embedding_size, s, label_smoothing, focal_gamma)
        self.m = m

    def target_margin(self, cos_target: torch.Tensor) -> torch.Tensor:
        return cos_target - self.m


@MARGIN_HEADS.register("combined")
class CombinedMarginHead(MarginHead):
    """InsightFace's combined margin: target logit s * (cos(m1 * theta + m2) - m3).

    m1=1, m2=0.5, m3=0 is ArcFace without its fallback; m1=1, m2=0, m3=0.35 is CosFace. The formula is
    applied as written for every theta (no fallback), as InsightFace's combined-margin code does.
    """

    def __init__(self, num_classes: int, embedding_size: int, s: float = 64.0, m1: float = 1.0,
                 m2: float = 0.3, m3: float = 0.2, label_smoothing: float = 0.0, focal_gamma: float = 0.0):
        super().__init__(num_classes, embedding_size, s, label_smoothing, focal_gamma)
        self.m1, self.m2, self.m3 = m1, m2, m3

    def target_margin(self, cos_target: torch.Tensor) -> torch.Tensor:
        return torch.cos(self.m1 * torch.acos(cos_target) + self.m2) - self.m3


def margin_head_arguments(name: str) -> list[str]:
    """The keyword arguments the named head takes besides num_classes and embedding_size."""
    params = inspect.signature(MARGIN_HEADS.get(name)).parameters
    return [arg for arg in params if arg not in ("num_classes", "embedding_size")]


def build_margin_head(name: str, num_classes: int, embedding_size: int, **kwargs) -> MarginHead:
    """The named head; an unknown name or keyword is a one-line UserError listing the known ones."""
    known = margin_head_arguments(name)
    for arg in kwargs:
        if arg not in known:
            raise UserError(f"margin head {name!r} takes no argument {arg!r}; its arguments: {', '.join(known)}")
    return MARGIN_HEADS.get(name)(num_classes, embedding_size, **kwargs)


def scale_grad(x: torch.Tensor, scale: float) -> torch.Tensor:
    """`x` unchanged in the forward pass; its gradient multiplied by `scale` in the backward pass."""
    return x * scale + x.detach() * (1.0 - scale)


class CenterLoss(nn.Module):
    """Center loss (Wen et al. 2016): 0.5 * mean over the batch of ||f_i - c_{y_i}||^2.

    The centers are a Parameter (so DDP averages their gradient and a checkpoint keeps them) trained
    by the optimizer, not by the paper's hand-written update. Its gradient for center j is
    -(1/N) * sum_{i: y_i = j} (f_i - c_j): the paper's update with the batch size N as the
    denominator instead of 1 + n_j.
    """

    def __init__(self, num_classes: int, embedding_size: int):
        super().__init__()
        self.centers = nn.Parameter(torch.randn(num_classes, embedding_size) * 0.01)

    def forward(self, features: torch.Tensor, labels: torch.Tensor, center_grad_scale: float = 1.0) -> torch.Tensor:
        centers = self.centers if center_grad_scale == 1.0 else scale_grad(self.centers, center_grad_scale)
        return 0.5 * (features - centers[labels]).pow(2).sum(dim=1).mean()


def center_param_group(center_loss: CenterLoss, lam: float, lr: float) -> dict:
    """The optimizer param group for the centers: learning rate `lr` (the center rate alpha), no
    weight decay (decay would pull every center towards the origin).

    Semantics, with `RecognitionCriterion(center_weight=lam)`: the total loss holds lam * L_c, but the
    criterion scales the centers' gradient by 1/lam (as the original center-loss code does after
    backward), so after backward `centers.grad` is dL_c/dc whatever lam is, and an SGD step moves the
    centers by lr * dL_c/dc: the centers move at their own rate alpha = lr, independent of lam, while
    lam still weighs how strongly features are pulled. `lam` is recorded in the group as
    `center_weight` (optimizers keep extra keys) so the pairing is visible in a checkpoint.
    """
    if lam <= 0.0:
        raise UserError(f"center loss weight must be > 0 to train centers, got {lam}")
    return {"params": [center_loss.centers], "lr": lr, "weight_decay": 0.0, "center_weight": lam}


class RecognitionCriterion(nn.Module):
    """Margin head + optional center loss: loss = head CE + center_weight * L_c.

    `forward(embeddings, labels) -> (loss, logits)`, where logits are the head's margin logits (the
    ones the loss saw). The class weights and centers live in this module, so the caller can wrap
    model + criterion in one DDP module and put `center_param_group(criterion.center_loss, ...)` in
    the optimizer. The centers' gradient is scaled by 1 / center_weight (see center_param_group).
    """

    def __init__(self, head: MarginHead, center_loss: CenterLoss | None = None, center_weight: float = 0.0):
        super().__init__()
        if center_weight < 0.0:
            raise UserError(f"center loss weight must be >= 0 (0 disables), got {center_weight}")
        self.head = head
        self.center_weight = center_weight
        self.center_loss = center_loss if center_weight > 0.0 else None

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.head(embeddings, labels)
        loss = self.head.loss(logits, labels)
        if self.center_loss is not None:
            lam = self.center_weight
            loss = loss + lam * self.center_loss(embeddings, labels, center_grad_scale=1.0 / lam)
        return loss, logits


def build_recognition_criterion(name: str, num_classes: int, embedding_size: int, center_weight: float = 0.0,
                                **head_kwargs) -> RecognitionCriterion:
    """The named margin head (with its kwargs) plus a center loss when center_weight > 0."""
    head = build_margin_head(name, num_classes, embedding_size, **head_kwargs)
    center = CenterLoss(num_classes, embedding_size) if center_weight > 0.0 else None
    return RecognitionCriterion(head, center, center_weight)
