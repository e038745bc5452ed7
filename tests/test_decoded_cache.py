"""The one training loader keeps decoded images across epochs (decoding is nearly all of its cost): each
image is decoded once, later epochs give the same pixels, the byte budget holds, and augmentation still
runs on every epoch."""

from __future__ import annotations

import pytest
import torch

from trainables.data import shards
from trainables.data.demo.celeba import write_demo_celeba
from trainables.data.loaders import TrainStream
from trainables.data.prepare import prepare
from trainables.data.shards import ShardSplit


@pytest.fixture(scope="module")
def train_split(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cache")
    raw = write_demo_celeba(tmp / "raw", num_images=120, seed=2)
    prepare("celeba", raw, str(tmp / "shards"), row_group_rows=16)
    return ShardSplit(str(tmp / "shards"), "train", label_columns=["Smiling"])


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


def test_the_budget_holds_and_the_rest_is_decoded_each_epoch(train_split, monkeypatch):
    one_image = 3 * 32 * 32
    calls = []
    real = shards.decode_shard_image
    monkeypatch.setattr(shards, "decode_shard_image", lambda *a, **k: calls.append(1) or real(*a, **k))
    stream = TrainStream(train_split, 32, ["Smiling"], None, seed=0, cache_mb=1)
    stream._cache.max_bytes = 10 * one_image  # room for ten images
    for epoch in range(2):
        for _ in stream(epoch, 0, 1, 8, 0):
            pass
    assert stream._cache.used == 10 * one_image and len(stream._cache.items) == 10
    assert len(calls) == 2 * train_split.num_rows - 10  # the second epoch decodes all but the ten


def test_augmentation_runs_every_epoch_on_the_cached_image(train_split, monkeypatch):
    flips = []
    augment = lambda img: flips.append(1) or torch.flip(img, dims=[2])  # noqa: E731
    _, calls, _ = _epochs(train_split, monkeypatch, cache_mb=64, epochs=2, augment=augment)
    assert len(flips) == 2 * (train_split.num_rows // 8 * 8) and len(calls) == train_split.num_rows


def test_loader_worker_processes_get_no_cache(train_split, monkeypatch):
    stream = TrainStream(train_split, 32, ["Smiling"], None, seed=0, cache_mb=64)
    assert stream(0, 0, 1, 8, workers=2).dataset.cache is None
    assert stream(0, 0, 1, 8, workers=0).dataset.cache is stream._cache
