"""One training epoch and one evaluation pass, in plain PyTorch (testable without Ray).

Batches arrive as uint8 images; `InputPipe` moves them to the device, converts and normalises
them there (and switches to channels_last when the model is), so that loader workers only decode.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass


import numpy as np
import torch
from torch import nn

from trainables.distributed import broadcast_from_rank0
from trainables.models.freeze import keep_frozen_norms_eval


class DivergedError(RuntimeError):
    """The loss became NaN or infinite: the trial fails itself with this reason."""


@dataclass
class InputPipe:
    device: torch.device
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels_last: bool = False

    def __post_init__(self):
        shape = (1, -1, 1, 1)
        self._mean = torch.tensor(self.mean, device=self.device).view(shape) * 255
        self._std = torch.tensor(self.std, device=self.device).view(shape) * 255

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device, non_blocking=True).float()
        x = (x - self._mean) / self._std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def laid_out(model: nn.Module, device: torch.device, mean, std, channels_last: bool) -> tuple[nn.Module, InputPipe]:
    """The model in the memory layout its inputs will have, and the pipe that gives them that layout:
    channels-last (`model.channels_last`) on a GPU and on CPU alike, where oneDNN's convolutions are faster
    in it too."""
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, InputPipe(device, mean, std, channels_last=channels_last)


def autocast(device: torch.device):
    """bf16 autocast on CUDA (no loss scaler needed); full precision on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


