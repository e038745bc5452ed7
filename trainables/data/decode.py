"""Decoding images into uint8 batches, and splitting work across DDP ranks.

Training: every epoch, one seeded permutation of the split is cut into equal, disjoint shares, one
per rank (equal so that no rank waits in an all-reduce the others never reach).
Evaluation: the split is cut into contiguous, disjoint shares with no padding, so that each example
is counted exactly once when the ranks' results are gathered.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from trainables.errors import UserError


def decode_image(source: bytes | Path, size: int, name: str = "") -> torch.Tensor:
    """Decode a JPEG to a (3, size, size) uint8 tensor.

    JPEG draft mode lets libjpeg decode at 1/2, 1/4 or 1/8 scale when the target is well below
    the stored size, which is most of the cost of reading CelebA at 64-112 px.
    """
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
            img.draft("RGB", (size, size))
            img = img.convert("RGB").resize((size, size), Image.BILINEAR, reducing_gap=2.0)
    except (OSError, SyntaxError, ValueError) as err:
        raise UserError(f"cannot decode image {name or source}: {err}; re-copy the file or drop it from the labels") from None
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)


class ImageLabelDataset(Dataset):
    """Images (by path or bytes) with a row of labels each; decoded to uint8 at `size`."""

    def __init__(
        self,
        load: Callable[[int], bytes | Path],
        labels: np.ndarray,
        size: int,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        self.load, self.labels, self.size, self.augment = load, labels, size, augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        img = decode_image(self.load(i), self.size)
        if self.augment is not None:
            img = self.augment(img)
        return img, torch.from_numpy(np.asarray(self.labels[i]))


class IndexedSubset(Dataset):
    """A view of `dataset` restricted to `indices` (which change every epoch for training)."""

    def __init__(self, dataset: Dataset, indices: Sequence[int]):
        self.dataset, self.indices = dataset, np.asarray(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.dataset[int(self.indices[i])]


def train_share(n: int, rank: int, world: int, epoch: int, seed: int) -> np.ndarray:
    """This rank's equal, disjoint share of a fresh seeded permutation of range(n)."""
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    per_rank = n // world
    return perm[rank * per_rank : (rank + 1) * per_rank]


def eval_share(n: int, rank: int, world: int) -> np.ndarray:
    """This rank's contiguous, disjoint share of range(n); together the shares cover it exactly once."""
    return np.array_split(np.arange(n), world)[rank]


def make_loader(dataset: Dataset, indices: np.ndarray, batch_size: int, workers: int, train: bool) -> DataLoader:
    return DataLoader(
        IndexedSubset(dataset, indices),
        batch_size=batch_size,
        shuffle=False,  # the share is already a seeded permutation
        drop_last=train,  # equal step counts across ranks
        num_workers=workers,
        persistent_workers=False,
        pin_memory=torch.cuda.is_available(),
    )
