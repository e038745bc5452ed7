"""Reader of the real CelebA (aligned) label files, exactly as they are distributed.

`read_celeba(root)` returns a `CelebAIndex`: file names, the binary attributes, the split and,
when their files are there, identities and aligned landmarks. The attributes are the ones line 2 of
list_attr_celeba.txt names, any number of them: CelebA's own 40 (`ATTRIBUTE_NAMES`), or another set
shipped in the same layout (a lab's own labels, LFWA converted to it). Values are read as
torchvision's `CelebA` reads them (runs of spaces, -1/1 mapped to 0/1). Every malformed input raises a
one-line `UserError` naming the file, the line and the fix; a row whose file name would leave
img_align_celeba/ (absolute, or with a `..` part) goes to `rejects` instead, for `prepare` to skip
and report, so no file outside the dataset is ever read. The 202,599-row attribute file is
tokenised with numpy on the raw bytes, because `str.split` over its 8 M tokens alone takes seconds.
"""

from __future__ import annotations

import os
import pathlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

from trainables.data.formats.rejects import Rejects, outside_problem, printable
from trainables.data.plans import Plan, by_split, register_format
from trainables.errors import UserError

ATTRIBUTE_NAMES: tuple[str, ...] = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows",
    "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup",
    "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard",
    "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks", "Sideburns",
    "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
    "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)
SPLITS = {"train": 0, "val": 1, "test": 2}
# Columns every prepared shard holds, or that the attribute task reads as something else: an
# attribute of that name would overwrite them.
RESERVED_NAMES = frozenset({"image", "image_b", "file", "file_b", "split", "source", "identity"})

ATTR_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
IDENTITY_FILE = "identity_CelebA.txt"
LANDMARKS_FILE = "list_landmarks_align_celeba.txt"
IMAGE_DIR = "img_align_celeba"
_MAX_DIGITS = 18  # int64 holds every 18-digit number


@dataclass(frozen=True)
class CelebAIndex:
    """The labels of one CelebA root, one row per image in the attribute file's order."""

    root: pathlib.Path
    files: list[str]
    attribute_names: list[str]
    attributes: np.ndarray
    split: np.ndarray
    identity: np.ndarray | None
    landmarks: np.ndarray | None

    def image_path(self, i: int) -> pathlib.Path:
        return self.root / IMAGE_DIR / self.files[i]

    def indices(self, split: str) -> np.ndarray:
        if split not in SPLITS:
            raise UserError(f"unknown CelebA split {split!r}; use one of {', '.join(SPLITS)}")
        return np.flatnonzero(self.split == SPLITS[split])


def is_celeba_root(root) -> bool:
    """Whether `root` looks like a CelebA root; used to detect the format of a --data folder."""
    try:
        path = pathlib.Path(root)
        return (path / ATTR_FILE).is_file() and (path / IMAGE_DIR).is_dir()
    except (TypeError, OSError):
        return False


@dataclass(frozen=True)
class _Table:
    """One parsed label file: the name column, the header (if any) and the integer columns."""

    path: pathlib.Path
    names: list[str]
    header: list[str]
    values: np.ndarray  # (rows, columns) int32, or int64 when a token has 10+ characters
    first_line: int  # 1-based line number of row 0
    line_numbers: np.ndarray | None = None  # when rows were left out: the line of each row kept

    def line(self, row: int) -> int:
        return self.first_line + row if self.line_numbers is None else int(self.line_numbers[row])


