"""Reader of the real FairFace label files, exactly as they are distributed.

`read_fairface(root)` returns a `FairFaceIndex`: one row per image, train rows first then val, in
each CSV's order. `root` is the image folder of either padding release (it holds `train/` and
`val/`, e.g. `fairface-img-margin025-trainval/`); the two label CSVs may sit inside it or next to
it (in its parent), as people unpack the downloads both ways. Every malformed input raises a
one-line `UserError` naming the file, the 1-based line and the fix; a row that is bad on its own (a
file outside `train/` or `val/`, bytes that are not UTF-8, a field over 128 KiB) goes to `rejects`
instead, for `prepare` to skip and report. Images are not opened here:
checking 97k files would dominate start-up; a missing one fails when it is decoded.

Two pairs of label files are read, told apart by their names (same header, same rows otherwise):
- the official release's `fairface_label_{train,val}.csv`, whose `age` is one of the nine bins;
- seed 001's variant `fairface-labels-{train,val}.csv`, whose `age` holds years (`59`). The years
  are kept (`FairFaceIndex.age_years`) and each row's bin is derived from them (`years_to_bin`), so
  every bin-based metric works on either. Ages must be finite, from 0 to `MAX_AGE_YEARS`.
The first folder (`root`, then its parent) holding a complete pair is used; a folder holding both
pairs is refused rather than guessed at, since their labels may disagree.
"""

from __future__ import annotations

import math
import pathlib
from dataclasses import dataclass, field

import numpy as np

from trainables.data.formats.rejects import Rejects, csv_rows, outside_problem, printable
from trainables.data.plans import Plan, by_split, register_format
from trainables.errors import UserError

AGE_BINS: tuple[str, ...] = ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "more than 70")
GENDERS: tuple[str, ...] = ("Male", "Female")
RACES: tuple[str, ...] = ("White", "Black", "Latino_Hispanic", "East Asian", "Southeast Asian", "Indian",
                          "Middle Eastern")
HEADER: tuple[str, ...] = ("file", "age", "gender", "race", "service_test")
LABEL_FILES: dict[str, str] = {"train": "fairface_label_train.csv", "val": "fairface_label_val.csv"}
YEARS_LABEL_FILES: dict[str, str] = {"train": "fairface-labels-train.csv", "val": "fairface-labels-val.csv"}
# What a pair's `age` column holds -> its file names.
LABEL_VARIANTS: dict[str, dict[str, str]] = {"bins": LABEL_FILES, "years": YEARS_LABEL_FILES}
MAX_AGE_YEARS = 120.0  # above any recorded human age: a larger value is a typo or another unit
# Lower bound of each AGE_BINS bin in years; bin k holds [AGE_LOWER[k], AGE_LOWER[k + 1]).
AGE_LOWER = np.array([0, 3, 10, 20, 30, 40, 50, 60, 70], dtype=np.float64)
SPLITS: dict[str, int] = {"train": 0, "val": 1}
_CLASSES = {"gender": GENDERS, "race": RACES}
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
    age_years: np.ndarray | None = None  # float32 years (seed 001's variant); None when the labels hold bins

    def image_path(self, i: int) -> pathlib.Path:
        return self.root / self.files[i]

    def indices(self, split: str) -> np.ndarray:
        if split not in SPLITS:
            raise UserError(f"unknown FairFace split {split!r}; FairFace has {', '.join(SPLITS)} only")
        return np.flatnonzero(self.split == SPLITS[split])


def years_to_bin(years) -> np.ndarray:
    """The age bin whose interval [low, next low) holds each age in years (clipped to the bins)."""
    years = np.asarray(years, dtype=np.float64)
    return np.clip(np.searchsorted(AGE_LOWER, years, side="right") - 1, 0, len(AGE_BINS) - 1)


def _pairs_in(folder: pathlib.Path) -> list[str]:
    """The variants whose two label CSVs are both in `folder`."""
    return [v for v, names in LABEL_VARIANTS.items() if all((folder / n).is_file() for n in names.values())]


def find_labels(root: pathlib.Path) -> tuple[pathlib.Path, str] | None:
    """(folder, variant) of the label CSVs: `root` itself, else its parent; None if neither holds a pair.
    A folder holding both pairs is a UserError naming both."""
    for folder in (root, root.parent):
        found = _pairs_in(folder)
        if len(found) > 1:
            raise UserError(f"{folder} holds both {LABEL_FILES['train']} (age bins) and {YEARS_LABEL_FILES['train']} "
                            f"(ages in years): move the pair you do not want to train on out of that folder")
        if found:
            return folder, found[0]
    return None


