"""FairFace labels as numbers, and back: the multi-head targets and seed 000's 18 one-hot columns.

Class indices everywhere follow DATA_FORMATS.md's order (`AGE_BINS`, `GENDERS`, `RACES`). The one
exception is seed 000's 18-column encoding, which keeps LabelEncoder's sorted order per group (age
bins sorted as strings, so '3-9' comes after '20-29'), then gender, then race, as it printed:
`ONEHOT18_COLUMNS`. Models trained on seed 000's label files therefore stay readable.

Ages: where the labels give only a bin (the official release), it stands for its midpoint,
(low + high) / 2 of its printed bounds (0-2 -> 1, 20-29 -> 24.5), with `more than 70` taken as 75;
seed 001's labels give the years themselves. Years map to the bin whose interval [low, next low)
holds them (`years_to_bin`, the reader's rule), so 2.7 years is `0-2` and anything from 70 up is
`more than 70`.
"""

from __future__ import annotations

import numpy as np

from trainables.data.formats.fairface import AGE_BINS, GENDERS, RACES, years_to_bin  # noqa: F401 (re-exported)

TASKS: tuple[str, ...] = ("race", "gender", "age")
CLASSES: dict[str, tuple[str, ...]] = {"race": RACES, "gender": GENDERS, "age": AGE_BINS}
AGE_MIDPOINTS = np.array([1.0, 6.0, 14.5, 24.5, 34.5, 44.5, 54.5, 64.5, 75.0], dtype=np.float32)

# Seed 000: LabelEncoder per column (age, gender, race), classes sorted, concatenated.
_ONEHOT_GROUPS: tuple[str, ...] = ("age", "gender", "race")
ONEHOT18_COLUMNS: tuple[str, ...] = tuple(name for task in _ONEHOT_GROUPS for name in sorted(CLASSES[task]))
# For each task: the 18-column position of each class, indexed by its canonical index.
ONEHOT18_POSITION: dict[str, np.ndarray] = {
    task: np.array([ONEHOT18_COLUMNS.index(name) for name in CLASSES[task]]) for task in TASKS
}
# Multi-head target columns, in the order of `encode_multihead`.
TARGET_COLUMNS: tuple[str, ...] = ("race", "gender", "age", "age_years")


def class_indices(values, task: str) -> np.ndarray:
    """Canonical indices of class strings (a KeyError names any unknown string)."""
    position = {name: k for k, name in enumerate(CLASSES[task])}
    return np.array([position[v] for v in values], dtype=np.int64)


def encode_multihead(index) -> np.ndarray:
    """(N, 4) float32: race index, gender index, age-bin index, age in years (the true years when
    `index.age_years` holds them, else the bin's midpoint).

    `index` is a FairFaceIndex, or anything with `race`, `gender` and `age` lists of class strings.
    """
    race, gender, age = (class_indices(getattr(index, task), task) for task in TASKS)
    years = getattr(index, "age_years", None)
    return np.column_stack([race, gender, age, AGE_MIDPOINTS[age] if years is None else years]).astype(np.float32)


def onehot18_from_indices(race, gender, age) -> np.ndarray:
    """(N, 18) float32 in ONEHOT18_COLUMNS order from canonical class indices."""
    out = np.zeros((len(race), len(ONEHOT18_COLUMNS)), dtype=np.float32)
    rows = np.arange(len(race))
    for task, idx in (("race", race), ("gender", gender), ("age", age)):
        out[rows, ONEHOT18_POSITION[task][np.asarray(idx, dtype=np.int64)]] = 1.0
    return out


def encode_onehot18(index) -> np.ndarray:
    """Seed 000's 18 one-hot columns (ONEHOT18_COLUMNS order) for every row of `index`."""
    race, gender, age = (class_indices(getattr(index, task), task) for task in TASKS)
    return onehot18_from_indices(race, gender, age)


def decode_onehot18(scores: np.ndarray) -> dict[str, np.ndarray]:
    """Canonical class index per task, by argmax within each group's columns of (N, 18) scores."""
    scores = np.asarray(scores)
    return {task: np.argmax(scores[:, ONEHOT18_POSITION[task]], axis=1) for task in TASKS}


def decode_multihead(targets: np.ndarray) -> dict[str, np.ndarray]:
    """Canonical class index per task from `encode_multihead` rows."""
    return {task: np.asarray(targets)[:, k].astype(np.int64) for k, task in enumerate(TASKS)}


def names(indices, task: str) -> np.ndarray:
    """Class strings of canonical indices."""
    return np.asarray(CLASSES[task], dtype=object)[np.asarray(indices, dtype=np.int64)]
