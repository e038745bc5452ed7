"""Batches that loader worker processes hand to the training process through memory shared once, not per batch.

A DataLoader worker normally collates each batch into freshly allocated shared memory, which the training
process then maps: a new shared-memory file, and every one of its pages faulted in, per batch. Once the decoded
cache serves an epoch, that trip is most of a worker's time (at 224 px, half of it, profiled with py-spy): the
loader ceiling's later epochs with workers ran at a third of what the same loader does in one process
(benchmarks/data_loader.py).

`BatchPool` is a DataLoader `collate_fn` that removes the trip. It allocates, before the workers start, one
block of anonymous shared memory (`mmap`, MAP_SHARED, inherited by workers started by `fork`) of a few batch
slots per worker, each with a flag. A worker writes its batch's images into a free slot of its own and hands on
only the slot's number and the labels (`PooledBatch`, a few hundred bytes pickled). The training process turns
that into tensors that view the slot, and the slot is free again when the last of those tensors is gone (a
finalizer on the array they share), so a batch stays valid for as long as anyone holds it. When every slot of
a worker is held, or a batch is not the uint8 images of the pool's shape plus labels, or the worker was started
by `spawn` (the block is not shared then), the batch is collated as usual: the pool changes speed, never data.
With `pin_memory`, the pin thread copies the slot into pinned memory and frees it at once.

The batch a PooledBatch becomes is exactly default_collate's: a list of the stacked images, then the stacked
labels, with their dtypes.
"""

from __future__ import annotations

import itertools
import mmap
import os
import weakref
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import default_collate, get_worker_info
from torch.utils.data.dataloader import _MultiProcessingDataLoaderIter

_POOLS: "weakref.WeakValueDictionary[int, BatchPool]" = weakref.WeakValueDictionary()
_NEXT_KEY = itertools.count()


class BatchPool:
    """`slots` batch slots for each of `workers` loader workers, each batch `batch` samples of `images` uint8
    images of `shape` (the sample's leading elements) and its labels (the last element)."""

    def __init__(self, workers: int, batch: int, shape: Sequence[int], images: int = 1, slots: int = 4):
        self.workers, self.batch, self.shape, self.images, self.slots = workers, batch, tuple(shape), images, slots
        self.key = (os.getpid(), next(_NEXT_KEY))
        _POOLS[self.key[1]] = self
        count = workers * slots
        self._block = mmap.mmap(-1, count + count * images * batch * int(np.prod(self.shape)))
        self.flags = np.frombuffer(self._block, dtype=np.uint8, count=count)  # 1: written by a worker, not freed
        self.pixels = np.frombuffer(self._block, dtype=np.uint8, offset=count).reshape(
            count, images, batch, *self.shape)
        self.shared = True

    def __getstate__(self):  # pickled into a worker started by spawn: the block would not be shared
        return {k: v for k, v in self.__dict__.items() if k not in ("_block", "flags", "pixels")} | {"shared": False}

    def __call__(self, samples: list):
        """Collate `samples`: into a slot of this worker's, or as default_collate does."""
        info = get_worker_info()
        slot = self._claim(info.id) if self.shared and info is not None and self._fits(samples) else None
        if slot is None:
            return default_collate(samples)
        pixels = torch.from_numpy(self.pixels[slot])
        for i, sample in enumerate(samples):
            for j in range(self.images):
                pixels[j, i].copy_(sample[j])
        labels = torch.stack([sample[-1] for sample in samples])  # default_collate's, in private memory
        return PooledBatch(self.key, slot, len(samples), labels.numpy())

    def _fits(self, samples: list) -> bool:
        return 0 < len(samples) <= self.batch and all(
            isinstance(s, (tuple, list)) and len(s) == self.images + 1
            and all(isinstance(x, torch.Tensor) and x.dtype == torch.uint8 and tuple(x.shape) == self.shape
                    for x in s[:-1]) and isinstance(s[-1], torch.Tensor) for s in samples)

    def _claim(self, worker: int) -> int | None:
        """A free slot of this worker's (only this worker claims them; only the training process frees them)."""
        for slot in range(worker * self.slots, (worker + 1) * self.slots):
            if not self.flags[slot]:
                self.flags[slot] = 1
                return slot
        return None

    def _free(self, slot: int) -> None:
        self.flags[slot] = 0

    def view(self, slot: int, rows: int) -> np.ndarray:
        """Slot `slot`'s first `rows` samples, freed when this array and every view of it are gone."""
        array = self.pixels[slot, :, :rows]
        weakref.finalize(array, self._free, slot)
        return array


class PooledBatch:
    """A batch in slot `slot` of a BatchPool, as a worker hands it on. In the training process, which made
    the pool, unpickling takes hold of the slot; `tensors()` gives default_collate's list."""

    def __init__(self, key: tuple[int, int], slot: int, rows: int, labels: np.ndarray):
        self.key, self.slot, self.rows, self.labels = key, slot, rows, labels
        self._array = None

    def __getstate__(self):
        return {"key": self.key, "slot": self.slot, "rows": self.rows, "labels": self.labels}

    def __setstate__(self, state):
        self.__dict__.update(state)
        pool = _POOLS.get(self.key[1]) if os.getpid() == self.key[0] else None
        if pool is None:
            raise RuntimeError(f"a pooled batch arrived in a process other than the one that made its pool "
                               f"(pid {self.key[0]})")
        self._array = pool.view(self.slot, self.rows)  # held until the tensors made of it are gone

    def tensors(self) -> list[torch.Tensor]:
        images = torch.from_numpy(self._array)
        return [*images, torch.from_numpy(self.labels)]

    def pin_memory(self, device=None) -> list[torch.Tensor]:
        """Called by DataLoader's pin thread: the batch copied into pinned memory, and the slot freed."""
        return [t.pin_memory() for t in self.tensors()]


class PooledLoaderIter(_MultiProcessingDataLoaderIter):
    """DataLoader's iterator over worker processes, which makes each PooledBatch into its tensors as it hands
    the batch on (with pin_memory, the pin thread already has)."""

    def _process_data(self, data, worker_idx):
        data = super()._process_data(data, worker_idx)
        return data.tensors() if isinstance(data, PooledBatch) else data
