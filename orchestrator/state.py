"""Where a sweep's Tune state lives, and the small record that ties it to its MLflow runs.

`<storage>/<name>/orchestrator.json` holds the parent run id, whether the sweep finished, and its compute
budget with what its trials spent so far (budget.py). It is
what makes `--resume` re-attach to the same MLflow runs, and what stops a new sweep from silently
overwriting an unfinished one. Storage is a local path or any pyarrow filesystem URI (`s3://…`).
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.fs as pafs
from ray import tune

from trainables import storage_fs
from trainables.errors import UserError

STATE_FILE = "orchestrator.json"
FAILED_START = "failed-start"  # the status of a sweep whose start failed before any trial ran


def is_uri(path: str) -> bool:
    return "://" in path


def storage_root(storage: str) -> str:
    """The absolute storage location: a URI as given, or a resolved local path."""
    return storage.rstrip("/") if is_uri(storage) else str(Path(storage).expanduser().resolve())


def _fs(location: str) -> tuple[pafs.FileSystem, str]:
    if is_uri(location):
        return storage_fs.resolve(location)  # bounded retries; endpoint and credentials from the environment
    return pafs.LocalFileSystem(), location


def can_restore(path: str) -> bool:
    """Whether Tune saved a sweep at `path` (a local path or a URI)."""
    fs_path, fs = storage_fs.ray_storage(path)
    return tune.Tuner.can_restore(fs_path, storage_filesystem=fs)


def read_text(location: str) -> str:
    """A small file's text, or "" when it does not exist."""
    fs, path = _fs(location)
    try:
        return storage_fs.read_all(fs, path).decode()
    except (FileNotFoundError, OSError):
        return ""


def write_text(location: str, text: str) -> None:
    """Replace a small file whole: on a local disk a temporary file is renamed over it, so a crash
    leaves the old text or the new, never a truncated file; an object store's single PUT already is."""
    fs, path = _fs(location)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    data = text.encode()
    if fs.type_name != "local":
        with fs.open_output_stream(path) as out:
            out.write(data)
        return
    staged = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with fs.open_output_stream(staged) as out:
            out.write(data)
        fs.move(staged, path)
    except BaseException:
        if fs.get_file_info(staged).type != pafs.FileType.NotFound:
            fs.delete_file(staged)
        raise


def delete(location: str) -> None:
    """Delete a file; one that is already gone is fine."""
    fs, path = _fs(location)
    try:
        fs.delete_file(path)
    except FileNotFoundError:
        pass


def check_writable(storage: str) -> str:
    """Create the storage folder and write-then-delete a probe file; returns the absolute location."""
    root = storage_root(storage)
    try:
        fs, path = _fs(root)
    except UserError as err:  # the URI's own fault (credentials in it, an unknown scheme): name the flag
        raise UserError(f"--storage {err}") from None
    probe = f"{path}/.write-test-{uuid.uuid4().hex[:8]}"
    try:
        fs.create_dir(path, recursive=True)
        with fs.open_output_stream(probe) as out:
            out.write(b"ok")
        fs.delete_file(probe)
    except (OSError, ValueError) as err:
        reason = getattr(err, "strerror", None) or str(err).splitlines()[0]
        raise UserError(f"storage path {root} is not writable ({reason}): pass --storage with a writable folder or URI") from None
    return root


@dataclass
class SweepRun:
    name: str
    path: str
    parent_run_id: str | None = None
    status: str = "new"          # new | running | interrupted | budget spent | finished | failed-start
    tracking: str = ""           # a digest of the MLflow URI the sweep records to (never the URI: it may hold a secret)
    budget_s: float | None = None  # --budget, in trial-seconds (the last one given)
    spent_s: float = 0.0         # trial-seconds its trials ran, across invocations
    spent_by_trial: dict = field(default_factory=dict)  # trial id -> its share of spent_s
    settings: dict = field(default_factory=dict)  # what it started with, which a resume must keep (sweep_settings.py)
    command: str = ""            # the command that resumes it as it started, credentials redacted
    minutes: float = 0.0         # wall-clock minutes of its earlier invocations, each up to its last save
    began: float | None = None   # when this invocation began (time.time()); its own minutes are added on each save

    def clock(self) -> float:
        """When the sweep would have begun had its invocations run back to back: the start its minutes count from."""
        return (self.began or time.time()) - self.minutes * 60

    def save(self, **changes) -> None:
        for key, value in changes.items():
            setattr(self, key, value)
        record = {"name": self.name, "parent_run_id": self.parent_run_id, "status": self.status,
                  "tracking": self.tracking, "budget_s": self.budget_s, "spent_s": self.spent_s,
                  "spent_by_trial": self.spent_by_trial, "settings": self.settings, "command": self.command,
                  "minutes": (time.time() - self.clock()) / 60}
        write_text(f"{self.path}/{STATE_FILE}", json.dumps(record, indent=1))

    def check_tracking(self, uri: str, shown: str) -> None:
        """A resumed sweep must record where it started: another store would split its runs in two."""
        digest = tracking_digest(uri)
        if self.tracking and self.tracking != digest:
            raise UserError(f"the sweep at {self.path} records to another MLflow store than {shown}: resume it with "
                            "the --tracking-uri it started with (or start a new sweep with --name NEW_NAME)")
        self.tracking = digest


def tracking_digest(uri: str) -> str:
    return hashlib.sha256(uri.encode()).hexdigest()[:16]


def _load(location: str) -> dict:
    try:
        return json.loads(read_text(f"{location}/{STATE_FILE}") or "{}")
    except ValueError:
        return {}


def _exists(location: str) -> bool:
    fs, path = _fs(location)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        return False
    return bool(fs.get_file_info(pafs.FileSelector(path, allow_not_found=True)))


def locate(storage: str, sweep_name: str, run_name: str | None, resume: bool) -> SweepRun:
    """The run folder for this invocation: resumed, new, or refused if it would overwrite one."""
    root = storage_root(storage)
    name = run_name or sweep_name
    path = f"{root}/{name}"
    record = _load(path)
    if resume:
        if not _exists(path) or not can_restore(path) or record.get("status") == FAILED_START:
            raise UserError(f"nothing to resume at {path}: run the sweep without --resume to start it "
                            "(or pass the same --storage and --name as the interrupted run)")
        return SweepRun(name, path, record.get("parent_run_id"), record.get("status", "running"),
                        record.get("tracking", ""), record.get("budget_s"), float(record.get("spent_s") or 0.0),
                        dict(record.get("spent_by_trial") or {}), dict(record.get("settings") or {}),
                        str(record.get("command") or ""), float(record.get("minutes") or 0.0))
    if _exists(path) and (record.get("status") == FAILED_START or not can_restore(path)):
        return SweepRun(name, path)  # a start that failed before any trial: nothing to keep or resume
    if _exists(path):
        if record.get("status") != "finished" or run_name:
            raise UserError(f"a sweep already exists at {path}: continue it with --resume, "
                            "or start a separate one with --name NEW_NAME")
        number = 2
        while _exists(f"{root}/{name}-{number}"):
            number += 1
        name = f"{name}-{number}"
        path = f"{root}/{name}"
    return SweepRun(name, path)
