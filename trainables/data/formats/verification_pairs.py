"""The one shape every face-verification set is read into: image pairs, same-or-not, and a fold.

LFW's pairs.txt gives image paths; InsightFace's .bin files give JPEG bytes. Both become a
`VerificationPairs`, so the protocol (10-fold threshold selection) and the shard writer see one type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

NUM_FOLDS = 10


@dataclass(frozen=True)
class VerificationPairs:
    """Pair i is (left[i], right[i]); `issame[i]` says whether both show one person.

    `left_names`/`right_names` are source-relative names used as the shards' `file` and `file_b`
    columns (e.g. "Aaron_Peirsol/Aaron_Peirsol_0001.jpg" or "lfw.bin#0").
    """

    left: list[bytes | Path]
    right: list[bytes | Path]
    issame: np.ndarray  # bool, (n,)
    fold: np.ndarray  # int, (n,), 0..NUM_FOLDS-1
    name: str = "pairs"
    left_names: list[str] = field(default_factory=list)
    right_names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.issame)


def contiguous_folds(n: int, folds: int = NUM_FOLDS) -> np.ndarray:
    """The fold of each of n pairs as `KFold(folds, shuffle=False)` cuts them (InsightFace's protocol)."""
    fold = np.empty(n, dtype=np.int64)
    for k, part in enumerate(np.array_split(np.arange(n), folds)):
        fold[part] = k
    return fold
