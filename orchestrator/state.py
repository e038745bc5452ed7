"""Where a sweep's Tune state lives, and the small record that ties it to its MLflow runs.

`<storage>/<name>/orchestrator.json` holds the parent run id and whether the sweep finished. It is
what makes `--resume` re-attach to the same MLflow runs, and what stops a new sweep from silently
overwriting an unfinished one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ray import tune

from trainables.errors import UserError

STATE_FILE = "orchestrator.json"


@dataclass
class SweepRun:
    name: str
    path: str
    parent_run_id: str | None = None
    status: str = "new"

    def save(self, **changes) -> None:
        for key, value in changes.items():
            setattr(self, key, value)
        folder = Path(self.path)
        folder.mkdir(parents=True, exist_ok=True)
        record = {"name": self.name, "parent_run_id": self.parent_run_id, "status": self.status}
        (folder / STATE_FILE).write_text(json.dumps(record, indent=1))


def _load(path: Path) -> dict:
    try:
        return json.loads((path / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _storage_root(storage: str) -> Path:
    root = Path(storage).expanduser().resolve()
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise UserError(f"storage path {root} is not writable ({err.strerror}): pass --storage with a writable folder") from None
    return root


def locate(opts, sweep_name: str) -> SweepRun:
    """The run folder for this invocation: resumed, new, or refused if it would overwrite one."""
    root = _storage_root(opts.storage)
    name = opts.run_name or sweep_name
    path = root / name
    record = _load(path)
    if opts.resume:
        if not path.exists() or not tune.Tuner.can_restore(str(path)):
            raise UserError(f"nothing to resume at {path}: run the sweep without --resume to start it "
                            "(or pass the same --storage and --name as the interrupted run)")
        return SweepRun(name, str(path), record.get("parent_run_id"), record.get("status", "running"))
    if path.exists() and any(path.iterdir()):
        if record.get("status") != "finished" or opts.run_name:
            raise UserError(f"a sweep already exists at {path}: continue it with --resume, "
                            "or start a separate one with --name NEW_NAME")
        number = 2
        while (root / f"{name}-{number}").exists():
            number += 1
        name = f"{name}-{number}"
        path = root / name
    return SweepRun(name, str(path))
