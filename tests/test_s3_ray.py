"""S3 as a first-class path, against a real S3 API on loopback (moto's server, tests/s3_server.py):
`prepare --out s3://`, then one CLI sweep with `--data s3://` and `--storage s3://` whose store goes away in
the middle of a trial, whose driver is then killed, and which `--resume` finishes from the bucket; `export
--run` of its checkpoint in the bucket, and `doctor`. The credentials come from the AWS environment only,
and are recorded nowhere."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from mlflow import MlflowClient

from crash_story import SWEEP, CliRun
from s3_server import SECRET_KEY

pytestmark = pytest.mark.ray

METRIC = "val/mean_accuracy"
# One worker, one trial at a time, small images: the sweep's cost is mostly Ray starting trials.
CHEAP = ["--smoke", "--num-workers", "1", "--max-concurrent", "1", "--max-failures", "1",
         "--set", "data.max_train_images=128", "--set", "data.image_size=32", "--set", "optim.batch_size=32"]


def cli(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=900)


@pytest.fixture(scope="module")
def s3_shards(s3_server, demo_cache, tmp_path_factory):
    """The demo CelebA set, prepared straight into a bucket by the CLI."""
    from trainables.data.demo.celeba import write_demo_celeba

    tmp = tmp_path_factory.mktemp("s3-prepare")
    bucket = s3_server.create_bucket("faces-data")
    root = write_demo_celeba(tmp / "celeba", num_images=300, seed=5)
    done = cli("prepare", "celeba", "--src", str(root), "--out", f"s3://{bucket}/celeba", cwd=tmp)
    assert done.returncode == 0, done.stdout + done.stderr
    files = s3_server.files(f"{bucket}/celeba")
    assert f"{bucket}/celeba/metadata.json" in files and any(f.endswith(".parquet") for f in files), files
    return f"s3://{bucket}/celeba"


def runs_of(uri: str) -> tuple[list, list]:
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(SWEEP).experiment_id])
    return ([r for r in runs if "mlflow.parentRunId" not in r.data.tags],
            [r for r in runs if "mlflow.parentRunId" in r.data.tags])


def epochs_logged(uri: str, run_id: str) -> list[int]:
    return sorted(m.step for m in MlflowClient(uri).get_metric_history(run_id, METRIC))


def _assert_store_errors_are_our_lines(seen: list[str]) -> None:
    """Every mention of the store's error is one of our timestamped lines, never Ray's log records. The one
    exception is libarrow's own C++ warning when Ray's background save of the sweep's state is cut off
    mid-upload ("Error ignored when destroying file ..."): C++ writes it to stderr, past Python's logging."""
    store_lines = [line for line in seen if "AWS Error" in line or "Could not connect" in line]
    ours = [line for line in store_lines if line.startswith("[")]
    arrow = [line for line in store_lines if line.startswith("/arrow/cpp/") and "Error ignored when destroying" in line]
    assert ours and len(ours) + len(arrow) == len(store_lines) and len(arrow) <= 3, "\n".join(store_lines)
    assert sum(" store  " in line for line in seen) <= 1, "\n".join(store_lines)


