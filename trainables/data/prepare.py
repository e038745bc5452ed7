"""`prepare(format, src, out)`: pack a dataset, read with its own reader, into Parquet shards.

Each format's reader becomes a `Plan`: per split, the source names, a function fetching each
image's bytes, and label arrays. Packing validates every image (a real decode, so truncation is
caught) and skips what fails, or stops at it under `strict`. Training splits are packed in a fixed
shuffled order, so that identity-sorted sources (face folders, .rec) do not fill a row group with
one person. The output is written to a temporary sibling and renamed into place (on object stores,
where folders cannot be renamed, `metadata.json` is written last instead), so only a complete
output has a metadata.json; a re-run whose inputs' fingerprint matches is skipped.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
import posixpath
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
from PIL import Image

from trainables.data.shards import METADATA_FILE, PAIR_LABELS, SplitWriter, load_metadata, resolve
from trainables.errors import UserError
from trainables.registry import Registry

PREPARE_VERSION = 1
IN_PROGRESS = ".prepare-in-progress"
_ARROW_TYPES = {np.dtype(np.uint8): pa.uint8(), np.dtype(np.int16): pa.int16(), np.dtype(np.int32): pa.int32(),
              np.dtype(bool): pa.bool_(), np.dtype(np.float32): pa.float32()}


@dataclass
class SplitPlan:
    names: list[str]
    fetch: Callable[[int], bytes]
    labels: dict[str, np.ndarray]  # column -> (n,) values, dtype as stored
    names_b: list[str] | None = None  # pairs: the right image
    fetch_b: Callable[[int], bytes] | None = None


@dataclass
class Plan:
    splits: dict[str, SplitPlan]
    label_files: list[Path]  # hashed whole into the fingerprint
    image_files: list[Path]  # only their names, sizes and mtimes are
    label_columns: list[str] = field(default_factory=list)
    class_names: dict[str, list[str]] = field(default_factory=dict)
    num_classes: dict[str, int] = field(default_factory=dict)
    split_source: dict = field(default_factory=dict)  # how the splits were given or made, for metadata.json


@dataclass
class PreparedInfo:
    out: str
    format: str
    counts: dict[str, int]
    skipped: list[dict]
    fingerprint: str
    already_prepared: bool


def _files(paths) -> Callable[[int], bytes]:
    return lambda i: Path(paths[i]).read_bytes()


def _by_split(split_of, codes: dict[str, int], names, paths, labels) -> dict[str, SplitPlan]:
    plans = {}
    for split, code in codes.items():
        rows = np.flatnonzero(np.asarray(split_of) == code)
        plans[split] = SplitPlan([names[i] for i in rows.tolist()], _files([paths[i] for i in rows.tolist()]),
                                 {k: v[rows] for k, v in labels.items()})
    return plans


def _celeba(src: Path) -> Plan:
    from trainables.data.formats.celeba import ATTR_FILE, IDENTITY_FILE, PARTITION_FILE, SPLITS, read_celeba

    index = read_celeba(src)
    labels = {name: index.attributes[:, j] for j, name in enumerate(index.attribute_names)}
    if index.identity is not None:
        labels["identity"] = index.identity.astype(np.int32)
    paths = [index.image_path(i) for i in range(len(index.files))]
    classes = {"identity": int(index.identity.max(initial=0)) + 1} if index.identity is not None else {}
    return Plan(_by_split(index.split, SPLITS, index.files, paths, labels),
                [src / f for f in (ATTR_FILE, PARTITION_FILE, IDENTITY_FILE) if (src / f).is_file()], paths,
                list(labels), num_classes=classes, split_source={"file": PARTITION_FILE})


def _attributes_csv(src: Path) -> Plan:
    from trainables.data.formats.attributes_csv import SPLITS, read_attributes_csv

    index = read_attributes_csv(src)
    labels = {name: index.attributes[:, j] for j, name in enumerate(index.attribute_names)}
    paths = [index.image_path(i) for i in range(len(index.files))]
    return Plan(_by_split(index.split, SPLITS, index.files, paths, labels), [index.label_file], paths,
                list(labels), split_source=index.split_source)


def _fairface(src: Path) -> Plan:
    from trainables.data.formats.fairface import AGE_BINS, GENDERS, RACES, SPLITS, read_fairface

    index = read_fairface(src)  # it has checked every value against these classes
    classes = {"age": list(AGE_BINS), "gender": list(GENDERS), "race": list(RACES)}
    labels = {column: np.array([names.index(v) for v in getattr(index, column)], dtype=np.int16)
              for column, names in classes.items()}
    labels["service_test"] = np.asarray(index.service_test, dtype=bool)
    if index.age_years is not None:  # seed 001's labels: keep the years; `age` stays the bin they fall in
        labels["age_years"] = np.asarray(index.age_years, dtype=np.float32)
    paths = [index.image_path(i) for i in range(len(index.files))]
    return Plan(_by_split(index.split, SPLITS, index.files, paths, labels), list(index.label_files), paths,
                list(labels), class_names=classes, num_classes={k: len(v) for k, v in classes.items()})


def _faces(src: Path) -> Plan:
    from trainables.data.formats.faces import read_face_folders

    index = read_face_folders(src)
    split = SplitPlan([index.relative(i) for i in range(len(index.files))], _files(index.files),
                      {"identity": index.labels.astype(np.int32)})
    return Plan({"train": split}, [], index.files, ["identity"], {"identity": index.class_names},
                {"identity": len(index.class_names)})


def _pair_split(pairs) -> SplitPlan:
    def fetch(side):
        return lambda i: side[i] if isinstance(side[i], bytes) else Path(side[i]).read_bytes()

    return SplitPlan(pairs.left_names, fetch(pairs.left), {"issame": pairs.issame.astype(bool),
                     "fold": pairs.fold.astype(np.int16)}, pairs.right_names, fetch(pairs.right))


def _bins(paths: list[Path]) -> dict[str, SplitPlan]:
    from trainables.data.formats.insightface_bin import read_insightface_bin

    return {p.stem: _pair_split(read_insightface_bin(p)) for p in paths}


def _insightface_rec(src: Path) -> Plan:
    from trainables.data.formats.insightface_rec import IDX_FILE, PROPERTY_FILE, read_insightface_rec, read_record_image

    index = read_insightface_rec(src)

    def fetch(i: int) -> bytes:  # one read of the record's byte range; a file per call is thread-safe
        with open(index.rec_path, "rb") as f:
            f.seek(int(index.offsets[i]))
            return read_record_image(io.BytesIO(f.read(int(index.lengths[i]))), 0)

    bins = sorted(src.glob("*.bin"))  # faces_emore/ and its kin ship lfw.bin, cfp_fp.bin ... beside train.rec
    splits = {"train": SplitPlan([f"train.rec#{k}" for k in index.keys.tolist()], fetch,
                                 {"identity": index.labels.astype(np.int32)}), **_bins(bins)}
    return Plan(splits, [src / IDX_FILE, src / PROPERTY_FILE], [index.rec_path, *bins], ["identity"],
                num_classes={"identity": index.num_classes})


def _lfw_pairs(src: Path) -> Plan:
    from trainables.data.formats.lfw_pairs import find_pairs_file, read_lfw_pairs

    pairs = read_lfw_pairs(src)
    return Plan({"lfw": _pair_split(pairs)}, [find_pairs_file(src)], sorted(set(pairs.left) | set(pairs.right)))


def _insightface_bin(src: Path) -> Plan:
    paths = [src] if src.is_file() else sorted(src.glob("*.bin"))
    if not paths:
        raise UserError(f"no .bin files in {src}; pass an InsightFace verification file (lfw.bin) or its folder")
    return Plan(_bins(paths), [], paths)


FORMATS: Registry[Callable[[Path], Plan]] = Registry("dataset format")
for _name, _plan in {"celeba": _celeba, "attributes_csv": _attributes_csv, "fairface": _fairface, "faces": _faces,
                     "insightface_rec": _insightface_rec, "lfw_pairs": _lfw_pairs,
                     "insightface_bin": _insightface_bin}.items():
    FORMATS.register(_name, _plan)


class StderrProgress:
    """A single stderr line, rewritten at most every 0.2 s."""

    def __init__(self, stream=None):
        self.stream, self.last = stream or sys.stderr, 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self.last < 0.2:
            return
        self.last = now
        pct = 100.0 * done / total if total else 100.0
        self.stream.write(f"\rprepare: {done}/{total} images ({pct:.0f}%)")
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()


def is_prepared(path) -> bool:
    try:
        meta = load_metadata(str(path))
    except (UserError, OSError, ValueError):
        return False
    return meta.get("version") == PREPARE_VERSION and "splits" in meta


def _is_fairface_root(root: Path) -> bool:
    from trainables.data.formats.fairface import is_fairface_root

    return is_fairface_root(root)


def detect_format(path) -> str:
    """The format of a dataset folder (or .bin or label .csv file): the first whose files are there."""
    from trainables.data.formats.attributes_csv import is_attributes_csv_root
    from trainables.data.formats.celeba import is_celeba_root
    from trainables.data.formats.faces import is_face_folder_root
    from trainables.data.formats.insightface_rec import is_insightface_rec_root
    from trainables.data.formats.lfw_pairs import is_lfw_pairs_root

    if is_prepared(path):
        return "prepared"
    root = Path(path)
    checks = [
        ("celeba", is_celeba_root),
        ("fairface", _is_fairface_root),
        ("attributes_csv", is_attributes_csv_root),  # after fairface: its folders hold label CSVs too
        ("insightface_rec", is_insightface_rec_root),
        ("lfw_pairs", is_lfw_pairs_root),
        ("insightface_bin", lambda r: r.suffix == ".bin" and r.is_file() or r.is_dir() and any(r.glob("*.bin"))),
        ("faces", is_face_folder_root),
    ]
    for name, check in checks:
        if check(root):
            return name
    raise UserError(f"cannot tell the dataset format of {path}; name it: one of {', '.join(FORMATS)}")


def _fingerprint(fmt: str, plan: Plan, settings: dict) -> str:
    digest = hashlib.sha256(json.dumps([fmt, PREPARE_VERSION, settings]).encode())
    for path in plan.label_files:
        digest.update(f"{path.name}\n".encode())
        digest.update(path.read_bytes())
    for path in plan.image_files:
        try:
            st = os.stat(path)
            digest.update(f"{path}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}\tmissing\n".encode())
    return digest.hexdigest()


def check_image(data: bytes) -> None:
    """Raise if `data` is not a decodable image: verify() reads the structure, a draft-mode load
    decodes every scan (verify alone misses a truncated JPEG) at reduced scale, which is cheap."""
    with Image.open(io.BytesIO(data)) as img:
        img.verify()
    with Image.open(io.BytesIO(data)) as img:
        img.draft("RGB", (64, 64))
        img.load()


def _fetch_checked(fetch: Callable[[int], bytes], i: int) -> tuple[bytes | None, str]:
    try:
        data = fetch(i)
    except (OSError, UserError) as err:
        return None, f"missing or unreadable: {err}"
    try:
        check_image(data)
    except Exception as err:  # PIL raises many types for bad data; any of them means "skip it"
        return None, f"cannot decode: {type(err).__name__}: {err}"
    return data, ""


def _pack(plan: SplitPlan, writer: SplitWriter, split: str, fmt: str, order: np.ndarray, strict: bool,
          skipped: list, tick: Callable[[int], None], pool: ThreadPoolExecutor, chunk: int) -> int:
    """Fetch and check `chunk` images at a time on the pool; append the good rows in `order`."""
    sides = [(plan.fetch, plan.names)] + ([(plan.fetch_b, plan.names_b)] if plan.fetch_b else [])
    packed = 0
    for start in range(0, len(order), chunk):
        rows = order[start:start + chunk]
        results = [list(pool.map(lambda i, f=f: _fetch_checked(f, i), rows.tolist())) for f, _ in sides]
        good = np.ones(len(rows), dtype=bool)
        for k, i in enumerate(rows.tolist()):
            for (_, names), result in zip(sides, results):
                if result[k][0] is None and good[k]:
                    if strict:
                        raise UserError(f"image {names[i]} in {split}: {result[k][1]}; fix or remove it, "
                                        f"or prepare without --strict to skip bad images")
                    skipped.append({"file": names[i], "split": split, "reason": result[k][1]})
                    good[k] = False
        keep = rows[good]
        columns = {"image": [r[0] for r, ok in zip(results[0], good) if ok],
                   "file": [plan.names[i] for i in keep.tolist()],
                   "split": [split] * len(keep), "source": [fmt] * len(keep),
                   **{c: v[keep] for c, v in plan.labels.items()}}
        if plan.fetch_b:
            columns["image_b"] = [r[0] for r, ok in zip(results[1], good) if ok]
            columns["file_b"] = [plan.names_b[i] for i in keep.tolist()]
        writer.add_batch(columns)
        packed += len(keep)
        tick(len(rows))
    return packed


def _target(out: str) -> tuple[pafs.FileSystem, str, str, bool]:
    """(fs, final path, work path, in place?): a temporary sibling renamed into place at the end,
    except on object stores, which cannot rename a folder. Only an older prepare or an empty
    folder is ever replaced: anything else at OUT is refused before a byte is written."""
    fs, final = resolve(out)
    found = fs.get_file_info(final).type
    if found == pafs.FileType.Directory:
        entries = {posixpath.basename(e.path) for e in fs.get_file_info(pafs.FileSelector(final))}
        ours = not entries or IN_PROGRESS in entries or is_prepared(out)
    if found == pafs.FileType.File or (found == pafs.FileType.Directory and not ours):
        raise UserError(f"{out} exists and is not a prepared dataset; pass a new or empty folder as --out "
                        f"(nothing was changed)")
    if fs.type_name not in ("local", "subtree"):
        if found != pafs.FileType.NotFound:
            fs.delete_dir_contents(final)
        fs.create_dir(final)
        fs.open_output_stream(posixpath.join(final, IN_PROGRESS)).close()  # marks a half-written OUT as ours
        return fs, final, final, True
    return fs, final, f"{final.rstrip('/')}.tmp-{uuid.uuid4().hex[:8]}", False


def _schema(plan: SplitPlan) -> pa.Schema:
    fields = [pa.field("image", pa.binary())] + ([pa.field("image_b", pa.binary())] if plan.fetch_b else [])
    fields += [pa.field(n, pa.string()) for n in ("file", *(["file_b"] if plan.fetch_b else []), "split", "source")]
    return pa.schema(fields + [pa.field(c, _ARROW_TYPES[v.dtype]) for c, v in plan.labels.items()])


def prepare(format: str, src, out: str, strict: bool = False, progress: Callable[[int, int], None] | None = None,
            row_group_rows: int = 1000, max_file_bytes: int = 64 << 20, threads: int | None = None) -> PreparedInfo:
    """Pack `src` (read as `format`) into shards under `out` (a path or URI); see the module docstring."""
    read_plan = FORMATS.get(format)
    src = Path(src).expanduser().resolve()
    if not src.exists():
        raise UserError(f"source {src} does not exist; pass the dataset folder as --src")
    plan = read_plan(src)
    settings = {"strict": strict, "row_group_rows": row_group_rows, "max_file_bytes": max_file_bytes}
    fingerprint = _fingerprint(format, plan, settings)
    if is_prepared(out):
        meta = load_metadata(out)
        if meta.get("fingerprint") == fingerprint:
            return PreparedInfo(out, format, meta["counts"], meta["skipped"], fingerprint, True)

    fs, final, work, in_place = _target(out)
    total, done = sum(len(s.names) for s in plan.splits.values()), 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    counts, skipped, row_groups = {}, [], {}
    try:
        with ThreadPoolExecutor(threads or min(8, (os.cpu_count() or 1) + 2)) as pool:
            for split, sp in plan.splits.items():
                order = np.arange(len(sp.names))
                if split == "train":
                    order = np.random.default_rng(0).permutation(len(order))
                writer = SplitWriter(fs, work, split, _schema(sp), row_group_rows, max_file_bytes)
                counts[split] = _pack(sp, writer, split, format, order, strict, skipped, tick, pool, row_group_rows)
                row_groups[split] = [list(g) for g in writer.close()]
        meta = {
            "format": format, "version": PREPARE_VERSION, "label_columns": plan.label_columns,
            "pair_label_columns": list(PAIR_LABELS),
            "pair_splits": [s for s, sp in plan.splits.items() if sp.fetch_b is not None],
            "class_names": plan.class_names, "num_classes": plan.num_classes, "counts": counts,
            "split_source": plan.split_source,
            "splits": {s: list(dict.fromkeys(g[0] for g in groups)) for s, groups in row_groups.items()},
            "row_groups": row_groups, "skipped": skipped, "fingerprint": fingerprint, "source": str(src),
            "settings": settings, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        }
        with fs.open_output_stream(posixpath.join(work, METADATA_FILE)) as f:
            f.write(json.dumps(meta, indent=1).encode())
        if in_place:
            fs.delete_file(posixpath.join(work, IN_PROGRESS))
        else:
            if fs.get_file_info(final).type != pafs.FileType.NotFound:
                fs.delete_dir(final)  # an older, different prepare of this output
            fs.move(work, final)
    except BaseException:
        if not in_place and fs.get_file_info(work).type != pafs.FileType.NotFound:
            fs.delete_dir(work)
        raise
    return PreparedInfo(out, format, counts, skipped, fingerprint, False)
