"""The CLI run the way crashes happen, shared by the fault-tolerance, sweep and interrupt tests (see conftest).

`sweep celeba_backbones --smoke` runs in its own process group (its own local Ray). A DDP worker is
SIGKILLed in the first trial's second epoch, once its epoch-1 checkpoint is reported (Tune retries the
trial from it); while the retried trial runs, a `--resume` of the same sweep is tried (it must refuse: the
driver is alive); the driver is SIGKILLed once that trial has finished; the same command is run again
(it must refuse), then with `--resume --set optim.epochs=3` (it must refuse: a resume keeps the sweep's settings), then with `--resume --data` naming a copy of the prepared demo set (as on another machine) (and `--register`), which goes ahead: the driver that held the sweep is dead. What each step left behind is kept for the tests to judge.

On a fast machine trial 1 may end before the kill lands: the story sees its `done` line before any
`RETRY`, and starts over in a fresh folder with four times the images per epoch. `story.args` are the
arguments the story ended with, for tests that compare another run of the same command with it.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from mlflow import MlflowClient

SWEEP = "celeba_backbones"
REGISTERED = "smoke-faces"  # the resumed sweep registers its best model under this name (test_sweep_ray.py)


class CliRun:
    """`python -m orchestrator ARGS` in a new session, its output read line by line."""

    def __init__(self, args: list[str], cwd, buffered: bool = False):
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("RAY_ADDRESS", None)
        if buffered:  # as when its output goes to a pipe or a file: what it prints reaches them when flushed
            env.pop("PYTHONUNBUFFERED")
        self.proc = subprocess.Popen([sys.executable, "-m", "orchestrator", *args], cwd=cwd, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self.lines: queue.Queue = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip())
        self.lines.put(None)

    def wait_for(self, text: str, timeout: float) -> str:
        return self.wait_for_any([text], timeout)[1]

    def wait_for_any(self, texts: list[str], timeout: float) -> tuple[str, str]:
        """(the first of `texts` to appear in a line, that line)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.time()))
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
            for text in texts:
                if text in line:
                    return text, line
        raise AssertionError(f"never saw any of {texts!r}; output:\n" + "\n".join(self.seen[-40:]))

    def finish(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            self.kill()
        while not self.lines.empty():
            line = self.lines.get()
            if line is not None:
                self.seen.append(line)
        if code is None:
            raise AssertionError(f"still running after {timeout:.0f} s; output:\n" + "\n".join(self.seen[-40:]))
        return code

    def left_behind(self, grace: float) -> list[str]:
        """Once the command has ended: the processes of its session (the local Ray it started) still alive after
        up to `grace` seconds, as `pid stat args` lines (zombies, dead and awaiting their reaping, are not alive)."""
        assert self.proc.poll() is not None, "the command is still running"
        deadline = time.time() + grace
        while True:
            ps = subprocess.run(["ps", "-o", "pid=,stat=,args=", "-s", str(self.proc.pid)], capture_output=True, text=True)
            alive = [line.strip() for line in ps.stdout.splitlines() if line.split()[1:2] and not line.split()[1].startswith("Z")]
            if not alive or time.time() > deadline:
                return alive
            time.sleep(0.5)

    def kill(self):
        """SIGKILL the whole process group: the driver and the local Ray it started."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=60)

    def kill_one_train_worker(self) -> bool:
        """SIGKILL one DDP worker of the sweep; False when there is none (its trial already ended)."""
        workers = subprocess.run(["pgrep", "-s", str(self.proc.pid), "-f", "ray::RayTrainWorker"],
                                 capture_output=True, text=True).stdout.split()
        for pid in workers:
            try:
                os.kill(int(pid), signal.SIGKILL)
                return True
            except ProcessLookupError:
                continue
        return False


@dataclass
class CrashStory:
    uri: str
    storage: Path
    args: list = field(default_factory=list)     # the sweep command's arguments, without --storage/--tracking-uri
    before: list = field(default_factory=list)  # the child runs (mlflow Run) right after the driver died
    refused: tuple[int, list[str]] = (0, [])    # exit code and output of the plain re-run
    rival: tuple[int, list[str]] = (0, [])      # exit code and output of the --resume tried while the driver ran
    driver_pid: int = 0                         # the first run's driver, which held the sweep
    changed: tuple[int, list[str]] = (0, [])    # ... of a --resume that changes the epochs (refused)
    resumed: tuple[int, list[str]] = (0, [])    # exit code and output of the --resume run
    data_elsewhere: Path | None = None          # the copy of the prepared demo set the --resume names by --data

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(self.uri)

    def runs(self) -> tuple[list, list]:
        """(parent runs, their trials' runs) of the sweep's experiment, now. A threshold-policy sweep nested under
        the sweep (a test may run one on its best trial) is neither: its runs are not the sweep's trials."""
        client = self.client
        runs = client.search_runs([client.get_experiment_by_name(SWEEP).experiment_id])
        parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
        ids = {r.info.run_id for r in parents}
        return parents, [r for r in runs if r.data.tags.get("mlflow.parentRunId") in ids
                         and r.data.tags.get("orchestrator.kind") == "trial"]


def smoke_args(images: int = 480) -> list[str]:
    """The smoke sweep the story runs: one trial at a time on any machine, so that its order is the same."""
    return ["sweep", SWEEP, "--smoke", "--set", f"data.max_train_images={images}", "--max-failures", "1",
            "--max-concurrent", "1"]


def crash_and_resume(tmp: Path) -> CrashStory:
    for images in (480, 1920, 7680):
        story = _crash_and_resume(tmp / f"images-{images}", smoke_args(images))
        if story is not None:
            return story
    raise AssertionError("trial 1 ended before a worker could be killed, even with 7680 images an epoch")


def _crash_and_resume(tmp: Path, args: list[str]) -> CrashStory | None:
    """The story, or None when the worker kill came too late (trial 1 had already ended)."""
    tmp.mkdir(parents=True, exist_ok=True)
    story = CrashStory(uri=f"sqlite:///{tmp}/mlflow.db", storage=tmp / "runs", args=args)
    args = [*args, "--storage", str(story.storage), "--tracking-uri", story.uri]
    first = CliRun(args, tmp)
    try:
        first.wait_for("epoch 1/2", timeout=900)  # trial 1's first epoch is reported, with its checkpoint
        if not first.kill_one_train_worker():
            return None
        seen, _ = first.wait_for_any(["RETRY  trial 1/2", "done   trial 1/2"], timeout=900)
        if seen.startswith("done"):  # trial 1 had ended: the kill hit nothing of it, or trial 2's start
            return None
        rival = CliRun(args + ["--resume"], tmp)
        story.rival, story.driver_pid = (rival.finish(timeout=300), rival.seen), first.proc.pid
        first.wait_for("done   trial 1/2", timeout=900)
    finally:
        first.kill()
    story.before = story.runs()[1]
    again = CliRun(args, tmp)
    story.refused = (again.finish(timeout=900), again.seen)
    changed = CliRun(args + ["--resume", "--set", "optim.epochs=3"], tmp)
    story.changed = (changed.finish(timeout=900), changed.seen)
    # As on another machine sharing the storage: the prepared set the sweep trained on (its parent run's data.root;
    # the session's cache holds other prepared sets too) in another folder, named by --data.
    (parent,), _ = story.runs()
    prepared = Path(parent.data.params["data.root"])
    story.data_elsewhere = tmp / "elsewhere" / prepared.name
    shutil.copytree(prepared, story.data_elsewhere)
    resumed = CliRun(args + ["--resume", "--data", str(story.data_elsewhere), "--register", REGISTERED,
                             "--register-if", "val/mean_accuracy>=0"], tmp)
    story.resumed = (resumed.finish(timeout=1800), resumed.seen)
    return story
