"""Each real layout read into a `Plan`: what `prepare` packs, split by split.

A plan holds, per split, the source names, a function fetching each image's bytes and the label
arrays, plus the files that make its fingerprint. Each layout's reader (formats/) does the parsing and
the refusals; a record it cannot use on its own goes to `rejects` (skipped and listed, or refused under
strict). FORMATS is the registry of layouts `prepare` and `--data` take.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from trainables.data.formats.rejects import Rejects
from trainables.errors import UserError
from trainables.registry import Registry

SPLIT_NAMES = ("train", "val", "test")  # what a task reads as its own splits: no .bin may take one


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
    empty_fix: dict[str, str] = field(default_factory=dict)  # split -> how to give it images, for the refusal


def _files(paths) -> Callable[[int], bytes]:
    return lambda i: Path(paths[i]).read_bytes()


def _by_split(split_of, codes: dict[str, int], names, paths, labels) -> dict[str, SplitPlan]:
    plans = {}
    for split, code in codes.items():
        rows = np.flatnonzero(np.asarray(split_of) == code)
        plans[split] = SplitPlan([names[i] for i in rows.tolist()], _files([paths[i] for i in rows.tolist()]),
                                 {k: v[rows] for k, v in labels.items()})
    return plans


def _celeba(src: Path, rejects: Rejects) -> Plan:
    from trainables.data.formats.celeba import ATTR_FILE, IDENTITY_FILE, PARTITION_FILE, SPLITS, read_celeba

    index = read_celeba(src, rejects)
    labels = {name: index.attributes[:, j] for j, name in enumerate(index.attribute_names)}
    if index.identity is not None:
        labels["identity"] = index.identity.astype(np.int32)
    paths = [index.image_path(i) for i in range(len(index.files))]
    classes = {"identity": int(index.identity.max(initial=0)) + 1} if index.identity is not None else {}
    return Plan(_by_split(index.split, SPLITS, index.files, paths, labels),
                [src / f for f in (ATTR_FILE, PARTITION_FILE, IDENTITY_FILE) if (src / f).is_file()], paths,
                list(labels), num_classes=classes, split_source={"file": PARTITION_FILE},
                empty_fix={s: f"{PARTITION_FILE} gives no listed image the split {c} ({s}): give some images {c}"
                           for s, c in SPLITS.items()})


def _attributes_csv(src: Path, rejects: Rejects) -> Plan:
    from trainables.data.formats.attributes_csv import SPLIT_COLUMN, SPLITS, read_attributes_csv

    index = read_attributes_csv(src, rejects)
    labels = {name: index.attributes[:, j] for j, name in enumerate(index.attribute_names)}
    paths = [index.image_path(i) for i in range(len(index.files))]
    fix = {s: f"no row of {index.label_file.name} has `{s}` in its `{SPLIT_COLUMN}` column: put some images in "
              f"{s}, or drop the column for a seeded 80/10/10 split" for s in SPLITS}
    return Plan(_by_split(index.split, SPLITS, index.files, paths, labels), [index.label_file], paths,
                list(labels), split_source=index.split_source, empty_fix=fix)


def _fairface(src: Path, rejects: Rejects) -> Plan:
    from trainables.data.formats.fairface import AGE_BINS, GENDERS, RACES, SPLITS, read_fairface

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
    return Plan(_by_split(index.split, SPLITS, index.files, paths, labels), list(index.label_files), paths,
                list(labels), class_names=classes, num_classes={k: len(v) for k, v in classes.items()},
                empty_fix=fix)


def _faces(src: Path, rejects: Rejects) -> Plan:
    from trainables.data.formats.faces import read_face_folders

    index = read_face_folders(src, rejects)
    split = SplitPlan([index.relative(i) for i in range(len(index.files))], _files(index.files),
                      {"identity": index.labels.astype(np.int32)})
    return Plan({"train": split}, [], index.files, ["identity"], {"identity": index.class_names},
                {"identity": len(index.class_names)})


def _pair_split(pairs) -> SplitPlan:
    def fetch(side):
        return lambda i: side[i] if isinstance(side[i], bytes) else Path(side[i]).read_bytes()

    return SplitPlan(pairs.left_names, fetch(pairs.left), {"issame": pairs.issame.astype(bool),
                     "fold": pairs.fold.astype(np.int16)}, pairs.right_names, fetch(pairs.right))


def _bins(paths: list[Path], rejects: Rejects) -> dict[str, SplitPlan]:
    """One pair split per readable .bin; an unreadable one (damaged, or a pickle asking to run code)
    goes to `rejects` as a whole, so one bad verification file does not stop the others."""
    from trainables.data.formats.insightface_bin import read_insightface_bin

    splits = {}
    for path in paths:
        try:
            splits[path.stem] = _pair_split(read_insightface_bin(path))
        except UserError as err:
            rejects.add(str(err), file=path.name, split=path.stem)
    return splits


def _insightface_rec(src: Path, rejects: Rejects) -> Plan:
    from trainables.data.formats.insightface_rec import IDX_FILE, PROPERTY_FILE, read_insightface_rec, read_record_image

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
                                 {"identity": index.labels.astype(np.int32)}), **_bins(bins, rejects)}
    return Plan(splits, [src / IDX_FILE, src / PROPERTY_FILE], [index.rec_path, *bins], ["identity"],
                num_classes={"identity": index.num_classes})


def _lfw_pairs(src: Path, rejects: Rejects) -> Plan:
    from trainables.data.formats.lfw_pairs import find_pairs_file, read_lfw_pairs

    pairs = read_lfw_pairs(src, rejects=rejects)
    return Plan({"lfw": _pair_split(pairs)}, [find_pairs_file(src)], sorted(set(pairs.left) | set(pairs.right)))


def _insightface_bin(src: Path, rejects: Rejects) -> Plan:
    paths = [src] if src.is_file() else sorted(src.glob("*.bin"))
    if not paths:
        raise UserError(f"no .bin files in {src}; pass an InsightFace verification file (lfw.bin) or its folder")
    splits = _bins(paths, rejects)
    if not splits:  # each was rejected: its own message says what is wrong with it
        raise UserError(rejects.rows[0]["reason"])
    return Plan(splits, [], paths)


FORMATS: Registry[Callable[[Path, Rejects], Plan]] = Registry("dataset format")
for _name, _plan in {"celeba": _celeba, "attributes_csv": _attributes_csv, "fairface": _fairface, "faces": _faces,
                     "insightface_rec": _insightface_rec, "lfw_pairs": _lfw_pairs,
                     "insightface_bin": _insightface_bin}.items():
    FORMATS.register(_name, _plan)