def _read_table(path: pathlib.Path, *, header: bool, columns: int | None, what: str | Callable[[int], str],
                fix: str = "fix or re-download the file",
                check_header: Callable[[list[str]], None] | None = None) -> _Table:
    """Parse `name v1 … vK` rows separated by runs of whitespace; CRLF and trailing blanks are fine.

    `columns=None` takes K from the header line (one value per name); `what` may be a function of K.
    """
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    head: list[str] = []
    first_line = 1
    if header:
        parts = data.split(b"\n", 2)
        count_text = parts[0].decode("utf-8", "replace").strip()
        try:
            count = int(count_text)
        except ValueError:
            raise UserError(f"{path} line 1: expected the image count (an integer), found "
                            f"{count_text[:40]!r}; the file must start with the count line, "
                            f"then the header line, as distributed") from None
        head = parts[1].decode("utf-8", "replace").split() if len(parts) > 1 else []
        data = parts[2] if len(parts) > 2 else b""
        first_line = 3
    if check_header is not None:
        check_header(head)
    if columns is None:
        columns = len(head)
    if callable(what):
        what = what(columns)
    data = data.rstrip()
    buf = np.frombuffer(data, dtype=np.uint8)
    control = np.flatnonzero((buf < 32) & (buf != 9) & (buf != 10) & (buf != 13))
    if len(control):  # e.g. the NULs a copy interrupted mid-write leaves: not text a row can hold
        line = first_line + int(np.count_nonzero(buf[: control[0]] == 10))
        raise UserError(f"{path} line {line}: control byte {int(buf[control[0]]):#04x} in a text file; the file "
                        f"is damaged: re-download it")
    # Bytes <= 32 (space, tab, CR, LF) separate tokens; LF alone separates lines.
    edges = np.diff((buf > 32).view(np.int8), prepend=np.int8(0), append=np.int8(0))
    # int32 offsets and values halve the peak memory of the 8 M-token attribute file.
    starts = np.flatnonzero(edges == 1).astype(np.int32)
    ends = np.flatnonzero(edges == -1).astype(np.int32)
    del edges
    newlines = np.flatnonzero(buf == 10)
    n_lines = len(newlines) + 1 if len(buf) else 0
    if header and count != n_lines:
        raise UserError(f"{path} line 1: the count says {count} rows but the file has {n_lines}; "
                        f"the file is truncated or edited, re-download it")
    line_ends = np.append(newlines, len(buf))[:n_lines]
    per_line = np.diff(np.searchsorted(starts, line_ends), prepend=0)
    bad = np.flatnonzero(per_line != columns + 1)
    if len(bad):
        raise UserError(f"{path} line {first_line + bad[0]}: expected {columns + 1} columns "
                        f"(file name, {what}), found {per_line[bad[0]]}; {fix}")
    # Parse every token in place (names included, ignored) so no column slice is ever copied.
    value_digits = (ends - starts).reshape(n_lines, columns + 1)[:, 1:]
    values, ok = _parse_ints(buf, starts, ends, int(value_digits.max(initial=0)))
    values = values.reshape(n_lines, columns + 1)[:, 1:]
    ok = ok.reshape(n_lines, columns + 1)[:, 1:]
    if not ok.all():
        row, col = (int(v[0]) for v in np.nonzero(~ok))
        k = row * (columns + 1) + col + 1
        token = bytes(buf[starts[k]: ends[k]]).decode("utf-8", "replace")
        raise UserError(f"{path} line {first_line + row}: {token[:40]!r} is not an "
                        f"integer; each row must be a file name then {what}")
    name_at = np.arange(n_lines) * (columns + 1)
    return _Table(path, _strings(buf, starts[name_at], ends[name_at]), head, values, first_line)


def _parse_ints(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, max_len: int):
    """Vectorised parse of the integer tokens buf[starts:ends], reading digits from the right.

    Returns (values, ok); tokens longer than `max_len` characters come back not ok.
    """
    lengths = ends - starts
    neg = buf[starts] == ord("-")
    digits = lengths - neg
    ok = (digits >= 1) & (lengths <= max_len) & (digits <= _MAX_DIGITS)
    dtype = np.int32 if max_len <= 9 else np.int64
    values = np.zeros(len(starts), dtype=dtype)
    scale = 1
    for k in range(min(max_len, _MAX_DIGITS)):
        active = k < digits
        d = buf[np.maximum(ends - (1 + k), 0)] - np.uint8(48)  # a non-digit wraps to > 9
        ok &= (d <= 9) | ~active
        values += np.where(active, d, np.uint8(0)).astype(dtype) * dtype(scale)
        scale *= 10
    np.negative(values, out=values, where=neg)
    return values, ok


