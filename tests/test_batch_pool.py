"""Loader workers hand batches to the training process through a few slots of memory shared once
(trainables/data/batch_pool.py): the images arrive in the pool's slots, a slot is free again only once
nobody holds its batch, a held batch is never written over, and where the pool cannot serve (a worker
started by spawn, no free slot) batches are collated as usual."""

from __future__ import annotations

import ctypes
import gc
import pickle

import pytest
import torch
from torch.utils.data import default_collate

from trainables.data.batch_pool import BatchPool
from trainables.data.loaders import TrainStream


@pytest.fixture
def train_split(smiling_train_split):
    return smiling_train_split


def _in_pool(pool: BatchPool, tensor: torch.Tensor) -> bool:
    start = ctypes.addressof(ctypes.c_char.from_buffer(pool.pixels))
    return start <= tensor.data_ptr() < start + pool.pixels.nbytes


def test_worker_batches_arrive_in_the_pool_and_free_their_slots(train_split):
    stream = TrainStream(train_split, 32, ["Smiling"], None, seed=0, cache_mb=64)
    for epoch in range(3):
        loader = stream(epoch, 0, 1, 8, 2)
        pool = loader.collate_fn
        for images, labels in loader:  # one batch held at a time, as a training loop holds them
            assert _in_pool(pool, images) and images.shape == (8, 3, 32, 32) and labels.shape == (8, 1)
        del images, labels
        gc.collect()
        assert not pool.flags.any()  # every slot free again once its batch is gone


def test_a_held_batch_is_never_written_over(train_split):
    """More batches held than the pool has slots: the ones past them are collated as usual, and none of
    the held ones changes while the workers go on."""
    stream = TrainStream(train_split, 32, ["Smiling"], None, seed=0, cache_mb=64)
    for epoch in range(2):
        loader = stream(epoch, 0, 1, 8, 2)
        held, copies = [], []
        for images, labels in loader:
            held.append(images)
            copies.append(images.clone())
        assert len(held) > loader.collate_fn.flags.size  # more than the slots of both workers
        assert sum(_in_pool(loader.collate_fn, images) for images in held) == loader.collate_fn.flags.size
        assert all(torch.equal(a, b) for a, b in zip(held, copies))


def test_a_pool_outside_a_worker_or_unshared_collates_as_usual():
    samples = [(torch.full((3, 4, 4), i, dtype=torch.uint8), torch.tensor([i, 1 - i])) for i in range(2)]
    pool = BatchPool(workers=1, batch=2, shape=(3, 4, 4))
    spawned = pickle.loads(pickle.dumps(pool))  # as a worker started by spawn receives it
    assert not spawned.shared
    for collate in (pool, spawned):  # here: no worker, so no slot either way
        got, expected = collate(samples), default_collate(samples)
        assert all(torch.equal(a, b) and a.dtype == b.dtype for a, b in zip(got, expected))
