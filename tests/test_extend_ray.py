"""`sweep --extend` through the CLI, on the session's finished smoke sweep (a grid of two backbones,
`crashed_smoke_sweep`): extended with a third backbone, exactly one new trial trains; the table, trials.csv
and the leaderboard list all three, the earlier two marked; the new parent run is tagged with its lineage;
no earlier run is changed; and an extension on another dataset is refused in one line.

The earlier sweep's MLflow store is copied first, so that the session's other tests see their sweep as
they left it."""

from __future__ import annotations

import csv
import shutil

import pytest
from mlflow import MlflowClient

from crash_story import SWEEP, CliRun
from orchestrator.extend import EARLIER, EXTENDS_TAG
from trainables.artifacts import LEADERBOARD_CSV, TRIALS_TABLE
from trainables.data.demo.celeba import write_demo_celeba

pytestmark = pytest.mark.ray

THIRD = "skresnet18"


def _runs(client: MlflowClient):
    experiment = client.get_experiment_by_name(SWEEP).experiment_id
    runs = client.search_runs([experiment])
    return [r for r in runs if r.data.tags.get("orchestrator.kind") == "sweep"], runs


def _table(client: MlflowClient, run_id: str, name: str, folder) -> list[dict]:
    with open(client.download_artifacts(run_id, name, str(folder))) as handle:
        return list(csv.DictReader(handle))


def test_extend_trains_only_the_new_backbone_and_lists_every_trial(crashed_smoke_sweep, tmp_path):
    story = crashed_smoke_sweep
    shutil.copy(story.uri.removeprefix("sqlite:///"), tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    (earlier,), runs = _runs(client)
    before = {r.info.run_id: (r.info.status, r.info.end_time, r.data.metrics, r.data.tags) for r in runs}
    models = sorted(r.data.params["model.name"] for r in runs if r.data.tags.get("orchestrator.kind") == "trial")
    assert THIRD not in models and len(models) == 2
    args = [*story.args, "--set", f"model.name={','.join(models + [THIRD])}", "--extend", earlier.info.run_id,
            "--storage", str(tmp_path / "runs"), "--tracking-uri", uri]

    # Another dataset (its own fingerprint) is refused in one line before any trial starts.
    other = write_demo_celeba(tmp_path / "other", num_images=300, seed=11)
    refused = CliRun(args + ["--data", str(other)], tmp_path)
    assert refused.finish(timeout=600) == 2, "\n".join(refused.seen[-20:])
    errors = [line for line in refused.seen if line.startswith("error:")]
    assert len(errors) == 1 and "another dataset" in errors[0] and "--extend-anyway" in errors[0], refused.seen[-10:]
    assert not any("Traceback" in line or "start  trial" in line for line in refused.seen)

    run = CliRun(args, tmp_path)
    code = run.finish(timeout=900)
    print("\n".join(run.seen))  # shown when the test fails, or with -rP
    assert code == 0, "\n".join(run.seen[-40:])
    started = [line for line in run.seen if "start  trial" in line]
    assert len(started) == 1 and started[0].endswith(f"trial 1/1 {THIRD}"), started  # exactly one new trial
    assert any(f"extends sweep {earlier.info.run_id}: its 2 trials count as run" in line for line in run.seen)

    parents, runs = _runs(client)
    (new,) = [p for p in parents if p.info.run_id != earlier.info.run_id]
    assert new.data.tags[EXTENDS_TAG] == earlier.info.run_id and new.info.status == "FINISHED"
    mine = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == new.info.run_id]
    assert [r.data.params["model.name"] for r in mine] == [THIRD]
    for run_id, record in before.items():  # no earlier run is changed
        now = client.get_run(run_id)
        assert (now.info.status, now.info.end_time, now.data.metrics, now.data.tags) == record, run_id

    table = _table(client, new.info.run_id, TRIALS_TABLE, tmp_path)
    assert sorted(row["config"] for row in table) == sorted(models + [THIRD])
    assert sorted(row["from"] for row in table) == [EARLIER, EARLIER, "this sweep"]
    assert [row["from"] for row in table if row["config"] == THIRD] == ["this sweep"]
    best = [row for row in table if row["best"] == "*"]
    assert len(best) == 1 and float(best[0]["val/mean_accuracy"]) == max(float(r["val/mean_accuracy"]) for r in table)
    assert new.data.tags["best_trial"] == best[0]["config"]
    ours = [row["model"] for row in _table(client, new.info.run_id, LEADERBOARD_CSV, tmp_path)
            if row["source"] == "this sweep"]
    assert sorted(ours) == sorted([f"{m} ({EARLIER})" for m in models] + [THIRD])
