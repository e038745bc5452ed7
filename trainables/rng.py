"""The random streams a training process draws from, kept in its checkpoints, so that a trial resumed from a
checkpoint taken at an epoch's end trains on exactly as the uninterrupted trial would have.

A worker seeds torch once (the config's `seed`), before it builds its model; from then on every epoch draws from
that stream: the augmentations of the main process, dropout and drop-path, and the seed that loader workers
take for each pass. Reseeding on resume, as before, gave epoch 2 of a resumed trial other flips, other
dropout masks and other loader seeds than epoch 2 of the same trial never stopped, so the two reported
different numbers. Each rank's streams differ (an augmentation may draw more for one image than for
another), so a checkpoint keeps every rank's, in rank order.

A checkpoint taken within an epoch (`eval.every_steps`) is resumed by reading the epoch's first batches
again to drop them, which draws again what was drawn for them: such a resume is close, not exact.
Everything here loads with `torch.load(weights_only=True)`: tensors, lists, tuples and numbers only.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def capture() -> dict:
    """This process's streams now: torch's CPU generator, the current CUDA device's, Python's and NumPy's."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "python": _as_lists(random.getstate()),
             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore(state: dict) -> None:
    """Set this process's streams to what `capture` returned (in this process or another one)."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def restore_rank(states: list[dict] | None, rank: int, world: int) -> bool:
    """Restore this rank's streams from a checkpoint's list of every rank's; False (the streams as seeded)
    when the checkpoint has none (one written before they were kept) or was written by another number of
    workers, whose ranks saw other shares of the data."""
    if not states or len(states) != world:
        return False
    restore(states[rank])
    return True


def _as_lists(value):
    return [_as_lists(v) for v in value] if isinstance(value, tuple) else value
