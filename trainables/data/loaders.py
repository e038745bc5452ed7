"""The one loader: every task trains and evaluates from shard splits through these two functions.

Training: per epoch, each rank takes its n // world rows of a seeded permutation of the split's row
groups (equal shares, so no rank waits in an all-reduce the others never reach), n capped by
`data.max_train_images`. Evaluation: contiguous, disjoint shares with no padding, so that results
gathered over the ranks count every row exactly once. Decoding is nearly all of the cost, so a
training stream keeps decoded images across epochs up to `data.decoded_cache_mb`, in a cache that its
loader worker processes share (trainables/data/decoded_cache.py); the evaluation splits keep theirs in what
it leaves of that budget (EvalCaches).

A training stream builds one DataLoader per (rank, world, batch, workers) and reuses it every epoch, with
`persistent_workers`, so loader processes start once and keep the cache. Its dataset reads the epoch
from memory it shares with them: each epoch gets the row slices and shuffle of that epoch, and each
loader worker is seeded from the training process's torch generator at every epoch as a fresh
DataLoader's would be (`base seed + worker id`, one draw per epoch), so batches, augmentation and the
training process's own random stream are what they were with one DataLoader per epoch. Its workers hand
batches on through a few slots of memory shared once (trainables/data/batch_pool.py), not a new block
per batch. An evaluation given a trial's EvalCaches keeps its loader too, with its workers and its split's
cache, and draws from the training process's stream once per pass as a new loader did (EvalLoader).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch.utils.data import DataLoader, get_worker_info

from trainables.data.batch_pool import BatchPool, PooledLoaderIter
from trainables.data.decoded_cache import DecodedCache
from trainables.data.shards import ShardDataset, ShardSplit
from trainables.errors import UserError


def open_split(root: str, name: str, label_columns: Sequence[str] | None = None, what: str = "") -> ShardSplit:
    """A split that must hold rows; `what` names the label file to check when it is empty."""
    split = ShardSplit(root, name, label_columns=label_columns)
    if split.num_rows == 0:
        raise UserError(f"the {name} split of {root} is empty: check {what or 'the dataset'} and prepare it again")
    return split


class EpochDataset(ShardDataset):
    """One rank's training rows, for whichever epoch `set_epoch` last named: the epoch and the loader
    workers' seed live in shared memory, so persistent loader workers see them at their next pass."""

    def __init__(self, split: ShardSplit, rank: int, world: int, seed: int, size: int, **kwargs):
        self.rank, self.world, self.seed = rank, world, seed
        self._state = torch.zeros(2, dtype=torch.int64).share_memory_()  # epoch, loader workers' base seed
        super().__init__(split, split.train_row_groups(rank, world, 0, seed), size, shuffle_seed=(seed, 0), **kwargs)

    def set_epoch(self, epoch: int) -> None:
        self._state[0] = epoch

    def set_worker_seed(self, base_seed: int) -> None:
        self._state[1] = base_seed

    def __iter__(self):
        epoch, base_seed = self._state.tolist()
        self.slices = self._limited(self.split.train_row_groups(self.rank, self.world, epoch, self.seed))
        self.shuffle_seed = (self.seed, epoch)
        info = get_worker_info()
        if info is not None:  # as DataLoader seeds the workers it starts for one pass
            random.seed(base_seed + info.id)
            torch.manual_seed(base_seed + info.id)
        return super().__iter__()


class EpochLoader(DataLoader):
    """A DataLoader over an EpochDataset that draws its loader workers' seed once per pass, from the
    training process's torch generator, as a new DataLoader's first pass does (its own draw comes from a
    private generator, so the training process's stream advances once per epoch, as before)."""

    def __iter__(self):
        if self.num_workers:
            self.dataset.set_worker_seed(int(torch.empty((), dtype=torch.int64).random_()))
        return super().__iter__()

    def _get_iterator(self):
        if self.num_workers and isinstance(self.collate_fn, BatchPool):
            self.check_worker_number_rationality()
            return PooledLoaderIter(self)
        return super()._get_iterator()


