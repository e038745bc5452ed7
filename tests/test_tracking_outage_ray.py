"""A real `mlflow server` goes away in the middle of a real CLI sweep, for longer than the MLflow client's
retries (made short here), comes back, and goes away again until the end: the trials keep training, the
console says so once per outage, the sweep ends with the one line naming `sync` and exit 3, and `sync`
then completes the record: every epoch of every trial exactly once, and the parent FINISHED with best/*."""

from __future__ import annotations

import shlex

import pytest
from mlflow import MlflowClient

from crash_story import SWEEP, CliRun
from mlflow_server import MlflowServer
from orchestrator.spool import SPOOL_FILE

pytestmark = pytest.mark.ray
EPOCHS = 4
DOWN, BACK = "is not answering", "answers again:"


def test_a_tracking_server_that_goes_away_loses_no_epoch(demo_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")  # the client's own retries: seconds, not minutes
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")  # refused fails at once; a busy server may be slow
    monkeypatch.setenv("ORCHESTRATOR_MLFLOW_PROBE_S", "2")
    (tmp_path / "server").mkdir()
    server = MlflowServer(tmp_path / "server").start()
    storage = tmp_path / "runs"
    args = ["sweep", SWEEP, "--smoke", "--num-workers", "1", "--max-concurrent", "1", "--no-early-stopping",
            "--set", "data.max_train_images=240", "--set", f"optim.epochs={EPOCHS}",
            "--storage", str(storage), "--tracking-uri", server.uri]
    sweep = CliRun(args, tmp_path)
    try:
        sweep.wait_for(f"epoch 1/{EPOCHS}", timeout=900)  # trial 1, recorded before it is printed
        server.stop()
        sweep.wait_for(DOWN, timeout=600)  # the next record, after the client's retries
        sweep.wait_for(f"epoch 3/{EPOCHS}", timeout=600)  # and another event while it is down: kept at once
        server.start()
        sweep.wait_for(BACK, timeout=600)
        server.stop()  # down again, this time until the sweep's end
        code = sweep.finish(timeout=900)
    finally:
        sweep.kill()
        server.stop()
    output = "\n".join(sweep.seen)
    assert code == 3, output[-4000:]
    back = next(i for i, line in enumerate(sweep.seen) if BACK in line)
    assert [line for line in sweep.seen[:back] if DOWN in line].__len__() == 1, output  # said once per outage
    assert [line for line in sweep.seen[back:] if DOWN in line].__len__() == 1, output
    assert sum(BACK in line for line in sweep.seen) == 1, output
    assert "Traceback" not in output and "warning" not in output, output[-4000:]
    assert "View run" not in output, output[-4000:]  # MLflow's own links to each run it ends (the preflight's scratch run)
    assert sweep.seen[-1].count("orchestrator sync") == 1 and "still not answering" in sweep.seen[-1], output[-2000:]
    assert sum("orchestrator sync" in line for line in sweep.seen) == 1
    assert (storage / SWEEP / SPOOL_FILE).exists()

    server.start()
    command = shlex.split(sweep.seen[-1].split("finish the recording with: ", 1)[1])
    assert command[:4] == ["python", "-m", "orchestrator", "sync"], command
    sync = CliRun(command[3:], tmp_path)
    assert sync.finish(timeout=600) == 0, "\n".join(sync.seen)
    assert any("synced" in line for line in sync.seen), sync.seen
    assert not any("View run" in line or "View experiment" in line for line in sync.seen), sync.seen
    again = CliRun(command[3:], tmp_path)  # a second sync finds nothing left to write
    assert again.finish(timeout=600) == 0 and any("nothing to sync" in line for line in again.seen), again.seen
    try:
        client = MlflowClient(server.uri)
        runs = client.search_runs([client.get_experiment_by_name(SWEEP).experiment_id])
        (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
        children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
        assert parent.info.status == "FINISHED" and "best/val/mean_accuracy" in parent.data.metrics
        assert parent.data.tags["best_run_id"] in {c.info.run_id for c in children}
        assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"trials.csv", "model"}
        assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
        for child in children:  # every epoch exactly once, for each metric
            for key in ("epoch", "val/mean_accuracy", "train/loss"):
                steps = sorted(m.step for m in client.get_metric_history(child.info.run_id, key))
                assert steps == list(range(1, EPOCHS + 1)), (child.info.run_name, key, steps)
            assert child.data.params["model.name"] in child.info.run_name
        assert not (storage / SWEEP / SPOOL_FILE).exists()
    finally:
        server.stop()
