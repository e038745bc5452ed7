"""What `prepare` packs, split by split (`Plan`), and FORMATS, the registry of the layouts it reads.

A plan holds, per split, the source names, a function fetching each image's bytes and the label
arrays, plus the files that make its fingerprint. Each layout is one module of `formats/` that holds its
reader (the parsing and the refusals; a record it cannot use on its own goes to `rejects`: skipped and
listed, or refused under strict), its plan, its detection and its place in the order of detection, and
registers itself with `register_format`: adding a layout is adding one file.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from trainables.data.formats.rejects import Rejects
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


def fetch_files(paths) -> Callable[[int], bytes]:
    return lambda i: Path(paths[i]).read_bytes()


def by_split(split_of, codes: dict[str, int], names, paths, labels) -> dict[str, SplitPlan]:
    plans = {}
    for split, code in codes.items():
        rows = np.flatnonzero(np.asarray(split_of) == code)
        plans[split] = SplitPlan([names[i] for i in rows.tolist()], fetch_files([paths[i] for i in rows.tolist()]),
                                 {k: v[rows] for k, v in labels.items()})
    return plans


def pair_split(pairs) -> SplitPlan:
    def fetch(side):
        return lambda i: side[i] if isinstance(side[i], bytes) else Path(side[i]).read_bytes()

    return SplitPlan(pairs.left_names, fetch(pairs.left), {"issame": pairs.issame.astype(bool),
                     "fold": pairs.fold.astype(np.int16)}, pairs.right_names, fetch(pairs.right))


@dataclass(frozen=True)
class DatasetFormat:
    plan: Callable[[Path, Rejects], Plan]   # the folder (or file) -> what prepare packs
    detect: Callable[[Path], bool]          # whether a folder (or file) is in this layout
    order: int                              # detection tries lower first (a layout that contains another's files first)


def _load_formats() -> None:
    """Import every module of `formats/`; each layout registers itself."""
    from trainables.data import formats

    for module in pkgutil.iter_modules(formats.__path__):
        importlib.import_module(f"{formats.__name__}.{module.name}")


FORMATS: Registry[DatasetFormat] = Registry("dataset format", loader=_load_formats)


def register_format(name: str, detect: Callable[[Path], bool], order: int):
    """`@register_format("celeba", detect=is_celeba_root, order=10)` on a layout's plan function."""
    def add(plan: Callable[[Path, Rejects], Plan]) -> Callable[[Path, Rejects], Plan]:
        FORMATS.register(name, DatasetFormat(plan, detect, order))
        return plan

    return add


def detection_order() -> list[tuple[str, DatasetFormat]]:
    """The registered layouts in the order detection tries them."""
    return sorted(FORMATS.items(), key=lambda item: (item[1].order, item[0]))
