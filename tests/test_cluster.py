"""`ray job submit` against a real head node with token authentication, as on a cluster.

The test starts its own head (`ray start --head` on 127.0.0.1, its own temp folder, ports and auth
token), submits the smoke sweep through the Jobs API with the project's runtime_env.yaml, waits for
SUCCEEDED, checks MLflow, and stops only the processes it started, whatever the outcome.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def head_node(demo_cache):
    from ray._private.authentication.authentication_token_generator import generate_new_authentication_token

    # Ray's unix socket paths must stay short: a temp folder of its own directly under /tmp.
    short = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))
    token = short / "auth_token"
    token.write_text(generate_new_authentication_token())
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    env.pop("RAY_ADDRESS", None)
    gcs, dashboard = _free_port(), _free_port()
    # Every port of its own: a local Ray elsewhere in the session holds the defaults (e.g. the agent's 52365).
    own_ports = [f"--{flag}={_free_port()}" for flag in (
        "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port", "runtime-env-agent-port",
        "ray-client-server-port", "node-manager-port", "object-manager-port")]
    started = subprocess.run(
        ["ray", "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs}", f"--dashboard-port={dashboard}",
         *own_ports,
         "--dashboard-host=127.0.0.1", "--num-cpus=2", f"--temp-dir={short}", "--include-dashboard=true",
         "--disable-usage-stats"],
        env=env, capture_output=True, text=True, timeout=180,
    )
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield {"dashboard": f"http://127.0.0.1:{dashboard}", "env": env, "temp": short}
    finally:
        _stop_processes_under(short)
        shutil.rmtree(short, ignore_errors=True)


def _stop_processes_under(temp: Path) -> None:
    """Stop every process of this head (they name its temp folder), and nothing else."""
    listing = subprocess.run(["pgrep", "-f", str(temp)], capture_output=True, text=True).stdout.split()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in listing:
            try:
                os.kill(int(pid), sig)
            except (ProcessLookupError, ValueError):
                pass
        time.sleep(1 if sig == signal.SIGTERM else 0)


def test_submitted_smoke_sweep_succeeds_and_records_runs(head_node, tmp_path):
    """What a user types: `ray job submit --runtime-env ... -- python -m orchestrator sweep ...`, with the
    token only in the client's environment (a pytest process has already fixed Ray's auth mode)."""
    runtime_env = yaml.safe_load((REPO / "runtime_env.yaml").read_text())
    runtime_env["working_dir"] = str(REPO)
    runtime_env["env_vars"]["FACE_ORCHESTRATOR_CACHE"] = os.environ["FACE_ORCHESTRATOR_CACHE"]
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    command = ["ray", "job", "submit", "--address", head_node["dashboard"], "--runtime-env-json", json.dumps(runtime_env),
               "--", "python", "-m", "orchestrator", "sweep", "celeba_backbones", "--smoke", "--set", "model.name=resnet18",
               "--set", "optim.epochs=1", "--set", "data.max_train_images=320", "--storage", f"{tmp_path}/runs",
               "--tracking-uri", uri]
    deadline = time.time() + 120
    while True:  # a fresh head accepts jobs once its dashboard agent is up
        submitted = subprocess.run(command, env=head_node["env"], cwd=REPO, capture_output=True, text=True, timeout=600)
        logs = submitted.stdout + submitted.stderr
        if "No available agent to submit job" not in logs or time.time() > deadline:
            break
        time.sleep(2)
    assert "succeeded" in logs.lower() and submitted.returncode == 0, logs[-3000:]
    # The job's log shows the same progress and final table as a local run.
    assert "start  trial 1/1 resnet18" in logs and "best: resnet18" in logs, logs[-3000:]
    token = Path(head_node["env"]["RAY_AUTH_TOKEN_PATH"]).read_text().strip()
    assert token not in logs

    mlflow = MlflowClient(uri)
    experiment = mlflow.get_experiment_by_name("celeba_backbones")
    runs = mlflow.search_runs([experiment.experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(runs) == 2 and len(children) == 1 and children[0].info.status == "FINISHED"
    for run in runs:  # no credential leaks into what is recorded
        recorded = " ".join(map(str, {**run.data.params, **run.data.tags}.values()))
        assert token not in recorded
