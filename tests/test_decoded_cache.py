"""The one training loader keeps decoded images across epochs (decoding is nearly all of its cost): each
image is decoded once, later epochs give the same pixels, the byte budget holds, and augmentation still
runs on every epoch. With loader worker processes too: they persist across epochs, share the cache, and
give the batches one fresh DataLoader per epoch gave."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, get_worker_info

from trainables.data import shards
from trainables.data.decoded_cache import DecodedCache
from trainables.data.loaders import EvalCaches, TrainStream, eval_loader
from trainables.data.shards import ShardDataset
from trainables.data.transforms import build_augment


@pytest.fixture
def train_split(smiling_train_split):
    return smiling_train_split


def _epochs(split, monkeypatch, cache_mb, workers=0, epochs=2, augment=None):
    calls = []
    real = shards.decode_shard_image
    monkeypatch.setattr(shards, "decode_shard_image", lambda *a, **k: calls.append(1) or real(*a, **k))
    stream = TrainStream(split, 32, ["Smiling"], augment, seed=0, cache_mb=cache_mb)
    seen = []
    for epoch in range(epochs):
        by_row = {}
        for images, labels in stream(epoch, 0, 1, 8, workers):
            by_row.setdefault(epoch, []).append((images, labels))
        seen.append(by_row[epoch])
    return stream, calls, seen


def test_each_image_is_decoded_once_over_epochs(train_split, monkeypatch):
    rows = train_split.num_rows // 8 * 8
    stream, calls, seen = _epochs(train_split, monkeypatch, cache_mb=64, epochs=3)
    assert len(calls) == train_split.num_rows >= rows  # the first epoch decodes each image once, then none
    assert 0 < stream._cache.used <= 64 << 20

    _, uncached, again = _epochs(train_split, monkeypatch, cache_mb=0, epochs=3)
    assert len(uncached) == 3 * rows
    # Same order (the same seeded shuffles), same pixels, with or without the cache.
    for with_cache, without in zip(seen, again):
        for (a, la), (b, lb) in zip(with_cache, without):
            assert torch.equal(a, b) and torch.equal(la, lb)


def test_an_epoch_the_cache_serves_whole_reads_nothing_from_the_store(train_split, monkeypatch):
    """On s3:// every read is a request: once the images are cached, the labels are kept too."""
    reads = []
    real = ShardDataset._read_group
    monkeypatch.setattr(ShardDataset, "_read_group", lambda self, *a: reads.append(a) or real(self, *a))
    stream = TrainStream(train_split, 32, ["Smiling"], None, seed=0, cache_mb=64)
    for epoch in range(3):
        reads.clear()
        assert sum(len(labels) for _, labels in stream(epoch, 0, 1, 8, 0)) == train_split.num_rows // 8 * 8
        assert len(reads) == (len(train_split.row_groups) if epoch == 0 else 0)


def test_the_budget_holds_and_the_rest_is_decoded_each_epoch(train_split, monkeypatch):
    one_image = 3 * 32 * 32
    calls = []
    real = shards.decode_shard_image
    monkeypatch.setattr(shards, "decode_shard_image", lambda *a, **k: calls.append(1) or real(*a, **k))
    stream = TrainStream(train_split, 32, ["Smiling"], None, seed=0, cache_mb=1)
    stream._cache = DecodedCache(10 * one_image, train_split.row_groups, 32)  # room for ten images
    for epoch in range(2):
        for _ in stream(epoch, 0, 1, 8, 0):
            pass
    assert stream._cache.used == 10 * one_image and len(stream._cache) == 10
    assert len(calls) == 2 * train_split.num_rows - 10  # the second epoch decodes all but the ten


