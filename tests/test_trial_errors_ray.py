"""A user's mistake found inside a trial reads as one line: in the progress output and in the child
run's `error` tag, never as a traceback per worker. Here the mistake is a shard whose image bytes were
damaged after `prepare` (a bad copy to shared storage), which only a worker reading it can find."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from orchestrator.sweep import SweepOptions, run_sweep

pytestmark = pytest.mark.ray


def damaged_shards(tmp_path) -> str:
    from trainables.data.demo.celeba import write_demo_celeba
    from trainables.data.prepare import prepare

    raw = write_demo_celeba(tmp_path / "raw", num_images=200, seed=3)
    prepare("celeba", raw, str(tmp_path / "shards"))
    part = sorted((tmp_path / "shards" / "train").glob("*.parquet"))[0]
    data = bytearray(part.read_bytes())
    at = data.find(b"\xff\xd8\xff", 100)  # the first stored JPEG's start marker
    data[at:at + 4] = b"XXXX"
    part.write_bytes(data)
    return str(tmp_path / "shards")


def test_a_mistake_inside_a_trial_is_one_line(local_ray, tmp_path, capsys):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    summary = run_sweep(SweepOptions("celeba_backbones", data=damaged_shards(tmp_path), smoke=True, num_workers=1,
                                     max_failures=0, storage=str(tmp_path / "runs"), tracking_uri=uri,
                                     overrides=["model.name=resnet18", "data.image_size=32", "optim.batch_size=16"]))
    out, err = capsys.readouterr()
    assert summary["trials"] == summary["failed"] == 1
    failed = [line for line in out.splitlines() if "FAILED" in line]
    assert len(failed) == 1 and "cannot decode image" in failed[0] and "UserError" not in failed[0]
    assert "Traceback" not in out + err
    client = MlflowClient(uri)
    (child,) = [r for r in client.search_runs([client.get_experiment_by_name("celeba_backbones").experiment_id])
                if "mlflow.parentRunId" in r.data.tags]
    assert child.info.status == "FAILED"
    assert child.data.tags["error"].startswith("cannot decode image") and "\n" not in child.data.tags["error"]
