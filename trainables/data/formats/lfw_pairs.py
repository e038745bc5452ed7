"""Reader of LFW's `pairs.txt` and the image tree it names, as distributed.

pairs.txt: line 1 is `folds<TAB>n` (10 and 300); then, per fold, n matched lines `name n1 n2` and n
mismatched lines `name1 n1 name2 n2`. An image is `<tree>/name/name_%04d.jpg`, where the tree is the
folder holding pairs.txt or one sub-folder of it (`lfw/`, `lfw_funneled/`, `lfw-deepfunneled/`, as
the archives unpack). torchvision's layout (`<root>/lfw-py/pairs.txt`) is accepted too, and the
pairs come out in the same order as `torchvision.datasets.LFWPairs`. The DevTrain/DevTest files,
whose line 1 is a single count, read as one fold.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from trainables.data.formats.verification_pairs import VerificationPairs
from trainables.errors import UserError

PAIRS_FILE = "pairs.txt"
TORCHVISION_FOLDER = "lfw-py"


def find_pairs_file(root: Path) -> Path:
    if root.is_file():
        return root
    for candidate in (root / PAIRS_FILE, root / TORCHVISION_FOLDER / PAIRS_FILE):
        if candidate.is_file():
            return candidate
    raise UserError(f"LFW {PAIRS_FILE} not found in {root}; pass the folder holding pairs.txt and the "
                    f"image tree (e.g. lfw/ or lfw-deepfunneled/)")


def is_lfw_pairs_root(root) -> bool:
    try:
        root = Path(root)
        return (root / PAIRS_FILE).is_file() or (root / TORCHVISION_FOLDER / PAIRS_FILE).is_file()
    except (OSError, TypeError):
        return False


def _image_name(person: str, number: str) -> str:
    return f"{person}/{person}_{int(number):04d}.jpg"


def _parse(path: Path) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    head = lines[0].split() if lines else []
    try:
        folds, per_fold = (int(head[0]), int(head[1])) if len(head) == 2 else (1, int(head[0]))
        if len(head) > 2 or folds <= 0 or per_fold <= 0:
            raise ValueError
    except (ValueError, IndexError):
        raise UserError(f"{path} line 1: expected `folds<TAB>pairs per fold` (10<TAB>300), found "
                        f"{(lines[0] if lines else '')[:40]!r}; use the pairs.txt distributed with LFW") from None
    expected = 1 + 2 * folds * per_fold
    if len(lines) != expected:
        raise UserError(f"{path}: line 1 announces {folds} folds of {per_fold} matched + {per_fold} "
                        f"mismatched pairs ({expected} lines in all) but the file has {len(lines)} lines; "
                        f"the file is truncated or edited, re-download it")
    left, right, issame = [], [], []
    for n, line in enumerate(lines[1:], 2):
        parts = line.split()
        matched = (n - 2) % (2 * per_fold) < per_fold
        want = 3 if matched else 4
        numbers = parts[1:] if matched else parts[1:2] + parts[3:4]
        if len(parts) != want or not all(p.isdigit() for p in numbers):
            kind = "matched `name n1 n2`" if matched else "mismatched `name1 n1 name2 n2`"
            raise UserError(f"{path} line {n}: expected a {kind} pair, found {line[:60]!r}; "
                            f"use the pairs.txt distributed with LFW")
        left.append(_image_name(parts[0], parts[1]))
        right.append(_image_name(parts[0], parts[2]) if matched else _image_name(parts[2], parts[3]))
        issame.append(matched)
    fold = np.repeat(np.arange(folds), 2 * per_fold)
    return left, right, np.asarray(issame, dtype=bool), fold


def _image_tree(folder: Path, first: str, images: str | None, pairs_path: Path) -> Path:
    """The folder beside pairs.txt in which `first` (the first pair's image) exists."""
    if images is not None:
        return folder / images
    candidates = [folder] + sorted(p for p in folder.iterdir() if p.is_dir())
    found = [c for c in candidates if (c / first).is_file()]
    if len(found) == 1:
        return found[0]
    if not found:
        raise UserError(f"no LFW image tree next to {pairs_path}: {first} is neither in {folder} nor in "
                        f"one of its sub-folders; unpack lfw.tgz (or lfw-deepfunneled.tgz) there")
    names = ", ".join(f"{c.name}/" for c in found)
    raise UserError(f"several LFW image trees next to {pairs_path} ({names}); keep only the one to "
                    f"evaluate on (e.g. lfw-deepfunneled/) beside pairs.txt")


def read_lfw_pairs(root: str | os.PathLike, images: str | None = None) -> VerificationPairs:
    """Read pairs.txt and locate its image tree; `images` names the tree's sub-folder when several exist."""
    root = Path(root)
    if not root.exists():
        raise UserError(f"LFW folder {root} does not exist; pass the folder holding pairs.txt")
    pairs_path = find_pairs_file(root)
    left, right, issame, fold = _parse(pairs_path)
    tree = _image_tree(pairs_path.parent, left[0], images, pairs_path)
    return VerificationPairs(left=[tree / name for name in left], right=[tree / name for name in right],
                             issame=issame, fold=fold, name="lfw", left_names=left, right_names=right)
