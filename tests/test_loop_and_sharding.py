"""The plain-torch loop and the DDP work split, without Ray."""

import numpy as np
import pytest
import torch
from torch import nn

from trainables.distributed import all_gather_rows
from trainables.loop import DivergedError, InputPipe, TrainModule, laid_out, predict, train_one_epoch
from trainables.optim import build_optimizer
from trainables.config_sections import OptimConfig


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


class _NanAtStep(nn.Module):
    """BCE, but the loss of step `bad` (counting from 0) is NaN; counts the steps it was asked for."""

    def __init__(self, bad: int):
        super().__init__()
        self.bad, self.steps = bad, 0

    def forward(self, logits, y):
        loss = nn.functional.binary_cross_entropy_with_logits(logits, y)
        self.steps += 1
        return loss * float("nan") if self.steps - 1 == self.bad else loss


@pytest.mark.parametrize("bad", [0, 5, 9])
def test_a_nan_loss_is_caught_within_n_steps_and_names_the_exact_examples_before_it(bad):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3))
    pipe = InputPipe(torch.device("cpu"), (0.5,) * 3, (0.25,) * 3)
    criterion = _NanAtStep(bad)
    optimizer, _ = build_optimizer(OptimConfig(), TrainModule(model, criterion), 4)
    data = _batches(n=16 * 12)  # 12 steps of 16
    with pytest.raises(DivergedError) as err:
        train_one_epoch(TrainModule(model, criterion), data, optimizer, pipe, nan_check_every=4)
    assert f"loss became nan after {bad * 16} examples this epoch" in str(err.value)
    assert "checked every 4 steps" in str(err.value)
    assert bad < criterion.steps <= bad + 4  # found at the first check after it: fetched after step 1, 5, 9, ...


def test_the_epoch_loss_is_the_sum_of_each_step_loss_times_its_batch():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3))
    pipe = InputPipe(torch.device("cpu"), (0.5,) * 3, (0.25,) * 3)
    losses = []

    def criterion(logits, y):
        loss = nn.functional.binary_cross_entropy_with_logits(logits, y)
        losses.append(loss.item())
        return loss

    module = TrainModule(model, criterion)
    optimizer, _ = build_optimizer(OptimConfig(), module, 4)
    data = _batches(n=16 * 7)[:-1] + [(_batches()[0][0][:5], _batches()[0][1][:5])]  # a short last batch
    stats = train_one_epoch(module, data, optimizer, pipe, nan_check_every=3)
    expected = 0.0
    for loss, (_, y) in zip(losses, data):
        expected += loss * len(y)  # as the loop once added loss.item() * batch after each step
    assert stats.examples == 16 * 6 + 5 and stats.loss_sum == expected


@pytest.mark.parametrize("channels_last", [True, False])
def test_on_cpu_the_model_and_its_inputs_take_the_configured_layout_and_train(channels_last):
    """model.channels_last holds on CPU as on a GPU: the convolutions' weights and every input batch are
    channels-last (oneDNN's faster layout), or neither is; the epoch trains either way."""
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    model, pipe = laid_out(conv, torch.device("cpu"), (0.5,) * 3, (0.25,) * 3, channels_last)
    seen = []
    model[0].register_forward_pre_hook(lambda _, inputs: seen.append(
        inputs[0].is_contiguous(memory_format=torch.channels_last)))
    module = TrainModule(model, nn.BCEWithLogitsLoss())
    data = _batches()
    optimizer, scheduler = build_optimizer(OptimConfig(lr=0.05, epochs=1), module, updates_per_epoch=len(data))
    stats = train_one_epoch(module, data, optimizer, pipe, scheduler, 0)
    assert stats.examples == 64 and np.isfinite(stats.loss_sum)
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert seen == [channels_last] * len(data)