def test_augmentation_runs_every_epoch_on_the_cached_image(train_split, monkeypatch):
    flips = []
    augment = lambda img: flips.append(1) or torch.flip(img, dims=[2])  # noqa: E731
    _, calls, _ = _epochs(train_split, monkeypatch, cache_mb=64, epochs=2, augment=augment)
    assert len(flips) == 2 * (train_split.num_rows // 8 * 8) and len(calls) == train_split.num_rows


def _count_decodes_per_worker(monkeypatch, workers):
    """Decodes by loader worker (shared memory, so the counts of worker processes come back)."""
    counts = torch.zeros(workers, dtype=torch.int64).share_memory_()
    real = shards.decode_shard_image

    def counted(*args, **kwargs):
        counts[get_worker_info().id] += 1  # each process writes only its own element
        return real(*args, **kwargs)

    monkeypatch.setattr(shards, "decode_shard_image", counted)
    return counts


def test_loader_workers_persist_and_decode_each_image_once_over_epochs(train_split, monkeypatch):
    counts = _count_decodes_per_worker(monkeypatch, 2)
    stream = TrainStream(train_split, 32, ["Smiling"], None, seed=0, cache_mb=64)
    pids = []
    for epoch in range(3):
        loader = stream(epoch, 0, 1, 8, 2)
        for _ in loader:
            pass
        pids.append(sorted(w.pid for w in loader._iterator._workers))
        if epoch == 0:
            first = int(counts.sum())
    assert first == train_split.num_rows == len(stream._cache)  # both workers filled the one cache
    assert int(counts.sum()) == first  # later epochs, dealt other rows, decoded none
    assert pids[0] == pids[1] == pids[2] and stream(3, 0, 1, 8, 2) is loader  # the same processes each epoch


def _one_loader_per_epoch(split, epoch, workers, augment):
    """The training loader as it was before it persisted: a new DataLoader per epoch, no cache."""
    dataset = ShardDataset(split, split.train_row_groups(0, 1, epoch, 0), 32, ["Smiling"], augment=augment,
                           shuffle_seed=(0, epoch), limit=split.num_rows)
    return DataLoader(dataset, batch_size=8, num_workers=workers, drop_last=True)


@pytest.mark.parametrize("workers", [0, 2])
def test_the_persistent_loader_gives_the_batches_of_one_loader_per_epoch(train_split, workers):
    augment = build_augment(["hflip", "cutout"], 32)  # random: the loader workers' seeding shows
    stream = TrainStream(train_split, 32, ["Smiling"], augment, seed=0, cache_mb=64)
    runs = []
    for make in (lambda epoch: _one_loader_per_epoch(train_split, epoch, workers, augment),
                 lambda epoch: stream(epoch, 0, 1, 8, workers)):
        torch.manual_seed(0)
        batches = [list(make(epoch)) for epoch in range(3)]
        runs.append((batches, torch.rand(4)))  # the training process's own random stream after 3 epochs
    (before, after_before), (now, after_now) = runs
    assert torch.equal(after_before, after_now)
    for epoch_before, epoch_now in zip(before, now):
        assert len(epoch_before) == len(epoch_now) > 0
        for (a, la), (b, lb) in zip(epoch_before, epoch_now):
            assert torch.equal(a, b) and torch.equal(la, lb)
    assert not all(torch.equal(a, b) for (a, _), (b, _) in zip(before[0], before[1]))  # epochs differ


# ---- evaluation: the same rows, unaugmented, every epoch -------------------------------------------------

def _evaluations(split, caches, workers, passes, rank=0, world=1):
    return [[(images, labels) for images, labels in eval_loader(split, 32, ["Smiling"], rank, world, 8, workers,
                                                                  caches=caches)] for _ in range(passes)]


def _same(a, b):
    return len(a) == len(b) > 0 and all(torch.equal(x, y) and torch.equal(lx, ly) for (x, lx), (y, ly) in zip(a, b))


@pytest.mark.parametrize("workers", [0, 2])
def test_an_evaluation_after_the_first_decodes_no_image_and_gives_the_same_batches(train_split, monkeypatch, workers):
    """With loader workers, the evaluation's loader keeps its worker processes across epochs too."""
    torch.manual_seed(0)
    uncached = _evaluations(train_split, None, workers, 3)[0]  # the workers' batches interleave
    after_uncached = torch.rand(4)  # each new loader drew once from it
    counts = _count_decodes_per_worker(monkeypatch, 2) if workers else None
    calls = []
    if not workers:
        real = shards.decode_shard_image
        monkeypatch.setattr(shards, "decode_shard_image", lambda *a, **k: calls.append(1) or real(*a, **k))
    decoded = (lambda: int(counts.sum())) if workers else (lambda: len(calls))
    caches = EvalCaches(64 << 20)
    torch.manual_seed(0)
    first = _evaluations(train_split, caches, workers, 1)[0]
    assert decoded() == train_split.num_rows == len(caches(train_split, 32, 0, 1))
    loader = eval_loader(train_split, 32, ["Smiling"], 0, 1, 8, workers, caches=caches)
    pids = sorted(w.pid for w in loader._iterator._workers) if workers else []
    later = _evaluations(train_split, caches, workers, 2)
    after = torch.rand(4)  # the training process's random stream after three evaluations
    assert decoded() == train_split.num_rows  # none decoded again
    assert _same(first, uncached) and _same(later[0], uncached) and _same(later[1], uncached)
    assert torch.equal(after, after_uncached)  # the same draws: training after an evaluation is unchanged
    if workers:  # the same loader, with the same processes
        assert eval_loader(train_split, 32, ["Smiling"], 0, 1, 8, workers, caches=caches) is loader
        assert sorted(w.pid for w in loader._iterator._workers) == pids


def test_each_rank_caches_its_own_share_within_what_training_leaves_of_the_budget(train_split):
    one_image = 3 * 32 * 32
    stream = TrainStream(train_split, 32, ["Smiling"], None, seed=0, cache_mb=1)
    assert stream.cache_left == (1 << 20) - train_split.num_rows * one_image  # every training row has a slot
    caches = EvalCaches(stream.cache_left)
    ranks = [caches(train_split, 32, rank, 2) for rank in (0, 1)]
    assert [len(_evaluations(train_split, caches, 0, 1, rank, 2)[0]) for rank in (0, 1)] == [6, 6]  # 48 rows each
    assert all(len(c) == train_split.num_rows // 2 for c in ranks)
    assert [c.slots for c in ranks] == [48, 48]  # its share's three row groups of 16, not the split's 96 rows
    assert caches.left == stream.cache_left - sum(c.slots for c in ranks) * one_image >= 0

    full = TrainStream(train_split, 32, ["Smiling"], None, seed=0, cache_mb=0)
    assert full.cache_left == 0 and EvalCaches(full.cache_left)(train_split, 32, 0, 1) is None
    spent = EvalCaches(2 * one_image)
    assert spent(train_split, 32, 0, 1).slots == 2 and spent(train_split, 48, 0, 1) is None  # nothing left
