"""`prepare(format, src, out)`: pack a dataset, read with its own reader, into Parquet shards.

Each format's reader becomes a `Plan` (plans.py): per split, the source names, a function fetching each
image's bytes, and label arrays. A record the reader cannot use on its own (a path leaving the
dataset, a corrupt .rec record, a malformed pairs.txt line; see formats/rejects.py) and every image
that fails a real decode (so truncation and decompression bombs are caught) are skipped and listed
in metadata.json's `skipped`, or stop the prepare at the first under `strict`. A split the format
defines that ends up empty (CelebA's test, FairFace's val ...) is refused: every trial would fail
on it. Training splits are packed in a fixed shuffled order, so that identity-sorted sources (face
folders, .rec) do not fill a row group with one person. The output is written as a new generation
beside the old one and switched in by metadata.json alone (prepared_output.py), so OUT holds the
old dataset or the new one, never a half of either, and no file a prepare did not write is ever
deleted; a re-run whose inputs' fingerprint matches is skipped.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
from PIL import Image

from trainables.data.decode import too_many_pixels
from trainables.data.demo.build_once import MARKER as DEMO_MARKER
from trainables.data.formats.rejects import Rejects
from trainables.data.plans import FORMATS, Plan, SplitPlan, detection_order
from trainables.data.prepared_output import PreparedOutput, write_error
from trainables.data.shards import PAIR_LABELS, SplitWriter, load_metadata
from trainables.errors import UserError

PREPARE_VERSION = 1
_ARROW_TYPES = {np.dtype(np.uint8): pa.uint8(), np.dtype(np.int16): pa.int16(), np.dtype(np.int32): pa.int32(),
              np.dtype(bool): pa.bool_(), np.dtype(np.float32): pa.float32()}


@dataclass
class PreparedInfo:
    out: str
    format: str
    counts: dict[str, int]
    skipped: list[dict]
    fingerprint: str
    already_prepared: bool


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


def detect_format(path) -> str:
    """The format of a dataset folder (or .bin or label .csv file): the first registered layout, in their
    order of detection, whose files are there."""
    if is_prepared(path):
        return "prepared"
    root = Path(path)
    for name, layout in detection_order():
        if layout.detect(root):
            return name
    raise UserError(f"cannot tell the dataset format of {path}; name it: one of {', '.join(FORMATS)}")


def demo_params(src: Path) -> dict | None:
    """The build parameters of a synthetic demo set (its completion marker), None for any other dataset.
    Recorded in metadata.json, so the shards say they are the demo wherever they are copied or prepared to."""
    try:
        found = json.loads((src / DEMO_MARKER).read_text()) if src.is_dir() else None
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def _fingerprint(fmt: str, plan: Plan, settings: dict, demo: dict | None) -> str:
    digest = hashlib.sha256(json.dumps([fmt, PREPARE_VERSION, settings]).encode())
    if demo is not None:  # demo shards prepared before metadata.json recorded `demo` are prepared again
        digest.update(json.dumps({"demo": demo}, sort_keys=True).encode())
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
    decodes every scan (verify alone misses a truncated JPEG) at reduced scale, which is cheap. An
    image whose header claims more pixels than the decompression-bomb limit is refused unread, as
    every decoder of the shards would refuse it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below, in one line
        with Image.open(io.BytesIO(data)) as img:
            problem = too_many_pixels(*img.size)
            if problem:
                raise ValueError(problem)
            img.verify()
        with Image.open(io.BytesIO(data)) as img:
            img.draft("RGB", (64, 64))
            img.load()


def _fetch_checked(fetch: Callable[[int], bytes], i: int) -> tuple[bytes | None, str]:
    try:
        data = fetch(i)
    except UserError as err:
        return None, f"unreadable: {err}"
    except (OSError, ValueError) as err:  # ValueError: a path with a NUL byte
        return None, f"missing or unreadable: {err}"
    try:
        check_image(data)
    except Exception as err:  # PIL raises many types for bad data; any of them means "skip it"
        return None, f"cannot decode: {type(err).__name__}: {str(err)[:200]}"
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


def _schema(plan: SplitPlan) -> pa.Schema:
    fields = [pa.field("image", pa.binary())] + ([pa.field("image_b", pa.binary())] if plan.fetch_b else [])
    fields += [pa.field(n, pa.string()) for n in ("file", *(["file_b"] if plan.fetch_b else []), "split", "source")]
    return pa.schema(fields + [pa.field(c, _ARROW_TYPES[v.dtype]) for c, v in plan.labels.items()])


def _check_settings(row_group_rows, max_file_bytes) -> None:
    for name, value in (("row_group_rows", row_group_rows), ("max_file_bytes", max_file_bytes)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            flag = "--row-group-rows" if name == "row_group_rows" else "--max-file-mib"
            raise UserError(f"{name} (the CLI's {flag}) is {value!r}; it must be a whole number of at least 1 "
                            f"(nothing was changed)")


def _read(read_plan: Callable[[Path, Rejects], Plan], src: Path, rejects: Rejects) -> Plan:
    try:
        return read_plan(src, rejects)
    except OSError as err:  # a label file or folder that cannot be read: permissions, a vanished disk
        where = err.filename or src
        raise UserError(f"cannot read {where}: {err.strerror or err}; make the dataset readable "
                        f"(nothing was changed)") from None


def _refuse_empty(plan: Plan, split: str, src: Path, skipped: list[dict]) -> None:
    """An empty split of the format's own: every trial would fail on it, so refuse it here, once."""
    mine = [s for s in skipped if s["split"] == split]
    why = (f"all {len(mine)} of its images were skipped, e.g. {mine[0]['file']}: {mine[0]['reason']}" if mine else
           plan.empty_fix.get(split, "it has no images"))
    raise UserError(f"split {split!r} of {src} is empty: {why}; fix the dataset so that every split has images "
                    f"(nothing was changed)")


