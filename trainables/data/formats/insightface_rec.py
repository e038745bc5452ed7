"""Reader and writer of InsightFace's MXNet RecordIO training sets: `train.rec`, `train.idx`, `property`.

Layout (as dmlc-core's RecordIOWriter writes it, mirrored exactly here):
- a record is uint32 magic 0xced7230a, uint32 `(cflag << 29) | length`, then `length` payload bytes
  zero-padded to a multiple of 4. When the payload holds the magic at a 4-aligned position, the
  writer cuts the payload there and drops that magic: the parts get cflag 1 (first), 2 (middle),
  3 (last), and a reader puts the magic back between them. cflag 0 is a whole record.
- a payload is the 24-byte header `struct '<IfQQ'` (flag, label, id, id2), then `flag` float32 labels
  when flag > 0, then the JPEG bytes.
- record 0 is a header whose labels are (first identity record, end of identity records): the images
  are records 1 .. label[0]-1, and each identity record after them holds that identity's range.
- `train.idx` lines are `key<TAB>byte offset of the record`; `property` is `num_classes,112,112`.

Headers are read for all images at once through a memory map (one gather per million records), so
indexing MS1M's 5.8 M records takes seconds, not a Python loop over the file. A record damaged on its
own (an .idx offset outside the .rec or too large for an integer, no magic, a payload shorter than
its header or than the labels its flag announces, a NaN or negative label) goes to `rejects`, for
`prepare` to skip and report; files that do not belong together (a missing key, a label past
property's classes) are a `UserError`.
"""

from __future__ import annotations

import io
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd

from trainables.data.formats.rejects import Rejects
from trainables.data.formats.insightface_bin import bin_splits
from trainables.data.plans import Plan, SPLIT_NAMES, SplitPlan, register_format
from trainables.errors import UserError

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_LENGTH_MASK = (1 << 29) - 1
HEADER = struct.Struct("<IfQQ")  # flag, label, id, id2: 24 bytes, as MXNet's _IR_FORMAT 'IfQQ'
REC_FILE, IDX_FILE, PROPERTY_FILE = "train.rec", "train.idx", "property"
_GATHER = 8 + HEADER.size + 4  # record head + payload header + the first extra label
_MAX_KEY_DIGITS = 18  # int64 holds every 18-digit number
_CHUNK = 1 << 20


@dataclass(frozen=True)
class RecIndex:
    """One row per image record. `offsets`/`lengths` are each record's byte range in train.rec
    (what one read must fetch); `read_record_image(rec_path, offset)` returns its JPEG bytes."""

    root: Path
    rec_path: Path
    keys: np.ndarray  # int64 record keys, 1..n
    offsets: np.ndarray  # int64
    lengths: np.ndarray  # int64
    labels: np.ndarray  # int64 class index
    num_classes: int
    image_size: tuple[int, int]

    def __len__(self) -> int:
        return len(self.keys)


def is_insightface_rec_root(root) -> bool:
    try:
        return all((Path(root) / name).is_file() for name in (REC_FILE, IDX_FILE))
    except (OSError, TypeError):
        return False


def _align4(n):
    return (n + 3) // 4 * 4


def read_record(f: BinaryIO, offset: int, name: str = REC_FILE) -> bytes:
    """The whole payload of the record starting at `offset`, its parts joined as dmlc's reader does."""
    f.seek(offset)
    out = bytearray()
    while True:
        head = f.read(8)
        if len(head) < 8:
            raise UserError(f"{name}: record at byte {offset} is cut short (file truncated); re-copy the .rec file")
        magic, lrec = struct.unpack("<II", head)
        if magic != MAGIC:
            raise UserError(f"{name}: no record starts at byte {offset} (bad magic {magic:#x}); the .idx "
                            f"does not belong to this .rec, or the .rec is damaged: re-copy both")
        cflag, length = lrec >> 29, lrec & _LENGTH_MASK
        data = f.read(_align4(length))
        if len(data) < _align4(length):
            raise UserError(f"{name}: record at byte {offset} is cut short (file truncated); re-copy the .rec file")
        out += data[:length]
        if cflag in (0, 3):
            return bytes(out)
        out += _MAGIC_BYTES


