"""Margin heads on hand-computed angles, the CE extras, center loss semantics, and the registry."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from trainables.errors import UserError
from trainables.tasks.recognition.margin_losses import (MARGIN_HEADS, CenterLoss, RecognitionCriterion, build_margin_head,
                                      build_recognition_criterion, center_param_group, margin_cross_entropy)

S = 64.0
# Embeddings at these angles from class 0's weight (the x axis); class 1's weight is the y axis.
ANGLES = torch.tensor([0.3, 1.0, 2.0, 2.9], dtype=torch.float64)


def _head(name, **kwargs):
    head = build_margin_head(name, num_classes=2, embedding_size=2, **kwargs).double()
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[3.0, 0.0], [0.0, 0.5]]))  # norms must not matter
    return head


def _embeddings():
    return torch.stack([torch.cos(ANGLES), torch.sin(ANGLES)], dim=1) * 7.0


def _target_logits(head):
    labels = torch.zeros(len(ANGLES), dtype=torch.long)
    logits = head(_embeddings(), labels)
    # The non-target column stays s * cos(angle to class 1) = s * sin(theta).
    torch.testing.assert_close(logits[:, 1], S * torch.sin(ANGLES))
    return logits[:, 0]


def test_arcface_with_zero_margin_is_the_scaled_cosine_softmax():
    head = _head("arcface", s=S, m=0.0)
    emb, labels = torch.randn(8, 2, dtype=torch.float64), torch.randint(0, 2, (8,))
    expected = S * F.normalize(emb) @ F.normalize(head.weight).T
    torch.testing.assert_close(head(emb, labels), expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(head(emb), expected)


def test_arcface_target_logit_and_the_fallback_past_pi():
    m = 0.5
    got = _target_logits(_head("arcface", s=S, m=m))
    expected = []
    for theta in ANGLES.tolist():
        if theta + m <= math.pi:  # cos theta > cos(pi - m)
            expected.append(S * math.cos(theta + m))
        else:  # 2.9 + 0.5 > pi: InsightFace's cos theta - m sin(pi - m)
            expected.append(S * (math.cos(theta) - m * math.sin(math.pi - m)))
    assert ANGLES[-1] + m > math.pi
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64))


def test_arcface_easy_margin_applies_only_when_cos_is_positive():
    m = 0.5
    got = _target_logits(_head("arcface", s=S, m=m, easy_margin=True))
    expected = [S * (math.cos(t + m) if math.cos(t) > 0 else math.cos(t)) for t in ANGLES.tolist()]
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64))


def test_cosface_and_combined_formulas():
    got = _target_logits(_head("cosface", s=S, m=0.35))
    torch.testing.assert_close(got, S * (torch.cos(ANGLES) - 0.35))
    got = _target_logits(_head("combined", s=S, m1=0.9, m2=0.3, m3=0.2))
    torch.testing.assert_close(got, S * (torch.cos(0.9 * ANGLES + 0.3) - 0.2))


def test_softmax_plain_and_normalised():
    emb, labels = torch.randn(5, 2, dtype=torch.float64), torch.randint(0, 2, (5,))
    plain = _head("softmax")
    torch.testing.assert_close(plain(emb, labels), emb @ plain.weight.T)
    normed = _head("softmax", normalized=True, s=S)
    torch.testing.assert_close(normed(emb, labels), S * F.normalize(emb) @ F.normalize(normed.weight).T)


def test_gradients_stay_finite_when_an_embedding_sits_on_its_class_weight():
    for name in MARGIN_HEADS:
        head = build_margin_head(name, 3, 4)
        emb = head.weight.detach()[[0, 1]].clone().requires_grad_(True)  # cos = 1 exactly
        loss = head.loss(head(emb, torch.tensor([0, 1])), torch.tensor([0, 1]))
        loss.backward()
        assert torch.isfinite(emb.grad).all() and torch.isfinite(head.weight.grad).all(), name


def test_label_smoothing_and_focal_off_is_plain_cross_entropy():
    logits, labels = torch.randn(16, 5), torch.randint(0, 5, (16,))
    torch.testing.assert_close(margin_cross_entropy(logits, labels), F.cross_entropy(logits, labels))
    torch.testing.assert_close(margin_cross_entropy(logits, labels, label_smoothing=0.1),
                               F.cross_entropy(logits, labels, label_smoothing=0.1))
    p = F.softmax(logits, 1)[torch.arange(16), labels]
    focal = ((1 - p) ** 2 * -torch.log(p)).mean()  # seed 004's multi-class focal loss
    torch.testing.assert_close(margin_cross_entropy(logits, labels, focal_gamma=2.0), focal)
    head = build_margin_head("arcface", 5, 3, label_smoothing=0.1, focal_gamma=2.0)
    emb = torch.randn(16, 3)
    logits = head(emb, labels)
    torch.testing.assert_close(head.loss(logits, labels), margin_cross_entropy(logits, labels, 0.1, 2.0))


def test_registry_rejects_unknown_names_and_arguments():
    with pytest.raises(UserError, match="arcface.*combined|combined.*arcface"):
        build_margin_head("sphereface", 10, 8)
    with pytest.raises(UserError, match="'margin'.*easy_margin"):
        build_margin_head("arcface", 10, 8, margin=0.5)
    assert set(MARGIN_HEADS) == {"softmax", "arcface", "cosface", "combined"}


def test_center_loss_value_and_sgd_pulls_features_to_centers():
    torch.manual_seed(0)
    center = CenterLoss(4, 3)
    feats = torch.nn.Parameter(torch.randn(12, 3))
    labels = torch.arange(12) % 4
    expected = 0.5 * ((feats - center.centers[labels]) ** 2).sum(1).mean()
    torch.testing.assert_close(center(feats, labels), expected)
    opt = torch.optim.SGD([feats, center.centers], lr=2.0)  # the mean over 12 makes each gradient small
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = center(feats, labels)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0] and all(b < a for a, b in zip(losses, losses[1:]))


def _center_step(lam, head, center, emb, labels, alpha=0.5):
    criterion = RecognitionCriterion(copy.deepcopy(head), copy.deepcopy(center), center_weight=lam)
    emb = emb.clone().requires_grad_(True)
    opt = torch.optim.SGD([{"params": criterion.head.parameters()},
                           center_param_group(criterion.center_loss, lam, lr=alpha)],
                          lr=0.1, momentum=0.9, weight_decay=5e-4)
    before = criterion.center_loss.centers.detach().clone()
    loss, logits = criterion(emb, labels)
    loss.backward()
    grad = criterion.center_loss.centers.grad.clone()
    opt.step()
    return grad, criterion.center_loss.centers.detach() - before, emb.grad, logits


def test_centers_move_at_their_own_rate_whatever_lambda():
    torch.manual_seed(0)
    head, center = build_margin_head("arcface", 4, 3).double(), CenterLoss(4, 3).double()
    emb, labels = torch.randn(8, 3, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    alpha = 0.5
    g1, step1, f1, logits = _center_step(0.005, head, center, emb, labels, alpha)
    g2, step2, f2, _ = _center_step(0.03, head, center, emb, labels, alpha)
    # After backward the centers hold dL_c/dc = -(1/N) sum_{y_i = j} (f_i - c_j), for any lambda ...
    c = center.centers.detach()
    analytic = torch.zeros_like(c).index_add_(0, labels, -(emb - c[labels]) / len(emb))
    torch.testing.assert_close(g1, analytic)
    torch.testing.assert_close(g2, analytic)
    # ... so one SGD step moves them by exactly -alpha * dL_c/dc (no momentum history, no decay).
    torch.testing.assert_close(step1, -alpha * analytic)
    torch.testing.assert_close(step2, -alpha * analytic)
    # The features' pull still grows with lambda: the center term's feature gradient is lambda dL_c/df.
    _, _, f0, _ = _center_step(1e-12, head, center, emb, labels, alpha)
    torch.testing.assert_close((f2 - f0) / 0.03, (f1 - f0) / 0.005, rtol=1e-3, atol=1e-6)
    assert logits.shape == (8, 4)


def test_center_param_group_and_criterion_parameters():
    crit = build_recognition_criterion("cosface", 6, 5, center_weight=0.03, m=0.3)
    names = {n for n, _ in crit.named_parameters()}
    assert names == {"head.weight", "center_loss.centers"}
    group = center_param_group(crit.center_loss, 0.03, lr=0.5)
    assert group["params"][0] is crit.center_loss.centers and group["weight_decay"] == 0.0 and group["lr"] == 0.5
    with pytest.raises(UserError):
        center_param_group(crit.center_loss, 0.0, lr=0.5)
    plain = build_recognition_criterion("arcface", 6, 5)
    assert plain.center_loss is None and {n for n, _ in plain.named_parameters()} == {"head.weight"}
    loss, logits = plain(torch.randn(4, 5), torch.tensor([0, 1, 2, 3]))
    assert loss.ndim == 0 and logits.shape == (4, 6)
