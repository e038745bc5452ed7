"""A real two-node Ray cluster on one machine, a real `mlflow server`, and sweeps sent with `ray job submit`.

The module starts a head (`ray start --head`) and a second node that joins it (`ray start --address`),
each with 2 CPUs, its own ports and its own `--temp-dir` (two nodes sharing one temp folder made
Tune's result analysis fail with a FileNotFoundError at the sweep's end), and token authentication
as on a cluster. The sweeps' storage is a `file://` folder both nodes see, and they record into the
MLflow server over HTTP. In order:

1. `doctor` against the cluster refuses a plain local storage path, with the fix;
2. `serve --address` with 2 replicas puts one on each node, and both answer POST /predict (each from the
   proxy on its node) exactly as in-process inference does; Ctrl-C removes Serve from the cluster, and
   both nodes stay up;
3. a trial of 4 DDP workers (more than one 2-CPU node holds) runs across both nodes, judged from the
   node of each rank that the trial recorded, and reads the demo set in the head's cache in place, as
   each node's probe finds it there (a real second node without it gets a copy in the shared storage);
4. the second node is killed in the middle of a trial: that trial is retried from its checkpoint on
   the head, and MLflow holds each run and each epoch once.

Every process the module started is stopped, whatever the outcome.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow import MlflowClient

from mlflow_server import server_env
from serve_fixtures import post, serve_command
from waiting import wait_until

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[1]
# Ports a second Ray on the machine would otherwise share (a local Ray of the test session holds the defaults).
OWN_PORTS = ("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
             "runtime-env-agent-port", "node-manager-port", "object-manager-port")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(condition, seconds: float, what: str):
    return wait_until(condition, seconds, what, every=0.5)


def _stop_processes_under(folder: Path, sig: int = signal.SIGKILL) -> None:
    """Signal every process whose command line names `folder` (a node's raylet, agents and GCS); a
    node's workers exit on their own once their raylet is gone."""
    listing = subprocess.run(["pgrep", "-f", str(folder)], capture_output=True, text=True).stdout.split()
    for pid in listing:
        try:
            os.kill(int(pid), sig)
        except (ProcessLookupError, ValueError):
            pass


@dataclass
class Cluster:
    base: Path
    env: dict
    gcs: str
    dashboard: str
    mlflow: str
    head_id: str
    node_id: str

    def ray(self, *args: str, timeout: float = 120, program: str = "ray") -> subprocess.CompletedProcess:
        return subprocess.run([program, *args], env=self.env, cwd=REPO, capture_output=True, text=True, timeout=timeout)

    def actors(self) -> list[dict]:
        """The cluster's alive actors, as `ray list actors` lists them (class_name, node_id, ...)."""
        listed = self.ray("list", "actors", "--address", self.dashboard, "--format", "json", "--filter", "state=ALIVE",
                          "--limit", "10000")
        assert listed.returncode == 0, listed.stderr[-2000:]
        return [] if listed.stdout.startswith("No resource") else json.loads(listed.stdout)

    def serve(self, *args: str) -> subprocess.CompletedProcess:
        return self.ray(*args, "--address", self.dashboard, program="serve")

    def serve_status(self) -> dict:
        """`serve status` of the cluster: its proxies by node id, and its applications."""
        shown = self.serve("status")
        assert shown.returncode == 0, shown.stderr[-2000:]
        return yaml.safe_load(shown.stdout) or {}

    def alive_nodes(self) -> dict[str, str]:
        """node id -> the temp folder's role ('head' or 'node') of each alive node."""
        listed = self.ray("list", "nodes", "--address", self.dashboard, "--format", "json", "--filter", "state=ALIVE")
        if listed.returncode:
            return {}
        return {n["node_id"]: "head" if n.get("is_head_node") else "node" for n in json.loads(listed.stdout)}

    def submit(self, sweep: str, storage: str, *extra: str, wait: bool = True, job_id: str = "") -> str:
        runtime_env = yaml.safe_load((REPO / "runtime_env.yaml").read_text())
        runtime_env["working_dir"] = str(REPO)
        runtime_env["env_vars"]["FACE_ORCHESTRATOR_CACHE"] = os.environ["FACE_ORCHESTRATOR_CACHE"]
        # Two "2-CPU" nodes share this machine's 2 cores: waiting OpenMP threads must not spin on them.
        runtime_env["env_vars"]["OMP_WAIT_POLICY"] = "PASSIVE"
        command = ["job", "submit", "--address", self.dashboard, "--runtime-env-json", json.dumps(runtime_env),
                   *(["--no-wait", "--submission-id", job_id] if not wait else []),
                   "--", "python", "-m", "orchestrator", "sweep", sweep, "--storage", storage,
                   "--tracking-uri", self.mlflow, *extra]
        deadline = time.monotonic() + 120
        while True:  # a fresh head accepts jobs once its dashboard agent is up
            submitted = self.ray(*command, timeout=900)
            logs = submitted.stdout + submitted.stderr
            if "No available agent to submit job" not in logs or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert submitted.returncode == 0, logs[-3000:]
        return logs

    def job_status(self, job_id: str) -> str:
        """SUCCEEDED, FAILED, STOPPED, RUNNING or PENDING ("" before the job is known), from the dashboard's job
        API. Tests poll it every half second while a sweep runs: a `ray job status` process each time (Ray's
        imports, a second of CPU) kept one of the machine's two cores busy beside the cluster."""
        token = Path(self.env["RAY_AUTH_TOKEN_PATH"]).read_text().strip()
        request = urllib.request.Request(f"{self.dashboard}/api/jobs/{job_id}",
                                         headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return str(json.load(response).get("status", "")).upper()
        except urllib.error.HTTPError as err:
            if err.code == 404:
                return ""
            raise


def _ray_start(env: dict, temp: Path, *args: str) -> None:
    ports = [f"--{flag}={_free_port()}" for flag in OWN_PORTS]
    started = subprocess.run(["ray", "start", "--node-ip-address=127.0.0.1", "--num-cpus=2", f"--temp-dir={temp}",
                              "--disable-usage-stats", *ports, *args], env=env, capture_output=True, text=True,
                             timeout=180)
    assert started.returncode == 0, started.stdout + started.stderr


@pytest.fixture(scope="module")
def two_nodes(demo_cache):
    from ray._private.authentication.authentication_token_generator import generate_new_authentication_token

    # Ray's unix socket paths must stay short: one folder of our own directly under /tmp.
    base = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))
    (base / "auth_token").write_text(generate_new_authentication_token())
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(base / "auth_token"),
           # The GCS declares a node dead after 3 missed 1-second health checks (default: 5 of 3 s).
           "RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3"}
    env.pop("RAY_ADDRESS", None)
    gcs, dashboard, mlflow_port = _free_port(), _free_port(), _free_port()
    server = None
    try:
        _ray_start(env, base / "head", "--head", f"--port={gcs}", f"--dashboard-port={dashboard}",
                   "--dashboard-host=127.0.0.1", "--include-dashboard=true", f"--ray-client-server-port={_free_port()}")
        _ray_start(env, base / "node", f"--address=127.0.0.1:{gcs}")
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{base}/mlflow.db",
             "--artifacts-destination", str(base / "mlartifacts"), "--host", "127.0.0.1", "--port", str(mlflow_port),
             "--workers", "1"], env=server_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        cluster = Cluster(base, env, f"127.0.0.1:{gcs}", f"http://127.0.0.1:{dashboard}", f"http://127.0.0.1:{mlflow_port}",
                          "", "")
        # The state API may list a node before it knows which one is the head: wait for both, and the head's flag.
        nodes = _wait(lambda: len(n := cluster.alive_nodes()) == 2 and "head" in n.values() and n, 120,
                      "both nodes alive, one of them the head")
        cluster.head_id = next(i for i, role in nodes.items() if role == "head")
        cluster.node_id = next(i for i, role in nodes.items() if role == "node")
        _wait(lambda: _healthy(cluster.mlflow, server), 120, "the mlflow server")
        yield cluster
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGKILL)
        for _ in range(2):  # a process started while the first pass ran is caught by the second
            _stop_processes_under(base)
            time.sleep(1)
        shutil.rmtree(base, ignore_errors=True)


