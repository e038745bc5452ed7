"""The on-disk spool of MLflow writes a sweep could not make yet: `<storage>/<sweep>/mlflow-pending.jsonl`.

An append-only file of operations, one JSON object a line, keyed by trial id (not by MLflow run id:
creating a trial's run may be what failed), in the sweep's storage (a local folder or a pyarrow URI), or
in memory for a sweep without storage. Files that lived in a temporary folder (trials.csv, the
leaderboard) are copied beside it first, into `mlflow-pending-files/`. A line half-written by a driver
killed mid-append never counts. What goes in, and when it is replayed into MLflow, is the outbox's
business (outbox.py); this module only keeps the lines and the files.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from pathlib import Path

import pyarrow.fs as pafs

from orchestrator import state

SPOOL_FILE = "mlflow-pending.jsonl"
SPOOL_FILES = "mlflow-pending-files"


class Spool:
    """The pending operations of one sweep: one JSON object a line in `<folder>/mlflow-pending.jsonl`, a
    local folder or a pyarrow URI. With `folder=None` (a sweep without storage) they are kept in memory."""

    def __init__(self, folder: str | None):
        self.folder = folder
        self.path = f"{folder}/{SPOOL_FILE}" if folder else None
        self._memory: list[dict] = []

    def __getstate__(self):
        return {"folder": self.folder, "path": self.path, "_memory": []}

    def ops(self) -> list[dict]:
        """The kept operations in order. A line that does not parse (the half-written last line of a
        driver killed mid-append) is skipped: that operation never counted as kept."""
        if self.path is None:
            return list(self._memory)
        ops = []
        for line in state.read_text(self.path).splitlines():
            try:
                op = json.loads(line)
            except ValueError:
                continue
            if isinstance(op, dict) and "op" in op:
                ops.append(op)
        return ops

    def append(self, op: dict) -> None:
        line = json.dumps(op, default=str).encode() + b"\n"
        if self.path is None:
            self._memory.append(op)
            return
        fs, path = state._fs(self.path)
        if fs.type_name != "local":  # an object store cannot append: rewrite the (small) file whole
            state.write_text(self.path, state.read_text(self.path) + line.decode())
            return
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab+") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell():
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":  # a partial last line: never glue a good one onto it
                    line = b"\n" + line
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def rewrite(self, ops: list[dict]) -> None:
        """Keep only `ops` (what is still pending after a replay); an empty spool is removed, with its files."""
        if self.path is None:
            self._memory = list(ops)
            return
        if ops:
            state.write_text(self.path, "".join(json.dumps(op, default=str) + "\n" for op in ops))
            return
        fs, path = state._fs(self.path)
        for remove, target in ((fs.delete_file, path), (fs.delete_dir, f"{path.rsplit('/', 1)[0]}/{SPOOL_FILES}")):
            try:
                remove(target)
            except (FileNotFoundError, OSError):
                pass

    def stash(self, folder: str, names: list[str]) -> str:
        """Copy `names` (files or folders) from a local `folder` that is about to vanish into the storage
        (a folder of its own without one); returns where they are."""
        base = self.folder or tempfile.mkdtemp(prefix="mlflow-pending-")
        target = f"{base}/{SPOOL_FILES}/{uuid.uuid4().hex[:12]}"
        fs, path = state._fs(target)
        fs.create_dir(path, recursive=True)
        for name in names:
            source = Path(folder) / name
            if source.exists():
                pafs.copy_files(str(source), f"{path}/{name}", source_filesystem=pafs.LocalFileSystem(),
                                destination_filesystem=fs)
        return target

    @staticmethod
    def unstash(stashed: str, into: str) -> None:
        fs, path = state._fs(stashed)
        pafs.copy_files(path, into, source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())


def __getattr__(name: str):
    """`orchestrator.spool.Outbox`, where it lived before outbox.py: a sweep saved then pickled its tracking
    callback's outbox under that name in Tune's state, and `--resume` must still restore it."""
    if name == "Outbox":
        from orchestrator.outbox import Outbox

        return Outbox
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
