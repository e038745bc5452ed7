"""The plain-torch loop and the DDP work split, without Ray."""

import numpy as np
import pytest
import torch
from torch import nn

from trainables.distributed import all_gather_rows
from trainables.loop import DivergedError, InputPipe, TrainModule, predict, train_one_epoch
from trainables.optim import build_optimizer
from trainables.config import OptimConfig


def test_gather_is_identity_in_one_process():
    a, b = np.ones((3, 2)), np.zeros((3, 2))
    assert all_gather_rows(a, b)[0] is a


def _batches(n=64, attrs=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8)
    labels = (images.float().mean(dim=(1, 2, 3)) > 127).float().unsqueeze(1).repeat(1, attrs)
    return [(images[i:i + 16], labels[i:i + 16]) for i in range(0, n, 16)]


def test_training_reduces_the_loss_and_evaluate_returns_scores():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3))
    pipe = InputPipe(torch.device("cpu"), (0.5,) * 3, (0.25,) * 3)
    module = TrainModule(model, nn.BCEWithLogitsLoss())
    data = _batches()
    optimizer, scheduler = build_optimizer(OptimConfig(lr=0.05, epochs=5), module, updates_per_epoch=len(data))

    def loss():
        logits, labels = predict(model, data, pipe)
        return float(nn.functional.binary_cross_entropy_with_logits(torch.from_numpy(logits), torch.from_numpy(labels).float()))

    before = loss()
    for epoch in range(5):
        stats = train_one_epoch(module, data, optimizer, pipe, scheduler, epoch * len(data))
        assert stats.examples == 64 and stats.first_step_time is not None
    assert loss() < before
    logits, labels = predict(model, data, pipe)
    assert logits.shape == (64, 3) and labels.shape == (64, 3)
    assert optimizer.param_groups[0]["lr"] < 0.05  # the cosine schedule stepped per update


def test_a_nan_loss_fails_the_epoch_with_a_reason():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3))
    pipe = InputPipe(torch.device("cpu"), (0.5,) * 3, (0.25,) * 3)
    module = TrainModule(model, lambda logits, y: logits.sum() * float("nan"))
    optimizer, _ = build_optimizer(OptimConfig(), module, 4)
    with pytest.raises(DivergedError, match="nan"):
        train_one_epoch(module, _batches(), optimizer, pipe)
