"""Reader of the generic multi-label layout: an image folder and one label CSV, for any attribute set.

The layout (../shared/DATA_FORMATS.md):
- one CSV whose header names a `file` column, one column per attribute, and optionally `split`;
- `file` is an image path relative to the folder that holds the CSV (e.g. `images/0001.jpg`);
- each attribute cell is 0/1 or -1/1 (absent/present), one encoding throughout the file;
- `split` holds `train`, `val`, `test` or 0, 1, 2. Without it, `make_split` draws a seeded 80/10/10
  split over the sorted file names (so the CSV's row order does not change it), and `split_source`
  says which split was used, for prepare to record in metadata.json.

How it is recognised (`is_attributes_csv_root`): the path is a `.csv` file whose header has a `file`
column (the folder is then the CSV's parent), or a folder holding exactly one `.csv` file at its root
with such a header. Empty cells, values other than 0/1/-1, a file listed twice are refused: each a
one-line `UserError` naming the CSV, the line and the fix. A row that is bad on its own (a `file` that
is absolute or has a `..` part, and so would read outside the dataset; bytes that are not UTF-8; a
field over 128 KiB) goes to `rejects`, for `prepare` to skip and report. Images are not opened here
(prepare checks them).
"""

from __future__ import annotations

import csv
import os
import pathlib
import posixpath
from dataclasses import dataclass, field

import numpy as np

from trainables.data.formats.celeba import RESERVED_NAMES
from trainables.data.formats.rejects import Rejects, csv_rows, outside_problem, printable
from trainables.data.plans import Plan, by_split, register_format
from trainables.errors import UserError

FILE_COLUMN = "file"
SPLIT_COLUMN = "split"
SPLITS: dict[str, int] = {"train": 0, "val": 1, "test": 2}
SPLIT_SEED = 0
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
_SPLIT_VALUES = {**SPLITS, **{str(code): code for code in SPLITS.values()}}
_VALUES = frozenset({"0", "1", "-1"})
_LOOKED_AT = 20  # files checked for existence: enough to tell a wrong base folder from a few missing images


@dataclass(frozen=True)
class AttributesCsvIndex:
    """The labels of one label CSV, one row per image in the CSV's order."""

    root: pathlib.Path              # the folder the `file` paths are relative to
    label_file: pathlib.Path
    files: list[str]                # normalised relative POSIX paths
    attribute_names: list[str]      # the CSV's attribute columns, in its order
    attributes: np.ndarray          # (n, A) uint8, 1 present
    split: np.ndarray               # (n,) int8: 0 train, 1 val, 2 test
    split_source: dict = field(default_factory=dict)  # where `split` came from, recorded with the shards

    def image_path(self, i: int) -> pathlib.Path:
        return self.root / self.files[i]

    def indices(self, split: str) -> np.ndarray:
        if split not in SPLITS:
            raise UserError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
        return np.flatnonzero(self.split == SPLITS[split])


def _csv_files(folder: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() == ".csv" and p.is_file())


def _header(path: pathlib.Path) -> list[str]:
    with open(path, encoding="utf-8-sig", newline="") as f:  # -sig: a CSV saved by Excel carries a BOM
        return [c.strip() for c in next(csv.reader(f), [])]


def is_attributes_csv_root(path) -> bool:
    """Whether `path` is a label CSV, or a folder with exactly one, whose header has a `file` column.
    Never raises: used to detect a dataset's format."""
    try:
        path = pathlib.Path(path).expanduser()
        if path.is_file():
            return path.suffix.lower() == ".csv" and FILE_COLUMN in _header(path)
        found = _csv_files(path) if path.is_dir() else []
        return len(found) == 1 and FILE_COLUMN in _header(found[0])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False


def find_label_csv(path: pathlib.Path) -> pathlib.Path:
    """The label CSV of `path` (the CSV itself, or the one CSV in the folder), or a one-line error."""
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise UserError(f"{path} is not a .csv file; pass the image folder holding the label CSV, or the CSV")
        return path
    if not path.is_dir():
        raise UserError(f"attribute dataset {path} does not exist; pass the image folder holding the label CSV "
                        f"(or the CSV itself)")
    found = _csv_files(path)
    if not found:
        raise UserError(f"no .csv label file in {path}; put one CSV at the folder's root: a `{FILE_COLUMN}` "
                        f"column of image paths relative to it, then one 0/1 column per attribute")
    if len(found) > 1:
        names = ", ".join(p.name for p in found[:4])
        raise UserError(f"{path} holds {len(found)} .csv files ({names}); keep one label CSV at the folder's root, "
                        f"or pass the label CSV itself (e.g. {found[0]})")
    return found[0]


