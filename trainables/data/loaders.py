"""The one loader: every task trains and evaluates from shard splits through these two functions.

Training: per epoch, each rank takes its n // world rows of a seeded permutation of the split's row
groups (equal shares, so no rank waits in an all-reduce the others never reach), n capped by
`data.max_train_images`. Evaluation: contiguous, disjoint shares with no padding, so that results
gathered over the ranks count every row exactly once. Decoding is nearly all of the cost, so a
training stream keeps decoded images across epochs up to `data.decoded_cache_mb` (loading in the
training process, the trials' default).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch.utils.data import DataLoader

from trainables.data.shards import DecodedCache, ShardDataset, ShardSplit
from trainables.errors import UserError


def open_split(root: str, name: str, label_columns: Sequence[str] | None = None, what: str = "") -> ShardSplit:
    """A split that must hold rows; `what` names the label file to check when it is empty."""
    split = ShardSplit(root, name, label_columns=label_columns)
    if split.num_rows == 0:
        raise UserError(f"the {name} split of {root} is empty: check {what or 'the dataset'} and prepare it again")
    return split


@dataclass
class TrainStream:
    """`stream(epoch, rank, world, batch, workers)` is a TaskSetup's train_loader, `stream.rows` its train_rows."""
    split: ShardSplit
    size: int
    label_columns: Sequence[str]
    augment: Callable | None
    seed: int
    max_rows: int = 0                      # 0: every row
    targets: Callable | None = None
    square: bool = False
    label_dtype: torch.dtype | None = None
    cache_mb: int = 0                      # decoded images kept across epochs (data.decoded_cache_mb); 0: none

    def __post_init__(self):
        self._cache = DecodedCache(self.cache_mb << 20) if self.cache_mb > 0 else None

    def rows(self, world: int) -> int:
        """Rows each rank trains on per epoch."""
        return min(self.split.num_rows, self.max_rows or self.split.num_rows) // world

    def __call__(self, epoch: int, rank: int, world: int, batch: int, workers: int) -> DataLoader:
        dataset = ShardDataset(self.split, self.split.train_row_groups(rank, world, epoch, self.seed), self.size,
                               self.label_columns, augment=self.augment, shuffle_seed=(self.seed, epoch),
                               limit=self.rows(world), label_dtype=self.label_dtype, targets=self.targets,
                               square=self.square, cache=self._cache if workers == 0 else None)
        return DataLoader(dataset, batch_size=batch, num_workers=workers, drop_last=True,
                          pin_memory=torch.cuda.is_available())


def eval_loader(split: ShardSplit, size: int, label_columns: Sequence[str], rank: int, world: int, batch: int,
                workers: int, targets: Callable | None = None, square: bool = False,
                label_dtype: torch.dtype | None = None) -> DataLoader:
    """This rank's contiguous share of `split`, in file order."""
    dataset = ShardDataset(split, split.eval_row_groups(rank, world), size, label_columns,
                           label_dtype=label_dtype, targets=targets, square=square)
    return DataLoader(dataset, batch_size=batch, num_workers=workers, pin_memory=torch.cuda.is_available())
