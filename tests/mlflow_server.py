"""A real `mlflow server` for the tests, on loopback and a free port (never 5000), that can be stopped and
started again on the same port and store: a tracking server that goes away and comes back."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def server_env() -> dict[str, str]:
    """The environment of every `mlflow server` the tests start. MLflow 3.17's server also starts a job runner
    and seven huey consumers, for its GenAI jobs: eight more Python processes on 2 cores that no test uses.
    Without them it answers about 2 s sooner (measured: 6.3 s against 8.0 s, restarted 4.6 s against 6.6 s)
    and leaves the cores to the sweep beside it."""
    return {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def free_port() -> int:
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port != 5000:
            return port


class MlflowServer:
    def __init__(self, folder: Path):
        self.folder, self.port = Path(folder), free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answers(self, timeout: float = 2) -> bool:
        """Whether the server answers a query of its store (its /health answers before the store is ready)."""
        try:
            with urllib.request.urlopen(f"{self.uri}/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default",
                                        timeout=timeout) as response:
                return response.status == 200
        except OSError:
            return False

    def start(self, timeout: float = 400) -> "MlflowServer":
        from orchestrator.mlflow_sqlite import seed_new_store

        seed_new_store(f"sqlite:///{self.folder}/mlflow.db")  # as the CLI's own store is made: no migrations
        log = open(self.folder / "mlflow-server.log", "a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{self.folder}/mlflow.db",
             "--artifacts-destination", str(self.folder / "artifacts"), "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", "1"],
            cwd=self.folder, env=server_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout
        while not self.answers(timeout=30):  # a cold store on a busy machine takes seconds to answer
            if self.proc.poll() is not None or time.time() > deadline:
                self.stop()
                tail = (self.folder / "mlflow-server.log").read_text()[-3000:]
                raise AssertionError(f"mlflow server did not start:\n{tail}")
            time.sleep(0.5)  # polling a condition with a deadline
        return self

    def stop(self) -> None:
        """Stop the server and every process it started (uvicorn, its job runner); wait until refused."""
        if self.proc is None:
            return
        for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 30)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        deadline = time.time() + 60
        while self.answers() and time.time() < deadline:
            time.sleep(0.2)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # uvicorn's worker may outlive its parent
        except ProcessLookupError:
            pass
        self.proc = None