def prepare(format: str, src, out: str, strict: bool = False, progress: Callable[[int, int], None] | None = None,
            row_group_rows: int = 1000, max_file_bytes: int = 64 << 20, threads: int | None = None) -> PreparedInfo:
    """Pack `src` (read as `format`) into shards under `out` (a path or URI); see the module docstring."""
    read_plan = FORMATS.get(format).plan
    _check_settings(row_group_rows, max_file_bytes)
    src = Path(src).expanduser().resolve()
    if not src.exists():
        raise UserError(f"source {src} does not exist; pass the dataset folder as --src")
    output = PreparedOutput(out)
    try:
        output.check(is_prepared(out))
    except OSError as err:  # an object store that refuses us, a folder we may not list
        raise write_error(out, err) from None
    rejects = Rejects(strict)
    plan = _read(read_plan, src, rejects)
    for split, sp in plan.splits.items():
        if not sp.names:
            _refuse_empty(plan, split, src, rejects.rows)
    settings = {"strict": strict, "row_group_rows": row_group_rows, "max_file_bytes": max_file_bytes}
    demo = demo_params(src)
    fingerprint = _fingerprint(format, plan, settings, demo)
    if is_prepared(out):
        meta = load_metadata(out)
        if meta.get("fingerprint") == fingerprint:
            return PreparedInfo(out, format, meta["counts"], meta["skipped"], fingerprint, True)

    total, done = sum(len(s.names) for s in plan.splits.values()), 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    counts, skipped, row_groups = {}, list(rejects.rows), {}
    try:
        output.begin()
        with ThreadPoolExecutor(threads or min(8, (os.cpu_count() or 1) + 2)) as pool:
            for split, sp in plan.splits.items():
                order = np.arange(len(sp.names))
                if split == "train":
                    order = np.random.default_rng(0).permutation(len(order))
                writer = SplitWriter(output.fs, output.root, split, _schema(sp), row_group_rows, max_file_bytes,
                                     prefix=output.prefix)
                counts[split] = _pack(sp, writer, split, format, order, strict, skipped, tick, pool, row_group_rows)
                row_groups[split] = [list(g) for g in writer.close()]
                if not counts[split]:
                    _refuse_empty(plan, split, src, skipped)
        meta = {
            "format": format, "version": PREPARE_VERSION, "label_columns": plan.label_columns,
            "pair_label_columns": list(PAIR_LABELS),
            "pair_splits": [s for s, sp in plan.splits.items() if sp.fetch_b is not None],
            "class_names": plan.class_names, "num_classes": plan.num_classes, "counts": counts,
            "split_source": plan.split_source,
            "splits": {s: list(dict.fromkeys(g[0] for g in groups)) for s, groups in row_groups.items()},
            "row_groups": row_groups, "skipped": skipped, "fingerprint": fingerprint, "source": str(src),
            "settings": settings, "demo": demo, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        }
        output.commit(meta)
    except OSError as err:
        output.abort()
        raise write_error(out, err) from None
    except BaseException:
        output.abort()
        raise
    return PreparedInfo(out, format, counts, skipped, fingerprint, False)
