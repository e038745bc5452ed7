"""Writers of InsightFace's files, for tests that need them in the real layout (../shared/DATA_FORMATS.md):
a `.bin` verification set (a pickle of JPEG bytes and issame flags) and a `train.rec`/`train.idx`/`property`
RecordIO training set, written as InsightFace's and MXNet's own tools write them. The product only reads
these files (trainables/data/formats/insightface_*.py)."""

from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np

from trainables.data.formats.insightface_rec import (_MAGIC_BYTES, HEADER, IDX_FILE, MAGIC, PROPERTY_FILE, REC_FILE,
                                                     _align4)


def write_insightface_bin(path: str | os.PathLike, pairs_bytes: list[bytes], issame: list[bool],
                          protocol: int = pickle.HIGHEST_PROTOCOL) -> Path:
    """Write `(pairs_bytes, issame)` as InsightFace does; pairs_bytes holds 2 images per pair."""
    if len(pairs_bytes) != 2 * len(issame):
        raise ValueError("pairs_bytes must hold two images per issame entry")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(([bytes(b) for b in pairs_bytes], [bool(s) for s in issame]), f, protocol=protocol)
    return path


def _write_record(f: BinaryIO, payload: bytes) -> None:
    """dmlc::RecordIOWriter::WriteRecord: cut at 4-aligned magics, pad each record to 4 bytes."""
    if len(payload) >= 1 << 29:
        raise ValueError("a RecordIO record must be smaller than 512 MiB")
    start = 0
    for i in range(0, len(payload) // 4 * 4, 4):
        if payload[i:i + 4] == _MAGIC_BYTES:
            f.write(struct.pack("<II", MAGIC, ((1 if start == 0 else 2) << 29) | (i - start)))
            f.write(payload[start:i])
            start = i + 4
    rest = len(payload) - start
    f.write(struct.pack("<II", MAGIC, ((3 if start else 0) << 29) | rest))
    f.write(payload[start:])
    f.write(b"\0" * (_align4(len(payload)) - len(payload)))


def _pack(label, data: bytes, id1: int = 0) -> bytes:
    """mxnet.recordio.pack: a scalar label goes in the header; a vector follows it as float32."""
    if np.ndim(label) == 0:
        return HEADER.pack(0, float(label), id1, 0) + data
    extra = np.asarray(label, dtype=np.float32)
    return HEADER.pack(extra.size, 0.0, id1, 0) + extra.tobytes() + data


def write_insightface_rec(root: str | os.PathLike, images: list[bytes], labels: list[int], num_classes: int,
                          image_size: tuple[int, int] = (112, 112)) -> Path:
    """Write train.rec/train.idx/property as InsightFace's tools do: header record 0, image records
    1..n, then one identity record per class with its [first, last + 1) image range."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    n = len(images)
    if len(labels) != n:
        raise ValueError("images and labels must have the same length")
    ranges = {}
    for key, label in enumerate(labels, 1):
        first, _ = ranges.get(int(label), (key, key))
        ranges[int(label)] = (first, key + 1)
    records = [(0, _pack([n + 1, n + 1 + len(ranges)], b""))]
    records += [(key, _pack(float(label), bytes(img), key)) for key, (img, label) in enumerate(zip(images, labels), 1)]
    records += [(n + 1 + j, _pack(list(ranges[c]), b"")) for j, c in enumerate(sorted(ranges))]
    with open(root / REC_FILE, "wb") as rec, open(root / IDX_FILE, "w") as idx:
        for key, payload in records:
            idx.write(f"{key}\t{rec.tell()}\n")
            _write_record(rec, payload)
    (root / PROPERTY_FILE).write_text(f"{num_classes},{image_size[0]},{image_size[1]}\n")
    return root