@dataclass
class TrainStream:
    """`stream(epoch, rank, world, batch, workers)` is a TaskSetup's train_loader, `stream.rows` its train_rows:
    the same DataLoader every epoch, set to that epoch."""
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
        self._cache = (DecodedCache(self.cache_mb << 20, self.split.row_groups, self.size,
                                    len(self.split.image_columns)) if self.cache_mb > 0 else None)
        self._loader, self._made_for = None, None

    @property
    def cache_left(self) -> int:
        """Bytes of the budget its own cache cannot take (it holds at most one slot per training row): the
        evaluation splits' caches take them (EvalCaches)."""
        return (self.cache_mb << 20) - (self._cache.slots * self._cache.slot_bytes if self._cache is not None else 0)

    def rows(self, world: int) -> int:
        """Rows each rank trains on per epoch."""
        return min(self.split.num_rows, self.max_rows or self.split.num_rows) // world

    def __call__(self, epoch: int, rank: int, world: int, batch: int, workers: int) -> DataLoader:
        if self._made_for != (rank, world, batch, workers):
            dataset = EpochDataset(self.split, rank, world, self.seed, self.size, label_columns=self.label_columns,
                                   augment=self.augment, limit=self.rows(world), label_dtype=self.label_dtype,
                                   targets=self.targets, square=self.square, cache=self._cache)
            pool = BatchPool(workers, batch, (3, self.size, self.size), len(self.split.image_columns)) if workers else None
            self._loader = EpochLoader(dataset, batch_size=batch, num_workers=workers, drop_last=True,
                                       pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0,
                                       generator=torch.Generator() if workers else None,
                                       collate_fn=pool)
            self._made_for = (rank, world, batch, workers)
        self._loader.dataset.set_epoch(epoch)
        return self._loader


class EvalLoader(DataLoader):
    """An evaluation's DataLoader kept across epochs with its workers: each pass draws once from the training
    process's torch generator, as the new DataLoader each evaluation made before did (its iterator's own draw
    comes from a private generator, and a persistent one draws only once), so the training's random stream
    after an evaluation is what it was, and a run resumed from a checkpoint draws what the whole run drew."""

    def __iter__(self):
        torch.empty((), dtype=torch.int64).random_()
        return super().__iter__()


class EvalCaches:
    """What a trial's evaluations keep across epochs: an evaluation reads the same rows, unaugmented, every
    epoch, so after the first it decodes none (on real CelebA, val and test are 40,000 JPEGs an epoch), and its
    loader workers start once. Per (split, size, rank, world): a DecodedCache over the row groups of that
    rank's share, all of them within `budget` bytes, what the training cache leaves of `data.decoded_cache_mb`
    (TrainStream.cache_left); and per loader settings besides, the DataLoader itself, with
    `persistent_workers`."""

    def __init__(self, budget: int):
        self.left = budget
        self._caches: dict[tuple, DecodedCache | None] = {}
        self.loaders: dict[tuple, DataLoader] = {}

    def __call__(self, split: ShardSplit, size: int, rank: int, world: int) -> DecodedCache | None:
        share = {(s.path, s.group) for s in split.eval_row_groups(rank, world)}
        return self.cache((split.root, split.split, size, rank, world),
                          [g for g in split.row_groups if (g[0], g[1]) in share], size, len(split.image_columns))

    def cache(self, key: tuple, row_groups: Sequence[tuple[str, int, int]], size: int,
              columns: int = 1) -> DecodedCache | None:
        """The cache named `key` (made at its first call) of `row_groups` ((path, group, rows)): as many of their
        images as the budget has left room for; None when it has none."""
        if key not in self._caches:
            cache = DecodedCache(self.left, row_groups, size, columns) if row_groups and self.left > 0 else None
            if cache is not None and cache.slots == 0:  # less left than one image
                cache = None
            self.left -= cache.slots * cache.slot_bytes if cache is not None else 0
            self._caches[key] = cache
        return self._caches[key]


def eval_loader(split: ShardSplit, size: int, label_columns: Sequence[str], rank: int, world: int, batch: int,
                workers: int, targets: Callable | None = None, square: bool = False,
                label_dtype: torch.dtype | None = None, caches: EvalCaches | None = None) -> DataLoader:
    """This rank's contiguous share of `split`, in file order; with `caches`, the same loader every epoch, its
    images decoded once."""
    key = (split.root, split.split, size, rank, world, batch, workers)
    if caches is not None and key in caches.loaders:
        return caches.loaders[key]
    dataset = ShardDataset(split, split.eval_row_groups(rank, world), size, label_columns,
                           label_dtype=label_dtype, targets=targets, square=square,
                           cache=caches(split, size, rank, world) if caches is not None else None)
    persistent = workers > 0 and caches is not None
    loader = (EvalLoader if persistent else DataLoader)(
        dataset, batch_size=batch, num_workers=workers, pin_memory=torch.cuda.is_available(),
        persistent_workers=persistent, generator=torch.Generator() if persistent else None)
    if caches is not None:
        caches.loaders[key] = loader
    return loader
