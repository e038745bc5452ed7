"""One driver per sweep: the record a running sweep's driver keeps in its folder, and the check that refuses a second.

Without it, `--resume` typed while the sweep still ran (in another terminal, under nohup after an SSH drop, or
as a `ray job`) started a second driver on the same Tune state: it trained the unfinished trials again into
the same folder, beside the first, and logged their epochs a second time into the same MLflow runs.

`<storage>/<name>/driver.json` names the driver: its host, its pid and that process's start time (so that
a reused pid is not mistaken for it), when it started, and `beat_at`, which a daemon thread rewrites every
BEAT_S seconds. The driver deletes the file when it ends, however it ends short of SIGKILL. A record left by a
killed driver is stale at once on its own host (its pid is gone, or is another process), and from another
host once `beat_at` is STALE_S old. The storage may be a local folder or any URI `state` reads and writes.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass

from orchestrator import state
from orchestrator.redaction import redact
from trainables import process_owner
from trainables.errors import UserError

LEASE_FILE = "driver.json"
BEAT_S = 10.0
STALE_S = 60.0  # six missed beats: a driver that busy is still alive


@dataclass
class Holder:
    """What a sweep's lease file says of the driver that wrote it."""
    host: str
    pid: int
    started: str | None
    since: float
    beat_at: float
    token: str

    @classmethod
    def read(cls, run_path: str) -> Holder | None:
        try:
            record = json.loads(state.read_text(f"{run_path}/{LEASE_FILE}") or "null")
            return cls(str(record["host"]), int(record["pid"]), record.get("started"), float(record["since"]),
                       float(record["beat_at"]), str(record["token"]))
        except (ValueError, TypeError, KeyError):  # none, or not ours to trust: no driver holds the sweep
            return None

    @property
    def here(self) -> bool:
        return process_owner.on_this_host({"host": self.host})

    def alive(self) -> bool:
        if not self.here:
            return time.time() - self.beat_at < STALE_S
        # This process's own leftover (an earlier sweep in the same process) is no rival.
        return self.pid != os.getpid() and process_owner.alive_here({"pid": self.pid, "started": self.started})

    def refusal(self, run_path: str, then: str) -> str:
        where = "this machine" if self.here else f"host {self.host}"
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        seen = "" if self.here else (
            f", last heard from {time.time() - self.beat_at:.0f} s ago; one unheard for {STALE_S:.0f} s counts as ended")
        return (f"the sweep at {redact(run_path)} is still running: its driver is pid {self.pid} on {where} "
                f"(since {since}{seen}); wait for it to end, or stop it (Ctrl-C in its terminal, or "
                f"`ray job stop`) and {then}")


def then_words(resume: bool) -> str:
    """What the refused command's user does once the running driver has ended."""
    return "run this command again" if resume else "resume it with --resume"


def check_free(run_path: str, then: str) -> None:
    """Refuse, in one line, a sweep whose driver is alive; `then` says what to do once it has ended."""
    holder = Holder.read(run_path)
    if holder is not None and holder.alive():
        raise UserError(holder.refusal(run_path, then))


class Lease:
    """This process's claim on a sweep's folder, kept fresh by a daemon thread until `release`."""

    def __init__(self, run_path: str):
        self.path = f"{run_path}/{LEASE_FILE}"
        self.run_path = run_path
        self.token = uuid.uuid4().hex
        self.since = time.time()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _write(self) -> None:
        state.write_text(self.path, json.dumps({**process_owner.owner(), "since": self.since, "beat_at": time.time(),
                                                "token": self.token}))

    def _ours(self) -> bool:
        holder = Holder.read(self.run_path)
        return holder is not None and holder.token == self.token

    def claim(self, resume: bool) -> Lease:
        check_free(self.run_path, then_words(resume))
        self._write()
        holder = Holder.read(self.run_path)
        if holder is None or holder.token != self.token:  # another driver wrote its claim at the same moment
            raise UserError(holder.refusal(self.run_path, then_words(resume)) if holder else
                            f"the sweep at {redact(self.run_path)} could not be claimed for this driver: run it again")
        self._thread = threading.Thread(target=self._beat, name="driver-lease", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(BEAT_S):
            holder = Holder.read(self.run_path)  # None too when the store cannot be read for a moment
            if holder is not None and holder.token != self.token:  # taken over once this driver went unheard
                return
            try:
                self._write()
            except Exception:  # noqa: BLE001  a store that is away for a moment: the next beat tries again
                continue

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            if self._ours():
                state.delete(self.path)
        except Exception:  # noqa: BLE001  a lease left behind is stale once this process has ended
            pass


@contextmanager
def held(run_path: str, resume: bool):
    """The sweep's folder claimed by this driver for the body's duration."""
    lease = Lease(run_path).claim(resume)
    try:
        yield lease
    finally:
        lease.release()
