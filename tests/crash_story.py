"""The CLI run the way crashes happen, shared by the fault-tolerance and sweep tests (see conftest).

`sweep celeba_backbones --smoke` runs in its own process group (its own local Ray). A DDP worker is
SIGKILLed in the first trial's first epoch (Tune retries the trial from its checkpoint); the driver
is SIGKILLed once that trial has finished; the same command is run again (it must refuse), then with
`--resume`. What each step left behind is kept for the tests to judge.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from mlflow import MlflowClient

SWEEP = "celeba_backbones"


class CliRun:
    """`python -m orchestrator ARGS` in a new session, its output read line by line."""

    def __init__(self, args: list[str], cwd):
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("RAY_ADDRESS", None)
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
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.time()))
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"never saw {text!r}; output:\n" + "\n".join(self.seen[-40:]))

    def finish(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            self.kill()
        while not self.lines.empty():
            line = self.lines.get()
            if line is not None:
                self.seen.append(line)
        return code

    def kill(self):
        """SIGKILL the whole process group: the driver and the local Ray it started."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=60)

    def kill_one_train_worker(self) -> None:
        workers = subprocess.run(["pgrep", "-s", str(self.proc.pid), "-f", "ray::RayTrainWorker"],
                                 capture_output=True, text=True).stdout.split()
        assert workers, "no RayTrainWorker process found in the sweep's session"
        os.kill(int(workers[0]), signal.SIGKILL)


@dataclass
class CrashStory:
    uri: str
    storage: Path
    before: list = field(default_factory=list)  # the child runs (mlflow Run) right after the driver died
    refused: tuple[int, list[str]] = (0, [])    # exit code and output of the plain re-run
    resumed: tuple[int, list[str]] = (0, [])    # exit code and output of the --resume run

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(self.uri)

    def runs(self) -> tuple[list, list]:
        """(parent runs, child runs) of the sweep's experiment, now."""
        client = self.client
        runs = client.search_runs([client.get_experiment_by_name(SWEEP).experiment_id])
        return ([r for r in runs if "mlflow.parentRunId" not in r.data.tags],
                [r for r in runs if "mlflow.parentRunId" in r.data.tags])


def crash_and_resume(tmp: Path) -> CrashStory:
    story = CrashStory(uri=f"sqlite:///{tmp}/mlflow.db", storage=tmp / "runs")
    args = ["sweep", SWEEP, "--smoke", "--storage", str(story.storage), "--tracking-uri", story.uri,
            "--set", "data.max_train_images=480", "--max-failures", "1"]
    first = CliRun(args, tmp)
    try:
        first.wait_for("epoch 1/2", timeout=600)
        first.kill_one_train_worker()
        first.wait_for("RETRY", timeout=300)
        first.wait_for("done   trial 1/2", timeout=600)
    finally:
        first.kill()
    story.before = story.runs()[1]
    again = CliRun(args, tmp)
    story.refused = (again.finish(timeout=600), again.seen)
    resumed = CliRun(args + ["--resume"], tmp)
    story.resumed = (resumed.finish(timeout=600), resumed.seen)
    return story
