"""Nothing lost: a driver killed with SIGKILL resumes; a worker killed mid-trial is retried from its
checkpoint. Each runs the real CLI in its own process group (its own local Ray), and kills it the
way a crash would."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest
from mlflow import MlflowClient

pytestmark = pytest.mark.ray


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


def _children(client, experiment):
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def _assert_one_value_per_epoch(client, run):
    for key in ("epoch", "val/mean_accuracy", "train/loss"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert steps == list(range(1, len(steps) + 1)), (run.info.run_name, key, steps)


def test_sigkilled_driver_resumes_without_rerunning_or_duplicating(demo_cache, tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    args = ["sweep", "celeba_backbones", "--smoke", "--storage", str(tmp_path / "runs"), "--tracking-uri", uri,
            "--set", "data.max_train_images=480"]
    first = CliRun(args, tmp_path)
    try:
        first.wait_for("done   trial 1/2", timeout=600)
    finally:
        first.kill()

    client = MlflowClient(uri)
    _, before = _children(client, "celeba_backbones")
    finished_before = {r.info.run_id: r.data.metrics["epoch"] for r in before if r.info.status == "FINISHED"}
    assert len(finished_before) == 1

    again = CliRun(args, tmp_path)
    assert again.finish(timeout=600) == 2  # refuses to start over an unfinished sweep
    assert any("--resume" in line for line in again.seen)

    resumed = CliRun(args + ["--resume"], tmp_path)
    assert resumed.finish(timeout=600) == 0, "\n".join(resumed.seen[-30:])
    parents, children = _children(client, "celeba_backbones")
    assert len(parents) == 1 and len(children) == 2  # the same runs, re-attached
    assert all(c.info.status == "FINISHED" for c in children)
    for child in children:
        _assert_one_value_per_epoch(client, child)
        if child.info.run_id in finished_before:  # the finished trial was not run again
            assert client.get_run(child.info.run_id).data.metrics["epoch"] == finished_before[child.info.run_id]
    assert "best/val/mean_accuracy" in client.get_run(parents[0].info.run_id).data.metrics


def test_killed_worker_is_retried_from_its_last_checkpoint(demo_cache, tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run = CliRun(["sweep", "celeba_backbones", "--storage", str(tmp_path / "runs"), "--tracking-uri", uri,
                  "--set", "model.name=resnet18", "--set", "optim.epochs=3", "--set", "data.max_train_images=480",
                  "--max-failures", "1"], tmp_path)
    try:
        run.wait_for("epoch 1/3", timeout=600)
        workers = subprocess.run(["pgrep", "-s", str(run.proc.pid), "-f", "ray::RayTrainWorker"],
                                 capture_output=True, text=True).stdout.split()
        assert workers, "no RayTrainWorker process found in the sweep's session"
        os.kill(int(workers[0]), signal.SIGKILL)
        run.wait_for("RETRY", timeout=300)
        assert run.finish(timeout=600) == 0, "\n".join(run.seen[-30:])
    finally:
        run.kill()
    client = MlflowClient(uri)
    _, children = _children(client, "celeba_backbones")
    assert len(children) == 1
    child = client.get_run(children[0].info.run_id)
    assert child.info.status == "FINISHED" and child.data.tags["retries"] == "1"
    assert child.data.metrics["epoch"] == 3
    _assert_one_value_per_epoch(client, child)