def _check_header(path: pathlib.Path, header: list[str]) -> None:
    for k, name in enumerate(header, start=1):
        if not name:
            hint = " (pandas writes its index there unless to_csv(..., index=False))" if k == 1 else ""
            raise UserError(f"{path} line 1: column {k} has no name{hint}; name it or remove that column")
    seen: set[str] = set()
    twice = next((n for n in header if n in seen or seen.add(n)), None)
    if twice is not None:
        raise UserError(f"{path} line 1: column {twice!r} appears twice; give each column one name")
    if FILE_COLUMN not in header:
        raise UserError(f"{path} line 1: no `{FILE_COLUMN}` column (found {', '.join(header[:6])}); the header must "
                        f"name a `{FILE_COLUMN}` column of image paths, then one column per attribute")
    attributes = [n for n in header if n not in (FILE_COLUMN, SPLIT_COLUMN)]
    if not attributes:
        raise UserError(f"{path} line 1: no attribute columns; add one 0/1 column per attribute beside "
                        f"`{FILE_COLUMN}`")
    reserved = next((n for n in attributes if n in RESERVED_NAMES), None)
    if reserved is not None:
        raise UserError(f"{path} line 1: {reserved!r} cannot name an attribute (the prepared data uses it for its "
                        f"own column); rename the column, e.g. to {reserved.capitalize()!r}")


def _relative(name: str) -> tuple[str, str]:
    """(`name` as a normalised relative POSIX path, "") or ("", why it would leave the dataset folder)."""
    posix = name.strip().replace("\\", "/")  # a CSV written on Windows may use backslashes
    problem = outside_problem(posix)
    return ("", problem) if problem else (posixpath.normpath(posix), "")


def _cell_error(path: pathlib.Path, line: int, column: str, value: str, allowed: str) -> UserError:
    what = "is empty" if not value.strip() else f"is {printable(value.strip(), 20)!r}"
    return UserError(f"{path} line {line}: {column} {what}; {column} must be {allowed}")


def read_attributes_csv(path, rejects: Rejects | None = None) -> AttributesCsvIndex:
    """Parse and validate the label CSV of `path` (a folder or the CSV itself); see the module docstring.
    A row that is bad on its own goes to `rejects` (by default: raised)."""
    rejects = rejects if rejects is not None else Rejects()
    label_file = find_label_csv(pathlib.Path(path).expanduser())
    root = label_file.parent
    reader = csv_rows(label_file, rejects, fix_encoding="save the CSV as UTF-8")
    _, header = next(reader, (1, []))
    header = [c.strip() for c in header]
    _check_header(label_file, header)
    file_at, split_at = header.index(FILE_COLUMN), header.index(SPLIT_COLUMN) if SPLIT_COLUMN in header else None
    names = [n for n in header if n not in (FILE_COLUMN, SPLIT_COLUMN)]
    value_at = [header.index(n) for n in names]
    files: list[str] = []
    lines: list[int] = []
    cells: list[list[str]] = []
    splits: list[int] = []
    first_line: dict[str, int] = {}
    for line, row in reader:
        if not row or row == [""]:  # a blank line (e.g. a trailing newline) holds no image
            continue
        if len(row) != len(header):
            raise UserError(f"{label_file} line {line}: {len(row)} fields, expected {len(header)} "
                            f"({','.join(header)}); fix or remove that row")
        name, problem = _relative(row[file_at])
        if problem:
            if problem == "is empty":
                raise UserError(f"{label_file} line {line}: the `{FILE_COLUMN}` cell is empty; give each row its "
                                f"image's path")
            rejects.add(f"{label_file} line {line}: file {printable(row[file_at])!r} {problem}, so it points outside "
                        f"{root}; `{FILE_COLUMN}` must be a path inside the folder holding the CSV, relative to it "
                        f"and without '..'", file=row[file_at])
            continue
        if name in first_line:
            raise UserError(f"{label_file} line {line}: {name} is listed twice (first on line {first_line[name]}); "
                            f"give each image one row")
        first_line[name] = line
        values = [row[k] for k in value_at]
        if not _VALUES.issuperset(values):
            values = [v.strip() for v in values]
            bad = next((k for k, v in enumerate(values) if v not in _VALUES), None)
            if bad is not None:
                raise _cell_error(label_file, line, names[bad], values[bad], "0 or 1 (or -1 or 1)")
        if split_at is not None:
            code = _SPLIT_VALUES.get(row[split_at].strip().lower())
            if code is None:
                raise _cell_error(label_file, line, SPLIT_COLUMN, row[split_at], "train, val or test (or 0, 1, 2)")
            splits.append(code)
        files.append(name)
        lines.append(line)
        cells.append(values)
    if not files:
        if rejects.rows:
            raise UserError(f"{label_file}: every row was left out, e.g. {rejects.rows[0]['reason']}")
        raise UserError(f"{label_file} has a header but no rows; add one row per image")
    table = np.array(cells, dtype="U2")
    _check_encoding(label_file, table, lines)
    _check_images_exist(label_file, files, lines)
    if split_at is not None:
        split, source = np.array(splits, dtype=np.int8), {"column": SPLIT_COLUMN, "file": label_file.name}
    else:
        if len(files) < 3:
            raise UserError(f"{label_file}: {len(files)} images cannot be split into train, val and test; add a "
                            f"`{SPLIT_COLUMN}` column or more images")
        split = make_split(files)
        source = {"made": "seeded 80/10/10 permutation of the sorted file names", "seed": SPLIT_SEED,
                  "fractions": list(SPLIT_FRACTIONS), "file": label_file.name}
    source["counts"] = {s: int((split == code).sum()) for s, code in SPLITS.items()}
    return AttributesCsvIndex(root, label_file, files, names, (table == "1").astype(np.uint8), split, source)


