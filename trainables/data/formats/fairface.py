"""Reader of the real FairFace label files, exactly as they are distributed.

`read_fairface(root)` returns a `FairFaceIndex`: one row per image, train rows first then val, in
each CSV's order. `root` is the image folder of either padding release (it holds `train/` and
`val/`, e.g. `fairface-img-margin025-trainval/`); the two label CSVs may sit inside it or next to
it (in its parent), as people unpack the downloads both ways. Every malformed input raises a
one-line `UserError` naming the file, the 1-based line and the fix. Images are not opened here:
checking 97k files would dominate start-up; a missing one fails when it is decoded.
"""

from __future__ import annotations

import csv
import pathlib
from dataclasses import dataclass, field

import numpy as np

from trainables.errors import UserError

AGE_BINS: tuple[str, ...] = ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "more than 70")
GENDERS: tuple[str, ...] = ("Male", "Female")
RACES: tuple[str, ...] = ("White", "Black", "Latino_Hispanic", "East Asian", "Southeast Asian", "Indian",
                          "Middle Eastern")
HEADER: tuple[str, ...] = ("file", "age", "gender", "race", "service_test")
LABEL_FILES: dict[str, str] = {"train": "fairface_label_train.csv", "val": "fairface_label_val.csv"}
SPLITS: dict[str, int] = {"train": 0, "val": 1}
_CLASSES = {"age": AGE_BINS, "gender": GENDERS, "race": RACES}
_BOOLS = {"true": True, "false": False}


@dataclass(frozen=True)
class FairFaceIndex:
    """The labels of one FairFace release, one row per image (train rows first, then val)."""

    root: pathlib.Path              # the folder holding train/ and val/
    files: list[str]                # as in the CSV, e.g. "train/1.jpg"
    split: np.ndarray               # int8: 0 train, 1 val
    age: list[str]
    gender: list[str]
    race: list[str]
    service_test: np.ndarray        # bool
    label_files: tuple[pathlib.Path, ...] = field(default=())  # the two CSVs that were read

    def image_path(self, i: int) -> pathlib.Path:
        return self.root / self.files[i]

    def indices(self, split: str) -> np.ndarray:
        if split not in SPLITS:
            raise UserError(f"unknown FairFace split {split!r}; FairFace has {', '.join(SPLITS)} only")
        return np.flatnonzero(self.split == SPLITS[split])


def find_label_dir(root: pathlib.Path) -> pathlib.Path | None:
    """The folder holding both label CSVs: `root` itself, else its parent; None if neither."""
    for folder in (root, root.parent):
        if all((folder / name).is_file() for name in LABEL_FILES.values()):
            return folder
    return None


def is_fairface_root(root) -> bool:
    """True for a FairFace image folder (train/ inside; the CSVs in it or beside it), or for a folder
    holding the label CSVs. Never raises: used to detect a dataset's format."""
    try:
        root = pathlib.Path(root).expanduser()
        if (root / LABEL_FILES["train"]).is_file():
            return _has_header(root / LABEL_FILES["train"])
        return (root / "train").is_dir() and (root.parent / LABEL_FILES["train"]).is_file() \
            and _has_header(root.parent / LABEL_FILES["train"])
    except OSError:
        return False


def _has_header(path: pathlib.Path) -> bool:
    with open(path, encoding="utf-8-sig", newline="") as f:
        return tuple(c.strip() for c in f.readline().strip().split(",")) == HEADER


def read_fairface(root) -> FairFaceIndex:
    """Parse and validate both label CSVs of the FairFace release at `root` (see the module docstring)."""
    root = pathlib.Path(root).expanduser()
    if not root.is_dir():
        raise UserError(f"FairFace folder not found: {root}: pass --data with the image folder holding train/ and val/")
    label_dir = find_label_dir(root)
    if label_dir is None:
        raise UserError(f"no {LABEL_FILES['train']} and {LABEL_FILES['val']} in {root} or {root.parent}: "
                        f"put FairFace's two label CSVs in the image folder or next to it")
    for split in SPLITS:
        if not (root / split).is_dir():
            hint = _subfolder_hint(root)
            raise UserError(f"FairFace image folder {root / split} is missing: pass the release folder that holds "
                            f"train/ and val/{hint}")
    columns: dict[str, list] = {name: [] for name in HEADER}
    split_codes: list[int] = []
    for split, code in SPLITS.items():
        before = len(columns["file"])
        _read_csv(label_dir / LABEL_FILES[split], split, columns)
        split_codes += [code] * (len(columns["file"]) - before)
    return FairFaceIndex(
        root=root, files=columns["file"], split=np.array(split_codes, dtype=np.int8), age=columns["age"],
        gender=columns["gender"], race=columns["race"], service_test=np.array(columns["service_test"], dtype=bool),
        label_files=tuple(label_dir / LABEL_FILES[s] for s in SPLITS),
    )


def _subfolder_hint(root: pathlib.Path) -> str:
    """The release folders under `root`, for a user who passed the folder above them."""
    inner = sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "train").is_dir()) if root.is_dir() else []
    return f" (e.g. --data {root / inner[0]})" if inner else ""


def _read_csv(path: pathlib.Path, split: str, columns: dict[str, list]) -> None:
    """Append the rows of one label CSV to `columns`, validating every field."""
    with open(path, encoding="utf-8-sig", newline="") as f:  # -sig: a re-saved CSV may carry a BOM
        rows = csv.reader(f)
        header = next(rows, None)
        if header is None or tuple(c.strip() for c in header) != HEADER:
            raise UserError(f"{path}, line 1: header is {','.join(header or [])!r}, expected {','.join(HEADER)!r}; "
                            f"use the label CSV distributed with FairFace")
        for line, row in enumerate(rows, start=2):
            if not row:  # a blank line (e.g. an extra trailing newline) holds no image
                continue
            if len(row) != len(HEADER):
                raise UserError(f"{path}, line {line}: {len(row)} columns, expected {len(HEADER)} "
                                f"({','.join(HEADER)}); fix or remove that row")
            name, age, gender, race, service = row
            _check_file(path, line, name, split)
            for column, value in (("age", age), ("gender", gender), ("race", race)):
                if value not in _CLASSES[column]:
                    raise UserError(f"{path}, line {line}: unknown {column} {value!r}; expected one of "
                                    f"{', '.join(_CLASSES[column])}")
            flag = _BOOLS.get(service.strip().lower())
            if flag is None:
                raise UserError(f"{path}, line {line}: service_test is {service!r}, expected True or False")
            for column, value in zip(HEADER, (name, age, gender, race, flag)):
                columns[column].append(value)


def _check_file(path: pathlib.Path, line: int, name: str, split: str) -> None:
    """A relative `split/NAME` path: the index must never point outside the release folder."""
    parts = pathlib.PurePosixPath(name).parts
    if len(parts) != 2 or parts[0] != split or parts[1] in ("", ".", "..") or "\\" in name:
        raise UserError(f"{path}, line {line}: file {name!r} is not of the form {split}/N.jpg; "
                        f"use the label CSV distributed with FairFace")