def unpack_payload(payload: bytes, where: str = REC_FILE) -> tuple[tuple[int, float, int, int], np.ndarray, bytes]:
    """(header, extra float32 labels, image bytes) of one payload, as mxnet.recordio.unpack; a payload
    too short for its header, or for the labels its flag announces, is a UserError naming `where`."""
    if len(payload) < HEADER.size:
        raise UserError(f"{where}: payload of {len(payload)} bytes, shorter than its {HEADER.size}-byte header; "
                        f"the .rec is damaged, re-copy it")
    flag, label, id1, id2 = HEADER.unpack_from(payload)
    if HEADER.size + 4 * flag > len(payload):
        raise UserError(f"{where}: the header announces {flag} labels, more than the {len(payload)}-byte payload "
                        f"holds; the .rec is damaged, re-copy it")
    extra = np.frombuffer(payload, np.float32, flag, HEADER.size) if flag > 0 else np.zeros(0, np.float32)
    return (flag, label, id1, id2), extra, payload[HEADER.size + 4 * flag:]


def read_record_image(rec: str | os.PathLike | BinaryIO, offset: int) -> bytes:
    """The JPEG bytes of the image record at `offset` in train.rec (a path or an open binary file)."""
    if hasattr(rec, "read"):
        name = getattr(rec, "name", REC_FILE)
        return unpack_payload(read_record(rec, offset, name), f"{name} record at byte {offset}")[2]
    with open(rec, "rb") as f:
        return unpack_payload(read_record(f, offset, str(rec)), f"{rec} record at byte {offset}")[2]


def _read_property(path: Path) -> tuple[int, tuple[int, int]]:
    text = path.read_text(errors="replace").strip()
    parts = [p.strip() for p in text.split(",")]
    try:
        num_classes, h, w = (int(p) for p in parts)
        if num_classes <= 0:
            raise ValueError
    except ValueError:
        raise UserError(f"{path} line 1: expected `num_classes,height,width` (e.g. 85742,112,112), "
                        f"found {text[:40]!r}; restore the property file of this .rec") from None
    return num_classes, (h, w)