def test_a_sweep_from_a_bucket_outlives_the_store_going_away_and_its_driver_killed_then_resumes_and_exports(
        s3_server, s3_shards, tmp_path, monkeypatch):
    """One sweep, reading its data from a bucket and keeping its state and checkpoints in another, lives
    through both ways a bucket-backed sweep loses its footing: the store stops answering in the middle of
    trial 1 (one line, then Tune's retry from the epoch-1 checkpoint), and, once trial 1 is done, the driver
    and its local Ray are SIGKILLed, so that only the bucket keeps the sweep. `--resume` from the bucket
    finishes it with every epoch of every trial logged once, `export --run` reads the best checkpoint from
    the bucket, `doctor` passes, and the secret key is recorded nowhere."""
    monkeypatch.setenv("FACE_ORCHESTRATOR_STORE_RETRY_S", "5")  # the CLI's bounded wait on the store, made short
    bucket = s3_server.create_bucket("faces-runs")
    storage, uri = f"s3://{bucket}/runs", f"sqlite:///{tmp_path}/mlflow.db"
    args = ["sweep", SWEEP, "--data", s3_shards, "--storage", storage, "--tracking-uri", uri, *CHEAP]

    first = CliRun(args, tmp_path)
    try:
        first.wait_for("trial 1/2 resnet18  epoch 1/2", timeout=900)
        s3_server.stop()
        # The trial's next read or checkpoint write fails after its bounded retries: one line, then Tune's retry.
        failed = first.wait_for_any(["RETRY  trial 1/2", "FAILED trial 1/2"], timeout=600)[1]
        assert "does not answer" in failed or "cannot read s3://" in failed or "cannot write" in failed, failed
        s3_server.start()  # same port, same buckets
        # Trial 1 ends (its retry came after the store was back) or fails (it came too soon); either way the
        # driver dies before trial 2 ends, and the bucket alone keeps what happened.
        first.wait_for_any(["done   trial 1/2", "FAILED trial 1/2", "start  trial 2/2"], timeout=900)
    finally:
        if not s3_server.up():
            s3_server.start()
        first.kill()  # SIGKILL the driver and its local Ray: only the bucket keeps the sweep
    assert not any("Traceback" in line for line in first.seen), "\n".join(first.seen)

    resumed = CliRun(args + ["--resume"], tmp_path)
    assert resumed.finish(timeout=900) == 0, "\n".join(resumed.seen[-40:])
    seen = first.seen + resumed.seen
    assert not any("Traceback" in line for line in seen), "\n".join(seen)
    _assert_store_errors_are_our_lines(seen)

    (parent,), children = runs_of(uri)
    assert parent.info.status == "FINISHED" and f"best/{METRIC}" in parent.data.metrics
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
    for child in children:  # the retried trial continued from its epoch-1 checkpoint: each epoch logged once
        assert epochs_logged(uri, child.info.run_id) == [1, 2], child.data.tags.get("mlflow.runName")
    record = json.loads(s3_server.read(f"{bucket}/runs/{SWEEP}/orchestrator.json"))
    assert record["status"] == "finished" and record["parent_run_id"] == parent.info.run_id

    # Every trial's checkpoints are in the bucket (listed with pyarrow), and its tag points at one.
    files = s3_server.files(f"{bucket}/runs/{SWEEP}")
    for child in children:
        trial_id = child.data.tags["orchestrator.trial_id"]
        weights = [f for f in files if f"/train_runs/train-{trial_id}/checkpoint_" in f and f.endswith("/model.pt")]
        assert weights, f"no checkpoint of {trial_id} in the bucket: {files}"
        assert child.data.tags["checkpoint"].startswith(f"{bucket}/runs/{SWEEP}/train_runs/train-{trial_id}/")
    assert f"{bucket}/runs/{SWEEP}/tuner.pkl" in files

    out = tmp_path / "export"
    exported = cli("export", "--run", parent.info.run_id, "--out", str(out), "--tracking-uri", uri, cwd=tmp_path)
    assert exported.returncode == 0, exported.stdout + exported.stderr
    assert {"model.safetensors", "config.json", "trial_config.json"} <= {p.name for p in out.iterdir()}

    doctor = cli("doctor", SWEEP, "--data", s3_shards, "--storage", f"s3://{bucket}/doctor", "--tracking-uri", uri,
                 *CHEAP, cwd=tmp_path)
    assert doctor.returncode == 0 and "all checks passed" in doctor.stdout, doctor.stdout + doctor.stderr

    # The secret key reached the workers through the environment only: no file in the bucket (tuner.pkl,
    # the trials' params.pkl, the state file, checkpoints) and no MLflow param or tag holds it.
    secret = SECRET_KEY.encode()
    assert not [f for f in s3_server.files(bucket) if secret in s3_server.read(f)]
    for run in [parent, *children]:
        recorded = json.dumps([run.data.params, run.data.tags])
        assert SECRET_KEY not in recorded, run.info.run_id
    for output in (first.seen, resumed.seen, [exported.stdout, exported.stderr, doctor.stdout, doctor.stderr]):
        assert not any(SECRET_KEY in line for line in output)