def is_fairface_root(root) -> bool:
    """True for a FairFace image folder (train/ inside; the CSVs in it or beside it), or for a folder
    holding the label CSVs, of either variant. Never raises: used to detect a dataset's format."""
    try:
        root = pathlib.Path(root).expanduser()
        trains = [names["train"] for names in LABEL_VARIANTS.values()]
        inside = [root / name for name in trains if (root / name).is_file()]
        if inside:
            return any(_has_header(p) for p in inside)
        return (root / "train").is_dir() and any(
            (root.parent / name).is_file() and _has_header(root.parent / name) for name in trains)
    except (OSError, UnicodeDecodeError):
        return False


def _has_header(path: pathlib.Path) -> bool:
    with open(path, encoding="utf-8-sig", newline="") as f:
        return tuple(c.strip() for c in f.readline().strip().split(",")) == HEADER


def read_fairface(root, rejects: Rejects | None = None) -> FairFaceIndex:
    """Parse and validate both label CSVs of the FairFace release at `root` (see the module docstring).
    A row that is bad on its own goes to `rejects` (by default: raised)."""
    rejects = rejects if rejects is not None else Rejects()
    root = pathlib.Path(root).expanduser()
    if not root.is_dir():
        raise UserError(f"FairFace folder not found: {root}: pass --data with the image folder holding train/ and val/")
    found = find_labels(root)
    if found is None:
        raise UserError(_missing_labels(root))
    label_dir, variant = found
    names = LABEL_VARIANTS[variant]
    for split in SPLITS:
        if not (root / split).is_dir():
            hint = _subfolder_hint(root)
            raise UserError(f"FairFace image folder {root / split} is missing: pass the release folder that holds "
                            f"train/ and val/{hint}")
    columns: dict[str, list] = {name: [] for name in HEADER}
    years: list[float] = []
    split_codes: list[int] = []
    for split, code in SPLITS.items():
        before = len(columns["file"])
        _read_csv(label_dir / names[split], split, columns, years if variant == "years" else None, rejects)
        split_codes += [code] * (len(columns["file"]) - before)
    age_years = np.array(years, dtype=np.float32) if variant == "years" else None
    age = [AGE_BINS[k] for k in years_to_bin(years).tolist()] if variant == "years" else columns["age"]
    return FairFaceIndex(
        root=root, files=columns["file"], split=np.array(split_codes, dtype=np.int8), age=age,
        gender=columns["gender"], race=columns["race"], service_test=np.array(columns["service_test"], dtype=bool),
        label_files=tuple(label_dir / names[s] for s in SPLITS), age_years=age_years,
    )


def _missing_labels(root: pathlib.Path) -> str:
    """The error for a folder without a complete pair: name the missing half of a half-present pair."""
    for folder in (root, root.parent):
        for names in LABEL_VARIANTS.values():
            present = [n for n in names.values() if (folder / n).is_file()]
            if present:
                missing = next(n for n in names.values() if n not in present)
                return f"{folder} holds {present[0]} but not {missing}: put both label CSVs of the pair there"
    return (f"no {LABEL_FILES['train']} and {LABEL_FILES['val']} (or seed 001's {YEARS_LABEL_FILES['train']} and "
            f"{YEARS_LABEL_FILES['val']}) in {root} or {root.parent}: put FairFace's two label CSVs in the image "
            f"folder or next to it")


def _subfolder_hint(root: pathlib.Path) -> str:
    """The release folders under `root`, for a user who passed the folder above them."""
    inner = sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "train").is_dir()) if root.is_dir() else []
    return f" (e.g. --data {root / inner[0]})" if inner else ""


