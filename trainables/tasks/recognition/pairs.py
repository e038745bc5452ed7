"""Verification pairs read from pair shards, with each distinct image embedded exactly once.

A pair split holds, per pair, both images' bytes (`image`, `image_b`), their names (`file`, `file_b`)
and `issame`. LFW names one photo in many pairs, so the distinct images are found by name first; the
ranks embed contiguous shares of them (and their flips), the embeddings are gathered in rank order,
and every rank then has every pair's distance, computed from the one embedding of each image.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from trainables.data.decode import decode_shard_image
from trainables.data.loaders import EvalCaches
from trainables.data.shards import ShardSplit, load_metadata
from trainables.distributed import all_gather_rows
from trainables.errors import UserError
from trainables.tasks import EvalContext
from trainables.tasks.recognition.verification import embed_with_flip, pair_distances

MIN_PAIRS = 10  # the 10-fold protocol needs at least one pair per fold


class PairSplit:
    """One verification set: `left[i]`, `right[i]` index the distinct images of pair i."""

    def __init__(self, root: str, name: str):
        self.split = ShardSplit(root, name)
        self.name = name
        table = self.split.columns(["file", "file_b", "issame"])
        if len(table) < MIN_PAIRS:
            raise UserError(f"verification set {name} of {root} has {len(table)} pairs; the 10-fold protocol "
                            f"needs at least {MIN_PAIRS}")
        self.issame = table["issame"].to_numpy(dtype=bool)
        slot: dict[str, int] = {}
        self.first: list[tuple[int, int]] = []  # (row, side) where each distinct image is stored
        sides = []
        for side, column in enumerate(("file", "file_b")):
            index = np.empty(len(table), dtype=np.int64)
            for row, key in enumerate(table[column].astype(str).tolist()):
                if key not in slot:
                    slot[key] = len(self.first)
                    self.first.append((row, side))
                index[row] = slot[key]
            sides.append(index)
        self.left, self.right = sides

    def __len__(self) -> int:
        return len(self.issame)

    @property
    def num_images(self) -> int:
        return len(self.first)

    def images(self, wanted: np.ndarray) -> Iterator[bytes]:
        """The bytes of distinct images `wanted` (ascending), reading only the row groups that hold them."""
        by_row: dict[int, list[tuple[int, int]]] = {}
        for u in wanted.tolist():
            row, side = self.first[u]
            by_row.setdefault(row, []).append((u, side))
        rows = sorted(by_row)
        found: dict[int, bytes] = {}
        at, k = 0, 0
        for rel, group, count in self.split.row_groups:
            hit = []
            while k < len(rows) and rows[k] < at + count:
                hit.append(rows[k])
                k += 1
            if hit:
                table = self.split.open(rel).read_row_group(group, columns=["image", "image_b"])
                columns = (table.column("image"), table.column("image_b"))
                for row in hit:
                    for u, side in by_row[row]:
                        found[u] = columns[side][row - at].as_py()
            at += count
        for u in wanted.tolist():
            yield found[u]


def pair_split_names(root: str) -> list[str]:
    return list(load_metadata(root).get("pair_splits", []))


def distances(model: torch.nn.Module, pairs: PairSplit, size: int, ctx: EvalContext,
              caches: EvalCaches | None = None) -> np.ndarray:
    """Every pair's flip-summed squared L2 distance; each distinct image is embedded once, by one rank (and
    with `caches`, decoded once over the evaluations, as far as the budget holds them: the images are
    unaugmented and the same each time; seed 004 verifies about 27,000 every 5,000 iterations)."""
    share = np.array_split(np.arange(pairs.num_images), ctx.world)[ctx.rank]
    # One cache per set and rank, its slots this rank's distinct images in share order.
    cache = (caches.cache((pairs.split.root, pairs.name, size, ctx.rank, ctx.world), [(pairs.name, 0, len(share))],
                          size) if caches is not None else None)
    key = lambda i: (pairs.name, 0, i, 0)  # noqa: E731

    def decoded() -> Iterator[torch.Tensor]:
        held = [cache is not None and cache.holds([key(i)]) for i in range(len(share))]
        read = pairs.images(share[~np.array(held, dtype=bool)])  # in share order, as the loop below asks for them
        for i in range(len(share)):
            if held[i]:
                yield cache.get(key(i))
                continue
            image = decode_shard_image(next(read), size, f"an image of verification set {pairs.name}", square=True)
            if cache is not None:
                cache.put(key(i), image)
            yield image

    def batches() -> Iterator[torch.Tensor]:
        batch = []
        for image in decoded():
            batch.append(image)
            if len(batch) == ctx.batch_size:
                yield torch.stack(batch)
                batch = []
        if batch:
            yield torch.stack(batch)

    plain = flipped = np.zeros((0, 0), dtype=np.float32)
    if len(share):  # a rank may have none when there are fewer images than ranks
        plain, flipped = embed_with_flip(model, batches(), ctx.pipe.mean, ctx.pipe.std, ctx.pipe.device)
    plain, flipped = all_gather_rows(plain, flipped)
    return pair_distances(plain[pairs.left], plain[pairs.right], flipped[pairs.left], flipped[pairs.right])
