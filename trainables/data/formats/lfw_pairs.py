"""Reader of LFW's `pairs.txt` and the image tree it names, as distributed.

pairs.txt: line 1 is `folds<TAB>n` (10 and 300); then, per fold, n matched lines `name n1 n2` and n
mismatched lines `name1 n1 name2 n2`. An image is `<tree>/name/name_%04d.jpg`, where the tree is the
folder holding pairs.txt or one sub-folder of it (`lfw/`, `lfw_funneled/`, `lfw-deepfunneled/`, as
the archives unpack). torchvision's layout (`<root>/lfw-py/pairs.txt`) is accepted too, and the
pairs come out in the same order as `torchvision.datasets.LFWPairs`. The DevTrain/DevTest files,
whose line 1 is a single count, read as one fold. A pair line that cannot name two images inside
the tree (a person name with a `/` or `..`, a number that is not ASCII digits, bytes that are not
UTF-8) goes to `rejects`, for `prepare` to skip and report.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from trainables.data.formats.verification_pairs import VerificationPairs
from trainables.data.formats.rejects import Rejects, is_utf8, outside_problem, printable
from trainables.data.plans import Plan, pair_split, register_format
from trainables.errors import UserError

PAIRS_FILE = "pairs.txt"
TORCHVISION_FOLDER = "lfw-py"
_MAX_DIGITS = 6  # LFW's largest image number has 3


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


def _field_problem(parts: list[str], numbers: list[str]) -> str:
    """Why the fields of one pair line cannot name images inside the tree ("" when they can)."""
    if not is_utf8("".join(parts)):
        return "holds bytes that are not UTF-8 text"
    bad = next((n for n in numbers if not (n.isascii() and n.isdigit() and len(n) <= _MAX_DIGITS)), None)
    if bad is not None:
        return f"{printable(bad, 20)!r} is not an image number"
    names = parts[:1] + parts[2:3] if len(parts) == 4 else parts[:1]
    bad = next((n for n in names if n in (".", "..") or "/" in n or "\\" in n or outside_problem(n)), None)
    if bad is not None:
        return f"person {printable(bad, 40)!r} is not a folder name inside the image tree"
    return ""


def _parse(path: Path, rejects: Rejects) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    lines = path.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    head = lines[0].split() if lines else []
    try:
        if not all(h.isascii() and h.isdigit() for h in head):
            raise ValueError
        folds, per_fold = (int(head[0]), int(head[1])) if len(head) == 2 else (1, int(head[0]))
        if len(head) > 2 or folds <= 0 or per_fold <= 0:
            raise ValueError
    except (ValueError, IndexError):
        raise UserError(f"{path} line 1: expected `folds<TAB>pairs per fold` (10<TAB>300), found "
                        f"{printable(lines[0] if lines else '', 40)!r}; use the pairs.txt distributed with LFW") from None
    expected = 1 + 2 * folds * per_fold
    if len(lines) != expected:
        raise UserError(f"{path}: line 1 announces {folds} folds of {per_fold} matched + {per_fold} "
                        f"mismatched pairs ({expected} lines in all) but the file has {len(lines)} lines; "
                        f"the file is truncated or edited, re-download it")
    left, right, issame, fold = [], [], [], []
    for n, line in enumerate(lines[1:], 2):
        parts = line.split()
        matched = (n - 2) % (2 * per_fold) < per_fold
        want = 3 if matched else 4
        numbers = parts[1:] if matched else parts[1:2] + parts[3:4]
        kind = "matched `name n1 n2`" if matched else "mismatched `name1 n1 name2 n2`"
        problem = f"expected a {kind} pair, found {printable(line, 60)!r}" if len(parts) != want else \
            _field_problem(parts, numbers)
        if problem:
            rejects.add(f"{path} line {n}: {problem}; use the pairs.txt distributed with LFW",
                        file=f"{path.name} line {n}", split="lfw")
            continue
        left.append(_image_name(parts[0], parts[1]))
        right.append(_image_name(parts[0], parts[2]) if matched else _image_name(parts[2], parts[3]))
        issame.append(matched)
        fold.append((n - 2) // (2 * per_fold))
    if not left:
        raise UserError(f"{path}: no line names a usable pair; use the pairs.txt distributed with LFW")
    return left, right, np.asarray(issame, dtype=bool), np.asarray(fold, dtype=np.int64)


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


def read_lfw_pairs(root: str | os.PathLike, images: str | None = None, rejects: Rejects | None = None) -> VerificationPairs:
    """Read pairs.txt and locate its image tree; `images` names the tree's sub-folder when several exist.
    A pair line that cannot name two images inside the tree goes to `rejects` (by default: raised)."""
    rejects = rejects if rejects is not None else Rejects()
    root = Path(root)
    if not root.exists():
        raise UserError(f"LFW folder {root} does not exist; pass the folder holding pairs.txt")
    pairs_path = find_pairs_file(root)
    left, right, issame, fold = _parse(pairs_path, rejects)
    tree = _image_tree(pairs_path.parent, left[0], images, pairs_path)
    return VerificationPairs(left=[tree / name for name in left], right=[tree / name for name in right],
                             issame=issame, fold=fold, name="lfw", left_names=left, right_names=right)


@register_format("lfw_pairs", detect=is_lfw_pairs_root, order=50)
def plan(src: Path, rejects: Rejects) -> Plan:
    """The layout's splits as `prepare` packs them."""
    pairs = read_lfw_pairs(src, rejects=rejects)
    return Plan({"lfw": pair_split(pairs)}, [find_pairs_file(src)], sorted(set(pairs.left) | set(pairs.right)))