def _strings(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> list[str]:
    """The tokens buf[starts:ends] as str, through a fixed-width byte matrix (fast for ASCII)."""
    if len(starts) == 0:
        return []
    width = int((ends - starts).max())
    at = starts[:, None] + np.arange(width)
    chars = np.where(at < ends[:, None], buf[np.minimum(at, len(buf) - 1)], np.uint8(0))
    raw = np.ascontiguousarray(chars).view(f"S{width}").ravel()
    try:
        return raw.astype(f"U{width}").tolist()
    except UnicodeDecodeError:
        return [r.decode("utf-8", "replace") for r in raw.tolist()]


def _align(table: _Table, files: list[str], attr_path: pathlib.Path, line_of: Callable[[int], int]) -> np.ndarray:
    """Row of `table` for each of `files`; raises when the table lacks one of them."""
    if table.names == files:
        return np.arange(len(files))
    position = {name: i for i, name in enumerate(table.names)}
    rows = np.fromiter((position.get(f, -1) for f in files), dtype=np.int64, count=len(files))
    missing = np.flatnonzero(rows < 0)
    if len(missing):
        i = int(missing[0])
        raise UserError(f"{table.path} has no row for {files[i]} (listed in {attr_path.name} line "
                        f"{line_of(i)}; {len(missing)} files missing in all); use the "
                        f"{table.path.name} that came with this attribute file")
    return rows


def _require(path: pathlib.Path, kind: str) -> pathlib.Path:
    ok = path.is_dir() if kind == "folder" else path.is_file()
    if not ok:
        raise UserError(f"CelebA {kind} {path.name} not found in {path.parent}; pass the CelebA "
                        f"root folder that contains {path.name}")
    return path


def _values_phrase(n: int) -> str:
    return f"{n} values of 1 or -1, one per name on line 2" if n != 1 else "1 value of 1 or -1, for the name on line 2"


def is_celeba_attribute_set(names) -> bool:
    """Whether `names` are CelebA's own 40 attributes in the distributed order."""
    return tuple(names) == ATTRIBUTE_NAMES


def _check_names(path: pathlib.Path, names: list[str]) -> None:
    """Line 2 names the attributes: at least one, each once, none that a shard column already uses."""
    if not names:
        raise UserError(f"{path} line 2: no attribute names; line 2 must name the attributes, separated by "
                        f"spaces (CelebA's line 2 names its 40)")
    seen: set[str] = set()
    twice = next((n for n in names if n in seen or seen.add(n)), None)
    if twice is not None:
        raise UserError(f"{path} line 2: attribute {twice!r} is named twice; give each attribute one name")
    reserved = next((n for n in names if n in RESERVED_NAMES), None)
    if reserved is not None:
        raise UserError(f"{path} line 2: {reserved!r} cannot name an attribute (the prepared data uses it for "
                        f"its own column); rename it, e.g. to {reserved.capitalize()!r}")


def _inside_only(attr: _Table, images: pathlib.Path, rejects: Rejects) -> tuple[_Table, list[str]]:
    """The rows of `attr` whose file stays inside `images`; each other row goes to `rejects`."""
    files = attr.names
    suspect = [i for i, f in enumerate(files) if f[:1] in ("/", "\\") or ".." in f or ":" in f]
    bad = [i for i in suspect if outside_problem(files[i])]
    for i in bad:
        rejects.add(f"{attr.path} line {attr.line(i)}: file {printable(files[i])!r} {outside_problem(files[i])}, so "
                    f"it points outside {images}; name each image relative to {IMAGE_DIR}/, without '..'",
                    file=files[i])
    if not bad:
        return attr, files
    keep = np.setdiff1d(np.arange(len(files)), bad)
    if not len(keep):
        raise UserError(f"{attr.path}: every row names a file outside {images}; name each image relative to "
                        f"{IMAGE_DIR}/, without '..'")
    kept = _Table(attr.path, [files[i] for i in keep.tolist()], attr.header, attr.values[keep], attr.first_line,
                  attr.first_line + keep)
    return kept, kept.names


def read_celeba(root: str | os.PathLike, rejects: Rejects | None = None) -> CelebAIndex:
    """Read the labels of a CelebA root folder as distributed; images are not opened. A row naming an
    image outside img_align_celeba/ goes to `rejects` (by default: raised)."""
    rejects = rejects if rejects is not None else Rejects()
    root = pathlib.Path(root)
    if not root.is_dir():
        raise UserError(f"CelebA folder {root} does not exist; pass the CelebA root folder "
                        f"(the one holding {ATTR_FILE} and {IMAGE_DIR}/)")
    attr_path = _require(root / ATTR_FILE, "file")
    part_path = _require(root / PARTITION_FILE, "file")
    _require(root / IMAGE_DIR, "folder")

    attr = _read_table(attr_path, header=True, columns=None, what=_values_phrase,
                       fix="give every row one value per attribute named on line 2, or fix line 2",
                       check_header=lambda names: _check_names(attr_path, names))
    bad = np.flatnonzero(((attr.values != 1) & (attr.values != -1)).any(axis=1))
    if len(bad):
        row = int(bad[0])
        col = int(np.flatnonzero((attr.values[row] != 1) & (attr.values[row] != -1))[0])
        raise UserError(f"{attr_path} line {attr.line(row)}: value {attr.values[row, col]} is not 1 or -1 "
                        f"(attribute {attr.header[col]}); attribute values must be 1 (present) or -1 (absent)")
    files = attr.names
    if len(set(files)) != len(files):
        seen: set[str] = set()
        row = next(i for i, f in enumerate(files) if f in seen or seen.add(f))
        raise UserError(f"{attr_path} line {attr.line(row)}: {files[row]} is listed twice; "
                        f"each image must have one row")
    attr, files = _inside_only(attr, root / IMAGE_DIR, rejects)

    part = _read_table(part_path, header=False, columns=1, what="the split 0, 1 or 2")
    rows = _align(part, files, attr_path, attr.line)
    split = part.values[rows, 0]
    bad = np.flatnonzero((split < 0) | (split > 2))
    if len(bad):
        row = int(rows[bad[0]])
        raise UserError(f"{part_path} line {part.line(row)}: split {part.values[row, 0]} is not 0, 1 "
                        f"or 2 (train, val, test); fix or re-download the file")

    identity = None
    if (root / IDENTITY_FILE).is_file():
        ident = _read_table(root / IDENTITY_FILE, header=False, columns=1, what="the identity number")
        rows = _align(ident, files, attr_path, attr.line)
        identity = ident.values[rows, 0].astype(np.int64)
        bad = np.flatnonzero(identity < 0)
        if len(bad):
            raise UserError(f"{ident.path} line {ident.line(int(rows[bad[0]]))}: identity "
                            f"{identity[bad[0]]} is negative; identities are numbers >= 0")

    landmarks = None
    if (root / LANDMARKS_FILE).is_file():
        marks = _read_table(root / LANDMARKS_FILE, header=True, columns=10, what="10 landmark coordinates")
        landmarks = marks.values[_align(marks, files, attr_path, attr.line)].astype(np.int32)

    if files and not (root / IMAGE_DIR / files[0]).exists() and (root / IMAGE_DIR / IMAGE_DIR).is_dir():
        raise UserError(f"{root / IMAGE_DIR} holds another {IMAGE_DIR}/ folder (as some downloads "
                        f"unpack); move its images up one level so {IMAGE_DIR}/{files[0]} exists")

    return CelebAIndex(
        root=root,
        files=files,
        attribute_names=list(attr.header),
        attributes=((attr.values + 1) // 2).astype(np.uint8),
        split=split.astype(np.int8),
        identity=identity,
        landmarks=landmarks,
    )


@register_format("celeba", detect=is_celeba_root, order=10)
def plan(src: pathlib.Path, rejects: Rejects) -> Plan:
    """The layout's splits as `prepare` packs them."""
    index = read_celeba(src, rejects)
    labels = {name: index.attributes[:, j] for j, name in enumerate(index.attribute_names)}
    if index.identity is not None:
        labels["identity"] = index.identity.astype(np.int32)
    paths = [index.image_path(i) for i in range(len(index.files))]
    classes = {"identity": int(index.identity.max(initial=0)) + 1} if index.identity is not None else {}
    return Plan(by_split(index.split, SPLITS, index.files, paths, labels),
                [src / f for f in (ATTR_FILE, PARTITION_FILE, IDENTITY_FILE) if (src / f).is_file()], paths,
                list(labels), num_classes=classes, split_source={"file": PARTITION_FILE},
                empty_fix={s: f"{PARTITION_FILE} gives no listed image the split {c} ({s}): give some images {c}"
                           for s, c in SPLITS.items()})
