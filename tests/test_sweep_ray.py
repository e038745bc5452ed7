"""The whole path on a local Ray: `sweep celeba_backbones --smoke` -> Tune -> Train DDP -> MLflow."""

import pytest
from mlflow import MlflowClient

from orchestrator.sweep import SweepOptions, run_sweep

pytestmark = pytest.mark.ray

EPOCH_METRICS = ["train/loss", "val/loss", "val/mean_accuracy", "val/macro_f1", "val/balanced_accuracy",
                 "train/images_per_sec"]


@pytest.fixture(scope="module")
def smoke_sweep(local_ray, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("smoke")
    uri = f"sqlite:///{tmp}/mlflow.db"
    summary = run_sweep(SweepOptions("celeba_backbones", smoke=True, storage=str(tmp / "runs"), tracking_uri=uri))
    return summary, MlflowClient(uri), tmp


def test_smoke_sweep_records_parent_and_child_runs(smoke_sweep):
    summary, client, _ = smoke_sweep
    assert summary["trials"] == 2 and summary["failed"] == 0
    experiment = client.get_experiment_by_name("celeba_backbones")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert parent.data.params["data.root"] and "val/majority_accuracy" in parent.data.metrics
    assert all(c.info.status == "FINISHED" for c in children)
    assert {c.data.params["model.name"] for c in children} == {"resnet18", "seresnet18"}
    for child in children:
        assert child.data.params["loss.name"] == "bce" and float(child.data.params["optim.lr"]) > 0
        epochs = int(child.data.metrics["epoch"])
        for key in EPOCH_METRICS:
            history = client.get_metric_history(child.info.run_id, key)
            steps = [m.step for m in history]
            assert steps == list(range(1, epochs + 1)), (key, steps)  # one value per epoch, no repeats
        files = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"thresholds.json", "per_attribute.csv", "pr_curves.png", "predictions"} <= files


def test_best_trial_beats_the_majority_baseline(smoke_sweep):
    summary, client, _ = smoke_sweep
    experiment = client.get_experiment_by_name("celeba_backbones")
    parent = [r for r in client.search_runs([experiment.experiment_id]) if "mlflow.parentRunId" not in r.data.tags][0]
    best, baseline = parent.data.metrics["best/val/mean_accuracy"], parent.data.metrics["val/majority_accuracy"]
    assert best > baseline, (best, baseline)
    assert summary["best_value"] == pytest.approx(best)