class TrainModule(nn.Module):
    """The model and its criterion as one module, so that DDP synchronises the criterion's own
    parameters too (ArcFace class weights, centers, learned task weights)."""

    def __init__(self, model: nn.Module, criterion: nn.Module):
        super().__init__()
        self.model, self.criterion = model, criterion

    def forward(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.criterion(self.model(images).float(), targets)


@dataclass
class EpochStats:
    loss_sum: float
    examples: int
    seconds: float
    first_step_time: float | None  # wall-clock time when the first optimizer step finished
    updates: int = 0               # optimizer steps taken


_END = object()


class EpochBatches:
    """One epoch's batches as `(is_last, batch)`, looking one batch ahead, handed out across as many
    training calls as there are evaluations in the epoch (`eval.every_steps`). `taken` counts the batches
    handed out, so a checkpoint can say where in the epoch it was taken; `skip` reads and drops that many
    first (a trial resumed from such a checkpoint trains on each of the epoch's batches exactly once)."""

    def __init__(self, loader, skip: int = 0):
        self._iterator = iter(loader)
        for _ in range(skip):
            next(self._iterator, None)
        self.taken = skip
        self._ahead = next(self._iterator, _END)

    @property
    def exhausted(self) -> bool:
        return self._ahead is _END

    def __iter__(self):
        return self

    def __next__(self):
        if self._ahead is _END:
            raise StopIteration
        current, self._ahead = self._ahead, next(self._iterator, _END)
        self.taken += 1
        return self._ahead is _END, current


def train_one_epoch(
    module: nn.Module,
    loader,
    optimizer: torch.optim.Optimizer,
    pipe: InputPipe,
    scheduler=None,
    first_update: int = 0,
    grad_clip: float = 0.0,
    nan_check_every: int = 50,
    accum_steps: int = 1,
    after_update=None,
    max_updates: int | None = None,
) -> EpochStats:
    """`module(images, targets) -> loss` (a TrainModule, maybe DDP-wrapped); `scheduler` is a timm
    scheduler stepped per optimizer update, counting from `first_update`.

    With `accum_steps` > 1 the gradients of that many batches are averaged before each optimizer step,
    the same gradient as one batch that many times larger; DDP all-reduces only on each update's last
    batch (`no_sync` on the others). The epoch's last update may gather fewer batches: its gradient is
    their mean too. `after_update(updates_so_far)` runs after each optimizer step (the EMA's update).

    The host never waits for the device within a step: each batch's loss stays on the device, and the
    losses are fetched together after the first optimizer step and every `nan_check_every` batches, and at
    the end of the epoch (one sync each). A non-finite loss is then reported with the exact number of
    examples before it, at most `nan_check_every - 1` batches after it happened; no checkpoint is taken
    within an epoch, so none holds the diverged weights."""
    module.train()
    keep_frozen_norms_eval(module)  # a frozen backbone's BatchNorm statistics stay as they were
    totals = _LossTotals()
    window: list[tuple[torch.Tensor, int]] = []  # losses not yet fetched, with their batch sizes
    first_step, updates, gathered = None, 0, 0
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    batches = loader if isinstance(loader, EpochBatches) else EpochBatches(loader)
    for last, (images, targets) in batches:
        gathered += 1
        update = gathered == accum_steps or last
        # The accumulating batches skip DDP's all-reduce: the update's last batch reduces the sum.
        sync = module.no_sync() if not update and hasattr(module, "no_sync") else nullcontext()
        with sync:
            with autocast(pipe.device):
                loss = module(pipe(images), targets.to(pipe.device, non_blocking=True))
            (loss / accum_steps if accum_steps > 1 else loss).backward()
        window.append((loss.detach(), len(targets)))
        if update:
            if gathered < accum_steps:  # a short last update: the mean over the batches it has
                for p in module.parameters():
                    if p.grad is not None:
                        p.grad.mul_(accum_steps / gathered)
            if grad_clip > 0:
                nn.utils.clip_grad_norm_(module.parameters(), grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            gathered, updates, first_update = 0, updates + 1, first_update + 1
            if scheduler is not None:
                scheduler.step_update(num_updates=first_update)
            if after_update is not None:
                after_update(first_update)
        if (update and updates == 1 and first_step is None) or len(window) >= nan_check_every:
            totals.add(window, nan_check_every)
        if first_step is None and updates == 1:
            first_step = time.time()  # after the first step's losses were fetched, so the step had finished
        if update and max_updates is not None and updates >= max_updates:
            break
    totals.add(window, nan_check_every)
    return EpochStats(totals.loss_sum, totals.examples, time.perf_counter() - start, first_step, updates)


@dataclass
class _LossTotals:
    """An epoch's loss sum and example count, added from fetched windows of per-step losses in step order,
    so the sum is the same float as adding each step's `loss.item() * batch` as it came."""
    loss_sum: float = 0.0
    examples: int = 0

    def add(self, window: list[tuple[torch.Tensor, int]], every: int) -> None:
        """Fetch `window`'s losses (one host sync), add them, and empty it; DivergedError at a non-finite one."""
        if not window:
            return
        values = torch.stack([loss for loss, _ in window]).cpu().tolist()
        checked = self.examples + sum(n for _, n in window)
        for value, (_, n) in zip(values, window):
            if not math.isfinite(value):
                raise DivergedError(f"loss became {value} after {self.examples} examples this epoch (found at "
                                    f"the check after {checked} examples; the loss is checked every {every} steps)")
            self.loss_sum += value * n
            self.examples += n
        window.clear()


def train_and_evaluate(module: nn.Module, task, loader, optimizer: torch.optim.Optimizer, pipe: InputPipe,
                       eval_ctx, scheduler=None, first_update: int = 0, grad_clip: float = 0.0,
                       nan_check_every: int = 50, accum_steps: int = 1, ema=None):
    """One epoch of `task` (a TaskSetup): train, then `evaluate_on_every_rank`."""
    stats = train_one_epoch(module, loader, optimizer, pipe, scheduler, first_update, grad_clip, nan_check_every,
                            accum_steps, ema_updater(task.model, ema))
    return stats, evaluate_on_every_rank(task, eval_ctx, ema)


def ema_updater(model: nn.Module, ema=None):
    """`after_update` for train_one_epoch: with `ema` (timm's ModelEmaV3 of `model`) the EMA is updated after
    every optimizer step from the weights DDP has just made equal on every rank."""
    return (lambda _: ema.update(model)) if ema is not None else None


def evaluate_on_every_rank(task, eval_ctx, ema=None):
    """Evaluate on every rank exactly the weights and buffers rank 0 checkpoints: the EMA when there is one.
    DDP keeps the parameters equal, but it broadcasts buffers only at the start of each forward, so after
    the last step each rank holds its own BatchNorm statistics."""
    evaluated = evaluated_model(task.model, ema)
    broadcast_from_rank0(task.model)
    if evaluated is not task.model:
        broadcast_from_rank0(evaluated)  # its BatchNorm statistics came from each rank's own batches
    return task.evaluate(evaluated, eval_ctx)


def evaluated_model(model: nn.Module, ema=None) -> nn.Module:
    """What is evaluated, checkpointed and exported: the EMA of the weights when there is one."""
    return ema.module if ema is not None else model


@torch.no_grad()
def predict(model: nn.Module, loader, pipe: InputPipe) -> tuple[np.ndarray, np.ndarray]:
    """(raw model outputs, targets) for every example of `loader`, in order."""
    model.eval()
    outputs, targets = [], []
    for images, target in loader:
        with autocast(pipe.device):
            outputs.append(model(pipe(images)).float().cpu().numpy())
        targets.append(target.numpy())
    if not outputs:
        return np.zeros((0,), np.float32), np.zeros((0,), np.float32)
    return np.concatenate(outputs), np.concatenate(targets)