def _read_csv(path: pathlib.Path, split: str, columns: dict[str, list], years: list[float] | None,
              rejects: Rejects) -> None:
    """Append the rows of one label CSV to `columns`, validating every field. With `years` (a list),
    `age` holds years: they go to `years` and `columns["age"]` keeps the raw text. A row that is bad on
    its own (not UTF-8, a field over 128 KiB, a file outside `split/`) goes to `rejects`."""
    rows = csv_rows(path, rejects, fix_encoding="save the CSV as UTF-8 (FairFace's own files are)")
    _, header = next(rows, (1, None))
    if header is None or tuple(c.strip() for c in header) != HEADER:
        raise UserError(f"{path}, line 1: header is {printable(','.join(header or []))!r}, expected "
                        f"{','.join(HEADER)!r}; use the label CSV distributed with FairFace")
    for line, row in rows:
        if not row:  # a blank line (e.g. an extra trailing newline) holds no image
            continue
        if len(row) != len(HEADER):
            raise UserError(f"{path}, line {line}: {len(row)} columns, expected {len(HEADER)} "
                            f"({','.join(HEADER)}); fix or remove that row")
        name, age, gender, race, service = row
        problem = _file_problem(name, split)
        if problem:
            rejects.add(f"{path}, line {line}: file {printable(name)!r} {problem}; use the label CSV distributed "
                        f"with FairFace", file=name, split=split)
            continue
        if years is not None:
            years.append(_years(path, line, age))
        elif age not in AGE_BINS:
            raise UserError(f"{path}, line {line}: unknown age {printable(age)!r}; expected one of "
                            f"{', '.join(AGE_BINS)}{_years_hint(age, split)}")
        for column, value in (("gender", gender), ("race", race)):
            if value not in _CLASSES[column]:
                raise UserError(f"{path}, line {line}: unknown {column} {printable(value)!r}; expected one of "
                                f"{', '.join(_CLASSES[column])}")
        flag = _BOOLS.get(service.strip().lower())
        if flag is None:
            raise UserError(f"{path}, line {line}: service_test is {printable(service)!r}, expected True or False")
        for column, value in zip(HEADER, (name, age, gender, race, flag)):
            columns[column].append(value)


def _years(path: pathlib.Path, line: int, value: str) -> float:
    """An age in years from seed 001's variant, or a one-line UserError saying what is wrong with it."""
    try:
        years = float(value)
    except ValueError:
        years = None
    if years is None or not math.isfinite(years):
        problem = "is not a number of years"
        if value in AGE_BINS:
            problem += f" (age bins belong in {LABEL_FILES['train']} and {LABEL_FILES['val']})"
    elif years < 0:
        problem = "is negative"
    elif years > MAX_AGE_YEARS:
        problem = f"is over {MAX_AGE_YEARS:g} years"
    else:
        return years
    raise UserError(f"{path}, line {line}: age {printable(value)!r} {problem}; this file holds ages in years from 0 to "
                    f"{MAX_AGE_YEARS:g} (e.g. 59): fix that row")


def _years_hint(value: str, split: str) -> str:
    """For a number in an official label file: where ages in years go instead."""
    try:
        float(value)
    except ValueError:
        return ""
    return f"; ages in years belong in seed 001's {YEARS_LABEL_FILES[split]}, not {LABEL_FILES[split]}"


def _file_problem(name: str, split: str) -> str:
    """Why `name` is not a relative `split/NAME` path inside the release folder ("" when it is): the
    index must never point outside it."""
    parts = pathlib.PurePosixPath(name).parts
    if len(parts) != 2 or parts[0] != split or parts[1] in ("", ".", "..") or "\\" in name or outside_problem(name):
        return f"is not of the form {split}/N.jpg"
    return ""


@register_format("fairface", detect=is_fairface_root, order=20)
def plan(src: pathlib.Path, rejects: Rejects) -> Plan:
    """The layout's splits as `prepare` packs them."""
    index = read_fairface(src, rejects)  # it has checked every value against these classes
    classes = {"age": list(AGE_BINS), "gender": list(GENDERS), "race": list(RACES)}
    labels = {column: np.array([names.index(v) for v in getattr(index, column)], dtype=np.int16)
              for column, names in classes.items()}
    labels["service_test"] = np.asarray(index.service_test, dtype=bool)
    if index.age_years is not None:  # seed 001's labels: keep the years; `age` stays the bin they fall in
        labels["age_years"] = np.asarray(index.age_years, dtype=np.float32)
    paths = [index.image_path(i) for i in range(len(index.files))]
    fix = {s: f"{f.name} lists no usable image: put FairFace's {s} rows in it"
           for s, f in zip(SPLITS, index.label_files)}
    return Plan(by_split(index.split, SPLITS, index.files, paths, labels), list(index.label_files), paths,
                list(labels), class_names=classes, num_classes={k: len(v) for k, v in classes.items()},
                empty_fix=fix)