def _healthy(url: str, server: subprocess.Popen) -> bool:
    assert server.poll() is None, "mlflow server exited"
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2):
            return True
    except OSError:
        return False


def _children(client: MlflowClient, experiment: str) -> tuple[list, list]:
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return runs, [r for r in runs if "mlflow.parentRunId" in r.data.tags]


def test_doctor_on_a_cluster_refuses_a_plain_local_storage_path(two_nodes, tmp_path):
    doctor = subprocess.run(
        [sys.executable, "-m", "orchestrator", "doctor", "celeba_backbones", "--smoke", "--address", two_nodes.gcs,
         "--storage", str(tmp_path / "runs"), "--tracking-uri", two_nodes.mlflow],
        env=two_nodes.env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert doctor.returncode != 0, doctor.stdout
    assert "a 2-node cluster needs shared storage" in doctor.stdout and "file:///" in doctor.stdout, doctor.stdout
    assert "Traceback" not in doctor.stdout + doctor.stderr


SERVE_ACTORS = ("ServeController", "ProxyActor", "ServeReplica:")


def _serve_actors(cluster: Cluster) -> list[dict]:
    return [a for a in cluster.actors() if a["class_name"].startswith(SERVE_ACTORS)]


def _replica_answers(cluster: Cluster, role: str) -> int:
    """POST /predict requests the replicas on one node ('head' or 'node') answered 200, from their own logs."""
    logs = cluster.base.glob(f"{role}/session_latest/logs/serve/replica_faces_FaceModel_*.log")
    return sum(log.read_text(errors="replace").count("POST /predict 200") for log in logs)


def _same_answer(got: dict, want: dict) -> None:
    """A served photo's answer against in-process `analyse`'s: the same scores, table and decisions."""
    assert got["scores"].keys() == want["scores"].keys()
    np.testing.assert_allclose(list(got["scores"].values()), list(want["scores"].values()), atol=1e-5)
    assert got["table"].keys() == want["table"].keys()
    for key, value in want["table"].items():
        assert got["table"][key] == (pytest.approx(value, abs=1e-5) if isinstance(value, float) else value), key
    decided = [[(i["name"], i["decision"]) for i in section["items"]] for section in got["sections"]]
    assert decided == [[(i["name"], i["decision"]) for i in section["items"]] for section in want["sections"]]


def test_serve_on_the_cluster_answers_from_replicas_on_both_nodes(two_nodes, exported, celeba_trial):
    """`serve --address` with 2 replicas of 1 CPU: Serve spreads them, one per node, with a proxy on each.
    Both nodes being this machine, the two proxies share the port (Serve sets SO_REUSEPORT), the kernel
    spreads new connections over them and each proxy prefers the replica on its own node (Serve's default),
    so both replicas answer, as their own logs on each node show. Every answer is in-process
    `trainables.inference`'s. Ctrl-C removes Serve from the cluster, whose nodes stay up for the next tests."""
    from trainables import inference

    folder = exported[0]
    paths = sorted((Path(celeba_trial["root"]) / "img_align_celeba").glob("*.jpg"))[:4]
    model = inference.load_exported(folder, device="cpu")
    want = inference.analyse(model, inference.predict_faces(model, inference.load_faces(model, paths)),
                             inference.choose_decision(model, None))
    sent = [(p.name, p.read_bytes()) for p in paths]
    roles = {two_nodes.head_id: "head", two_nodes.node_id: "node"}
    try:
        with serve_command("--model", str(folder), "--address", two_nodes.gcs, "--replicas", "2",
                           env=two_nodes.env) as url:
            replicas = [a for a in _serve_actors(two_nodes) if a["class_name"] == "ServeReplica:faces:FaceModel"]
            placed = sorted(roles.get(a["node_id"], a["node_id"]) for a in replicas)
            assert placed == ["head", "node"], placed
            status = _wait(lambda: (s := two_nodes.serve_status()) and set(s.get("proxies") or {}) == set(roles)
                           and set(s["proxies"].values()) == {"HEALTHY"} and s, 120, "a healthy proxy on each node")
            assert status["applications"]["faces"]["deployments"]["FaceModel"]["replica_states"] == {"RUNNING": 2}
            for request in range(1, 41):  # each on a new connection: 2^-39 that 40 all reach one proxy
                answer = post(f"{url}predict", sent)
                assert answer.status_code == 200, answer.text
                images = answer.json()["images"]
                assert [i["file"] for i in images] == [name for name, _ in sent]
                for got, expected in zip(images, want):
                    _same_answer(got, expected)
                answered = {role: _replica_answers(two_nodes, role) for role in ("head", "node")}
                if request >= 4 and all(answered.values()):  # at least 4 requests, until both nodes answered
                    break
            assert all(answered.values()) and sum(answered.values()) <= request, (answered, request)
        _wait(lambda: not _serve_actors(two_nodes), 60, "Serve's actors to end")
        assert not (two_nodes.serve_status().get("applications") or {})
        assert two_nodes.alive_nodes() == roles
    finally:  # whatever happened, the next tests need both nodes' CPUs back
        if _serve_actors(two_nodes):
            two_nodes.serve("shutdown", "--yes")


def test_four_workers_of_one_trial_span_both_nodes(two_nodes):
    """4 DDP workers on two 2-CPU nodes: planned per node (0.995 CPU each, rounded down), placed on both, reading
    the demo set where it was prepared, which both nodes see (they share this machine's disk)."""
    logs = two_nodes.submit("celeba_backbones", f"file://{two_nodes.base}/shared", "--smoke", "--num-workers", "4",
                            "--set", "model.name=resnet18", "--set", "optim.epochs=1",
                            "--set", "data.max_train_images=320", "--set", "optim.batch_size=16")
    assert "succeeded" in logs.lower(), logs[-3000:]
    assert "4 DDP workers x (0.995 CPU) per trial" in logs and "span 2 nodes" in logs, logs[-3000:]
    assert "start  trial 1/1 resnet18" in logs and "best: resnet18" in logs, logs[-3000:]
    token = Path(two_nodes.env["RAY_AUTH_TOKEN_PATH"]).read_text().strip()
    assert token not in logs

    runs, children = _children(MlflowClient(two_nodes.mlflow), "celeba_backbones")
    assert len(runs) == 2 and len(children) == 1 and children[0].info.status == "FINISHED"
    placement = children[0].data.tags["worker_nodes"].split(",")
    assert len(placement) == 4 and set(placement) == {two_nodes.head_id, two_nodes.node_id}, placement
    assert children[0].data.metrics["workers/nodes"] == 2
    # The demo set was prepared into the head's cache. A real second node would not have it (and would get a copy
    # in the shared storage, tests/test_shared_data.py); here each node's probe finds it, so it is read in place.
    root = children[0].data.params["data.root"]
    assert "is read in place: every node of the cluster sees it there" in logs and root in logs, logs[-3000:]
    assert "Copied the prepared data at" not in logs and "/prepared/celeba-celeba_demo" in root, root
    assert not (two_nodes.base / "shared" / "prepared").exists()
    for run in runs:  # no credential leaks into what is recorded
        assert token not in " ".join(map(str, {**run.data.params, **run.data.tags}.values()))


@pytest.mark.alone  # with the other pytest worker's sweeps beside it, its poll came after epoch 2
def test_a_trial_on_a_killed_node_is_retried_from_its_checkpoint_on_the_head(two_nodes):
    """Two trials of one 1.98-CPU worker each: one per node. Kill the second node once its trial has
    checkpointed epoch 1; that trial resumes on the head after the other one ends.

    An epoch is 960 images (about 7 s here), so that the kill lands during epoch 2: between a worker's report
    and the kill come the Train controller's poll (2 s on a cluster), Tune, the MLflow record and this test's
    half-second poll, up to about 3.5 s. With 192 images, and again with 384 once the test's own polling no
    longer slowed the trial (a `ray job status` process every half second), the trial had finished epoch 2 on
    the node before the kill, and its retry only reported that again."""
    sweep = two_nodes.base / "two_trials.yaml"
    sweep.write_text(yaml.safe_dump({
        "name": "node_loss", "question": "Does a trial survive the loss of its node?", "task": "attributes",
        "metric": "val/mean_accuracy", "mode": "max", "scheduler": "none", "workers_per_trial": 1,
        "space": {"model.name": "resnet18", "optim.lr": {"grid": [0.001, 0.003]}, "optim.epochs": 2,
                  "optim.batch_size": 32, "data.image_size": 32, "data.max_train_images": 960}}))
    job = "node-loss"
    two_nodes.submit(str(sweep), f"file://{two_nodes.base}/shared", "--max-concurrent", "2", "--max-failures", "2",
                     wait=False, job_id=job)
    client = MlflowClient(two_nodes.mlflow)

    def trial_on_second_node_checkpointed():
        experiment = client.get_experiment_by_name("node_loss")
        if experiment is None:
            return None
        assert two_nodes.job_status(job) in ("RUNNING", "PENDING"), two_nodes.ray("job", "logs", job, "--address",
                                                                                  two_nodes.dashboard).stdout[-3000:]
        for run in client.search_runs([experiment.experiment_id]):
            if run.data.tags.get("worker_nodes") == two_nodes.node_id and run.data.metrics.get("epoch", 0) >= 1:
                return run
        return None

    victim = _wait(trial_on_second_node_checkpointed, 300, "a trial on the second node to report epoch 1")
    assert victim.data.metrics["epoch"] < 2, "the trial had already finished: nothing was interrupted"
    _stop_processes_under(two_nodes.base / "node")
    _wait(lambda: two_nodes.job_status(job) in ("SUCCEEDED", "FAILED", "STOPPED"), 600, "the sweep to end")
    logs = two_nodes.ray("job", "logs", job, "--address", two_nodes.dashboard).stdout
    assert two_nodes.job_status(job) == "SUCCEEDED", logs[-3000:]
    assert list(two_nodes.alive_nodes()) == [two_nodes.head_id]

    runs, children = _children(client, "node_loss")
    assert len(runs) == 3 and len(children) == 2, [r.info.run_name for r in runs]  # one parent, one run per trial
    assert all(r.info.status == "FINISHED" for r in runs)
    retried = next(r for r in children if r.info.run_id == victim.info.run_id)
    progress = "\n".join(line for line in logs.splitlines() if line.startswith("[") and "] " in line[:12])
    assert retried.data.tags.get("retries") == "1", progress
    assert retried.data.tags["worker_nodes"] == two_nodes.head_id, (retried.info.run_name, progress)
    for run in children:  # every epoch once, in order
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "epoch")]
        assert steps == [1, 2], (run.info.run_name, steps)
    # Resumed from its checkpoint, not from scratch: its second attempt's first report was after epoch 1
    # (a restart from epoch 0 would report its start-up with epoch 1 again, which is never logged twice).
    starts = [m.step for m in client.get_metric_history(retried.info.run_id, "timing/worker_setup_s")]
    assert len(starts) == 2 and starts[0] == 1 and starts[1] >= 2, starts
