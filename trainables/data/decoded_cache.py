"""Decoded images kept across epochs, shared by the training process and its loader workers: a training
stream's, and each evaluation split's in what that leaves of the budget (loaders.EvalCaches).

Decoding a JPEG is nearly all of a shard loader's cost, so an epoch after the first reads each cached
image's labels and skips its bytes. What is cached is the image before augmentation, which still runs
every epoch.

The cache is one block of anonymous shared memory (`mmap`, MAP_SHARED), laid out as one fixed slot per
row of the split (per image column, for pairs): slot `row * columns + column`, where `row` counts the
split's rows in row-group order. Each epoch deals the rows to the loader workers afresh (the permutation
of row groups changes), so a cache of each worker's own would mostly miss; a shared one does not. The
block is allocated when the stream is built and inherited by loader worker processes started by `fork`
(Linux's default); its pages take memory only as slots are filled. The budget (`data.decoded_cache_mb`,
per DDP worker) caps the number of slots: rows past it are decoded every epoch. A slot is filled by the
one process that decodes its row (the rows of an epoch are disjoint between workers) and marked filled
after its pixels are written. Pickled into a process started otherwise (spawn, forkserver), a cache
arrives empty and is that process's own.
"""

from __future__ import annotations

import mmap
from typing import Iterable, Sequence

import numpy as np
import torch

Key = tuple  # (shard path, row group, row in the group, image column)


class DecodedCache:
    """Up to `max_bytes` of (3, size, size) uint8 images of `row_groups` ((path, group, rows) in split
    order), `columns` images per row."""

    def __init__(self, max_bytes: int, row_groups: Sequence[tuple[str, int, int]], size: int, columns: int = 1):
        self.max_bytes, self.size, self.columns = max_bytes, size, columns
        self.row_groups = [tuple(g) for g in row_groups]
        self._first: dict[tuple[str, int], int] = {}
        rows = 0
        for path, group, n in self.row_groups:
            self._first[(path, group)] = rows
            rows += n
        self.slot_bytes = 3 * size * size
        self.slots = min(rows * columns, max_bytes // self.slot_bytes)
        # Flags first, then the images; an mmap of length 0 is refused, so at least one byte.
        self._block = mmap.mmap(-1, max(1, self.slots * (1 + self.slot_bytes)))
        self._filled = np.frombuffer(self._block, dtype=np.uint8, count=self.slots)
        self._images = (torch.frombuffer(self._block, dtype=torch.uint8, offset=self.slots,
                                         count=self.slots * self.slot_bytes).view(self.slots, 3, size, size)
                        if self.slots else torch.empty((0, 3, size, size), dtype=torch.uint8))

    def _slot(self, key: Key) -> int:
        path, group, row, column = key
        return (self._first[(path, group)] + row) * self.columns + column

    @property
    def used(self) -> int:
        """Bytes of images held."""
        return int(self._filled.sum()) * self.slot_bytes

    def __len__(self) -> int:
        return int(self._filled.sum())

    def get(self, key: Key) -> torch.Tensor | None:
        slot = self._slot(key)
        return self._images[slot] if slot < self.slots and self._filled[slot] else None

    def put(self, key: Key, image: torch.Tensor) -> None:
        slot = self._slot(key)
        if slot < self.slots and not self._filled[slot] and image.shape == self._images.shape[1:]:
            self._images[slot].copy_(image)
            self._filled[slot] = 1

    def holds(self, keys: Iterable[Key]) -> bool:
        return all((slot := self._slot(key)) < self.slots and self._filled[slot] for key in keys)

    def __getstate__(self):
        return {"max_bytes": self.max_bytes, "row_groups": self.row_groups, "size": self.size,
                "columns": self.columns}

    def __setstate__(self, state):
        self.__init__(**state)