def _check_encoding(path: pathlib.Path, table: np.ndarray, lines: list[int]) -> None:
    """0 and -1 both meaning "absent" in one file is a mix of two exports: refuse it rather than guess."""
    zero, minus = (table == "0").any(axis=1), (table == "-1").any(axis=1)
    if zero.any() and minus.any():
        first_zero, first_minus = int(np.argmax(zero)), int(np.argmax(minus))
        row, other = max(first_zero, first_minus), min(first_zero, first_minus)
        found, used = ("0", "-1") if row == first_zero else ("-1", "0")
        raise UserError(f"{path} line {lines[row]}: value {found} for absent, but line {lines[other]} writes {used}; "
                        f"use one encoding throughout the file, 0/1 or -1/1")


def _check_images_exist(path: pathlib.Path, files: list[str], lines: list[int]) -> None:
    """None of the first images there means the paths are relative to another folder; a few missing
    images are prepare's to skip and report."""
    looked = files[:_LOOKED_AT]
    if not any(os.path.exists(path.parent / f) for f in looked):
        raise UserError(f"{path} line {lines[0]}: {path.parent / files[0]} does not exist (nor do the next "
                        f"{len(looked) - 1}); `{FILE_COLUMN}` paths are relative to the folder holding the CSV")


def make_split(files: list[str], seed: int = SPLIT_SEED) -> np.ndarray:
    """(n,) int8 split codes: a seeded permutation of the sorted names, cut 80/10/10, val and test
    non-empty. It depends on the set of names only, not on the CSV's row order."""
    n = len(files)
    held = [max(1, round(f * n)) for f in SPLIT_FRACTIONS[1:]]
    order = np.argsort(np.array(files, dtype=object), kind="stable")
    shuffled = order[np.random.default_rng(seed).permutation(n)]
    split = np.zeros(n, dtype=np.int8)
    split[shuffled[n - sum(held): n - held[1]]] = SPLITS["val"]
    split[shuffled[n - held[1]:]] = SPLITS["test"]
    return split


@register_format("attributes_csv", detect=is_attributes_csv_root, order=30)
def plan(src: pathlib.Path, rejects: Rejects) -> Plan:
    """The layout's splits as `prepare` packs them."""
    index = read_attributes_csv(src, rejects)
    labels = {name: index.attributes[:, j] for j, name in enumerate(index.attribute_names)}
    paths = [index.image_path(i) for i in range(len(index.files))]
    fix = {s: f"no row of {index.label_file.name} has `{s}` in its `{SPLIT_COLUMN}` column: put some images in "
              f"{s}, or drop the column for a seeded 80/10/10 split" for s in SPLITS}
    return Plan(by_split(index.split, SPLITS, index.files, paths, labels), [index.label_file], paths,
                list(labels), split_source=index.split_source, empty_fix=fix)
