"""The loss registry builds each loss by name, and each loss reduces to BCE where it should."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trainables.errors import UserError
from trainables.tasks.attributes.losses import LOSSES, build_loss, loss_arguments, register_loss

PRIOR = np.linspace(0.02, 0.9, 5)


def batch(scale=3.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(16, 5, generator=gen) * scale).requires_grad_()
    targets = (torch.rand(16, 5, generator=gen) < 0.3).float()
    return logits, targets


def test_registry_names_and_arguments():
    assert sorted(LOSSES) == ["asl", "bce", "focal"]
    assert loss_arguments("bce") == ["pos_weight"]
    assert loss_arguments("focal") == ["alpha", "gamma"]
    assert loss_arguments("asl") == ["gamma_neg", "gamma_pos", "clip"]


@pytest.mark.parametrize("name,kwargs", [
    ("bce", {}), ("bce", {"pos_weight": True}), ("focal", {}), ("focal", {"alpha": 0.25}), ("asl", {}),
])
@pytest.mark.parametrize("scale", [3.0, 40.0])  # 40: saturated sigmoids
def test_loss_and_gradients_are_finite(name, kwargs, scale):
    logits, targets = batch(scale)
    loss = build_loss(name, train_prior=PRIOR, **kwargs)(logits, targets)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0


def test_focal_without_focusing_or_alpha_is_bce():
    logits, targets = batch()
    focal = build_loss("focal", alpha=-1.0, gamma=0.0)(logits, targets)
    assert torch.allclose(focal, F.binary_cross_entropy_with_logits(logits, targets))


def test_asl_without_focusing_or_clip_is_bce():
    logits, targets = batch()
    asl = build_loss("asl", gamma_neg=0.0, gamma_pos=0.0, clip=0.0)(logits, targets)
    assert torch.allclose(asl, F.binary_cross_entropy_with_logits(logits, targets), atol=1e-6)


def test_asl_ignores_negatives_below_the_clip():
    # A negative with probability below `clip` is shifted to zero and contributes nothing.
    loss = build_loss("asl", clip=0.05)(torch.tensor([[-5.0]]), torch.tensor([[0.0]]))
    assert loss.item() == 0.0


def test_bce_pos_weight_is_negative_over_positive_rate():
    module = build_loss("bce", train_prior=PRIOR, pos_weight=True)
    assert torch.allclose(module.pos_weight, torch.tensor((1 - PRIOR) / PRIOR, dtype=torch.float32))
    logits, targets = batch()
    expected = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=module.pos_weight)
    assert torch.allclose(module(logits, targets), expected)
    never_positive = build_loss("bce", train_prior=np.array([0.0, 1.0]), pos_weight=True).pos_weight
    assert torch.isfinite(never_positive).all()


def test_bce_without_pos_weight_ignores_prior():
    module = build_loss("bce", train_prior=PRIOR)
    assert module.pos_weight is None


def test_bce_pos_weight_needs_a_prior():
    with pytest.raises(ValueError, match="train_prior"):
        build_loss("bce", pos_weight=True)


def test_unknown_loss_lists_known_ones():
    with pytest.raises(UserError, match=r"^unknown loss 'x' \(loss\.name\); known: asl, bce, focal$"):
        build_loss("x")
    with pytest.raises(UserError, match="unknown loss"):
        loss_arguments("x")


def test_unknown_argument_names_it_and_lists_the_loss_arguments():
    with pytest.raises(UserError, match=r"'focal' takes no argument 'gamma_neg'.*alpha, gamma$"):
        build_loss("focal", gamma_neg=2.0)


def test_register_loss_adds_a_buildable_class():
    @register_loss("_test_l1")
    class L1(torch.nn.Module):
        def __init__(self, scale: float = 1.0):
            super().__init__()
            self.scale = scale

        def forward(self, logits, targets):
            return self.scale * (torch.sigmoid(logits) - targets).abs().mean()

    try:
        assert loss_arguments("_test_l1") == ["scale"]
        assert build_loss("_test_l1", train_prior=PRIOR, scale=2.0).scale == 2.0
    finally:
        LOSSES._items.pop("_test_l1")  # the registry has no public unregister
