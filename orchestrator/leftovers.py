"""What `doctor` made on this machine's disk, taken away again when it ends.

Its checks open the MLflow store and the run folder as a sweep would, and a sqlite store or a local
storage folder that is not there yet is made on the way (the database file, the `mlruns/` folder
beside it, `runs/`). `doctor` runs nothing, so it leaves the places it was pointed at as it found
them, whether its checks pass or not: a mistyped `--data` or `--address` no longer leaves an empty
`mlflow.db` and `runs/` in the working folder. What was there before is never touched, nor is a
server or a bucket.
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from orchestrator import state
from orchestrator.mlflow_sqlite import sqlite_path
from orchestrator.tracking import tracking_uri


def first_missing(path: Path) -> Path | None:
    """The outermost file or folder on the way to `path` that does not exist yet; None when `path` exists."""
    path = path.expanduser().absolute()
    if path.exists() or path.is_symlink():
        return None
    top = path
    while not top.parent.exists():
        top = top.parent
    return top


def doctor_paths(tracking: str | None, storage: str) -> list[Path]:
    """The local places a preflight may make: a sqlite store, the artifact folder beside it, the storage."""
    paths = []
    database = sqlite_path(tracking_uri(tracking))
    if database is not None:
        paths += [database, database.absolute().parent / "mlruns"]
    if storage.startswith("file://"):  # a mounted folder, on this disk too
        paths.append(Path(storage[len("file://"):]))
    elif not state.is_uri(storage):
        paths.append(Path(state.storage_root(storage)))
    return paths


@contextmanager
def removed_if_new(paths: Iterable[Path]) -> Iterator[None]:
    """Remove, once the block ends, whichever of `paths` (or the folders above them) it brought into being."""
    new = [top for top in (first_missing(path) for path in paths) if top is not None]
    try:
        yield
    finally:
        for top in new:
            if top.is_dir() and not top.is_symlink():
                shutil.rmtree(top, ignore_errors=True)
            elif top.exists() or top.is_symlink():
                top.unlink(missing_ok=True)