def _read_idx(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(keys, offsets), sorted by key. pandas' C parser keeps MS1M's 5.9 M lines to a second and
    two int64 arrays; when it refuses a line, a slow second pass reads them one by one. An offset too
    large for int64 reads as -1, so that its record is left out as pointing outside the .rec."""
    try:
        table = pd.read_csv(path, sep=r"\s+", header=None, names=["key", "offset"], dtype=np.int64,
                            engine="c", comment=None)
        keys, offsets = table["key"].to_numpy(), table["offset"].to_numpy()
    except pd.errors.EmptyDataError:
        keys, offsets = np.zeros(0, np.int64), np.zeros(0, np.int64)
    except (ValueError, OverflowError, pd.errors.ParserError):
        keys, offsets = _read_idx_lines(path)
    order = np.argsort(keys, kind="stable")
    return keys[order], offsets[order]


def _read_idx_lines(path: Path, lines_of: set[int] | None = None):
    """(keys, offsets) line by line; with `lines_of`, {key: its line number} for those keys instead."""
    keys, offsets, found = [], [], {}
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or not all(p.isdigit() for p in parts) or len(parts[0]) > _MAX_KEY_DIGITS:
                raise UserError(f"{path} line {n}: expected `key<TAB>offset`, found "
                                f"{line[:40].decode('utf-8', 'replace').strip()!r}; re-copy the .idx file")
            key = int(parts[0])
            if lines_of is not None:
                if key in lines_of:
                    found.setdefault(key, n)
                continue
            digits = parts[1]  # int() of a 5,000-digit text raises: the length is checked first
            offset = int(digits) if len(digits) <= 19 and int(digits) < 1 << 63 else -1
            keys.append(key)
            offsets.append(offset)
    if lines_of is not None:
        return found
    return np.array(keys, dtype=np.int64), np.array(offsets, dtype=np.int64)


def _lookup(idx_keys: np.ndarray, idx_offsets: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(offsets of `wanted` keys, mask of those found in the .idx)."""
    pos = np.minimum(np.searchsorted(idx_keys, wanted), max(len(idx_keys) - 1, 0))
    found = (idx_keys[pos] == wanted) if len(idx_keys) else np.zeros(len(wanted), bool)
    return (idx_offsets[pos] if len(idx_keys) else np.zeros(len(wanted), np.int64)), found


def _gather_headers(rec_path: Path, offsets: np.ndarray, size: int) -> np.ndarray:
    """(n, _GATHER) bytes at each offset (each inside the file): record head, payload header and its
    first extra label."""
    mm = np.memmap(rec_path, dtype=np.uint8, mode="r")
    out = np.zeros((len(offsets), _GATHER), dtype=np.uint8)
    for start in range(0, len(offsets), _CHUNK):
        at = offsets[start:start + _CHUNK, None] + np.arange(_GATHER)
        out[start:start + _CHUNK] = np.where(at < size, mm[np.minimum(at, size - 1)], 0)
    return out


def _record_problems(rec_path: Path, offsets: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """(labels, lengths, {record index: why it cannot be used}) from each record's head, all read at once.
    A record damaged on its own (outside the file, no magic, a payload too short for its header or for
    its flag's labels, a label that is not a class index) is a problem to reject; a label past the
    classes that property names means the files do not belong together: a UserError."""
    size = rec_path.stat().st_size
    problems: dict[int, str] = {}
    outside = (offsets < 0) | (offsets > size - 8 - HEADER.size)
    for i in np.flatnonzero(outside).tolist():
        problems[i] = ("has an offset too large for an integer; re-copy the .idx" if offsets[i] < 0 else
                       f"points past the end of {rec_path.name} (byte {offsets[i]}, the file has {size}); the .rec "
                       f"is truncated or the .idx belongs to another .rec: re-copy both")
    if size < 8 + HEADER.size:
        return np.zeros(len(offsets), np.float32), np.zeros(len(offsets), np.int64), problems
    heads = _gather_headers(rec_path, np.where(outside, 0, offsets), size)
    magic, lrec, flags = (heads[:, i:i + 4].copy().view("<u4")[:, 0] for i in (0, 4, 8))
    cflag, length = lrec >> 29, (lrec & _LENGTH_MASK).astype(np.int64)
    checks = [(magic != MAGIC, "starts no record (bad magic); the .idx does not belong to this .rec, or the .rec is "
                               "damaged: re-copy both"),
              ((cflag == 0) & (length < HEADER.size), f"holds a payload shorter than its {HEADER.size}-byte header; "
                                                     f"the .rec is damaged, re-copy it"),
              ((cflag == 0) & (HEADER.size + 4 * flags.astype(np.int64) > length),
               "holds a header announcing more labels than its payload has; the .rec is damaged, re-copy it")]
    for bad, why in checks:
        for i in np.flatnonzero(bad & ~outside).tolist():
            problems.setdefault(i, f"points at {rec_path.name} byte {offsets[i]}, which {why}")
    labels = np.where(flags > 0, heads[:, 32:36].copy().view("<f4")[:, 0], heads[:, 12:16].copy().view("<f4")[:, 0])
    lengths = 8 + _align4(length)
    with open(rec_path, "rb") as f:
        for i in np.flatnonzero(cflag != 0).tolist():  # rare records split around an embedded magic
            if i in problems:
                continue
            try:
                (flag, label, _, _), extra, _ = unpack_payload(read_record(f, int(offsets[i]), str(rec_path)))
            except UserError as err:
                problems[i] = f"points at a record that cannot be read ({err})"
                continue
            labels[i] = extra[0] if flag > 0 else label
            lengths[i] = f.tell() - offsets[i]
    ok = np.ones(len(offsets), dtype=bool)
    ok[list(problems)] = False
    with np.errstate(invalid="ignore"):
        corrupt = ok & (~np.isfinite(labels) | (labels != np.round(labels)) | (labels < 0))
    for i in np.flatnonzero(corrupt).tolist():
        problems[i] = (f"points at {rec_path.name} byte {offsets[i]}, which holds label {labels[i]:g}, not a "
                       f"class index; the .rec is damaged, re-copy it")
    beyond = np.flatnonzero(ok & ~corrupt & (labels >= num_classes))
    if len(beyond):
        raise UserError(f"{rec_path}: a record has label {labels[beyond[0]]:g}, not a class index in "
                        f"0..{num_classes - 1} (property says {num_classes} classes); the property file does "
                        f"not match this .rec")
    return labels, lengths, problems


def read_insightface_rec(root: str | os.PathLike, rejects: Rejects | None = None) -> RecIndex:
    """Index the image records of an InsightFace rec folder; images are not decoded. A record that is
    damaged on its own goes to `rejects` (by default: raised) and is left out of the index."""
    rejects = rejects if rejects is not None else Rejects()
    root = Path(root)
    for name in (REC_FILE, IDX_FILE, PROPERTY_FILE):
        if not (root / name).is_file():
            raise UserError(f"InsightFace file {name} not found in {root}; pass the folder holding "
                            f"train.rec, train.idx and property (e.g. faces_emore/)")
    rec_path, idx_path = root / REC_FILE, root / IDX_FILE
    num_classes, image_size = _read_property(root / PROPERTY_FILE)
    idx_keys, idx_offsets = _read_idx(idx_path)
    (header_offset,), (has_header,) = _lookup(idx_keys, idx_offsets, np.array([0]))
    if not has_header:
        raise UserError(f"{idx_path} has no key 0 (the header record); re-copy the .idx of this .rec")
    if not 0 <= header_offset < rec_path.stat().st_size:
        raise UserError(f"{idx_path}: the header record (key 0) starts outside {rec_path}; re-copy both")
    with open(rec_path, "rb") as f:
        (flag, _, _, _), extra, _ = unpack_payload(read_record(f, int(header_offset), str(rec_path)),
                                                   f"{rec_path} header record (key 0)")
    if flag > 0:
        end = float(extra[0])
        if not (math.isfinite(end) and end == int(end) and 1 <= end <= len(idx_keys)):
            raise UserError(f"{rec_path}: the header record says the images are records 1..{end - 1:g}, but "
                            f"{idx_path.name} has {len(idx_keys)} lines; re-copy the .rec and its .idx")
        keys = np.arange(1, int(end), dtype=np.int64)
        offsets, found = _lookup(idx_keys, idx_offsets, keys)
        if not found.all():
            raise UserError(f"{idx_path} has no key {keys[~found][0]}, but the header record says the images are "
                            f"records 1..{int(end) - 1}; re-copy the .idx of this .rec")
    else:  # no InsightFace header: every record is an image, as InsightFace's own loader assumes
        keys, offsets = idx_keys, idx_offsets
    labels, lengths, problems = _record_problems(rec_path, offsets, num_classes)
    if problems:
        lines = _read_idx_lines(idx_path, {int(keys[i]) for i in problems})
        for i in sorted(problems):
            key = int(keys[i])
            rejects.add(f"{idx_path} line {lines.get(key, '?')}: key {key} {problems[i]}",
                        file=f"{REC_FILE}#{key}", split="train")
        keep = np.setdiff1d(np.arange(len(keys)), list(problems))
        keys, offsets, labels, lengths = keys[keep], offsets[keep], labels[keep], lengths[keep]
    return RecIndex(root=root, rec_path=rec_path, keys=keys, offsets=offsets, lengths=lengths.astype(np.int64),
                    labels=labels.astype(np.int64), num_classes=num_classes, image_size=image_size)


@register_format("insightface_rec", detect=is_insightface_rec_root, order=40)
def plan(src: Path, rejects: Rejects) -> Plan:
    """The layout's splits as `prepare` packs them."""
    bins = sorted(src.glob("*.bin"))  # faces_emore/ and its kin ship lfw.bin, cfp_fp.bin ... beside train.rec
    taken = next((p for p in bins if p.stem in SPLIT_NAMES), None)
    if taken is not None:
        raise UserError(f"{taken}: a verification file named {taken.name} would replace the {taken.stem} split of "
                        f"train.rec; rename it (e.g. to lfw.bin) or move it out of {src} (nothing was changed)")
    index = read_insightface_rec(src, rejects)

    def fetch(i: int) -> bytes:  # one read of the record's byte range; a file per call is thread-safe
        with open(index.rec_path, "rb") as f:
            f.seek(int(index.offsets[i]))
            return read_record_image(io.BytesIO(f.read(int(index.lengths[i]))), 0)

    splits = {"train": SplitPlan([f"train.rec#{k}" for k in index.keys.tolist()], fetch,
                                 {"identity": index.labels.astype(np.int32)}), **bin_splits(bins, rejects)}
    return Plan(splits, [src / IDX_FILE, src / PROPERTY_FILE], [index.rec_path, *bins], ["identity"],
                num_classes={"identity": index.num_classes})
