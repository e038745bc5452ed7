"""The whole path: `sweep celeba_backbones --smoke` -> Tune -> Train DDP -> MLflow, from the CLI.

The sweep is the session's `crashed_smoke_sweep` (see conftest): once resumed, a sweep that lost a
worker and its driver must be as complete as one that never crashed. The threshold sweep then runs
in-process on the local Ray, from that sweep's best trial.
"""

from pathlib import Path

import pytest

from orchestrator.sweep import SweepOptions, run_sweep

pytestmark = pytest.mark.ray

EPOCH_METRICS = ["train/loss", "val/loss", "val/mean_accuracy", "val/macro_f1", "val/balanced_accuracy",
                 "train/images_per_sec"]


@pytest.fixture(scope="module")
def smoke_sweep(crashed_smoke_sweep):
    """(summary, client, folder): what run_sweep would have returned, read back from MLflow."""
    story = crashed_smoke_sweep
    assert story.resumed[0] == 0, "\n".join(story.resumed[1][-30:])
    parent = story.runs()[0][0]
    summary = {"trials": int(parent.data.params["trials"]), "best_run_id": parent.data.tags["best_run_id"],
               "best_value": parent.data.metrics["best/val/mean_accuracy"],
               "failed": int(parent.data.metrics["sweep/failed_trials"])}
    return summary, story.client, story.storage.parent


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
    # The parent's best/* is the best trial's metrics once: its own best/* is not copied as best/best/*.
    assert "best/val/mean_accuracy" in parent.data.metrics
    assert not [k for k in parent.data.metrics if k.startswith("best/best/")], sorted(parent.data.metrics)
    assert all(c.info.status == "FINISHED" for c in children)
    assert {c.data.params["model.name"] for c in children} == {"resnet18", "legacy_seresnet18"}
    for child in children:
        assert child.data.params["loss.name"] == "bce" and float(child.data.params["optim.lr"]) > 0
        epochs = int(child.data.metrics["epoch"])
        for key in EPOCH_METRICS:
            history = client.get_metric_history(child.info.run_id, key)
            steps = [m.step for m in history]
            assert steps == list(range(1, epochs + 1)), (key, steps)  # one value per epoch, no repeats
        files = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"thresholds.json", "per_attribute.csv", "pr_curves.png", "predictions"} <= files
        assert [d.dataset.name for d in child.inputs.dataset_inputs] == [parent.data.params["data.root"].rsplit("/", 1)[-1]]
        assert child.data.params["weights.source"] == "scratch" and "mlflow.source.name" in child.data.tags
    # A user lands on the runs, and the sweep links to its best model, loadable by timm.
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    model_files = {a.path for a in client.list_artifacts(parent.info.run_id, "model")}
    assert {"model/config.json", "model/model.safetensors", "model/trial_config.json"} <= model_files
    assert summary["best_run_id"] in parent.data.tags["model"]


def test_the_finished_sweep_registers_its_best_trial_as_a_logged_model_that_predicts_as_predict_does(
        crashed_smoke_sweep, smoke_sweep, tmp_path):
    from champion import check_champion
    from crash_story import REGISTERED
    from fake_images import jpeg

    summary, client, _ = smoke_sweep
    output = "\n".join(crashed_smoke_sweep.resumed[1])
    assert f"registered as '{REGISTERED}' version 1, alias champion" in output
    parent = crashed_smoke_sweep.runs()[0][0].info.run_id
    model = client.download_artifacts(parent, "model", str(tmp_path))  # the timm-format export, as predict reads it
    images = tmp_path / "images"
    images.mkdir()
    for seed in range(4):
        (images / f"face{seed}.jpg").write_bytes(jpeg(seed, (40, 40)))
    check_champion(crashed_smoke_sweep.uri, REGISTERED, summary["best_run_id"], Path(model), images, tmp_path)


def test_best_trial_beats_the_majority_baseline(smoke_sweep):
    summary, client, _ = smoke_sweep
    experiment = client.get_experiment_by_name("celeba_backbones")
    parent = [r for r in client.search_runs([experiment.experiment_id]) if "mlflow.parentRunId" not in r.data.tags][0]
    best, baseline = parent.data.metrics["best/val/mean_accuracy"], parent.data.metrics["val/majority_accuracy"]
    assert best > baseline, (best, baseline)


def test_the_named_best_run_is_the_best_child_by_the_sweeps_metric(smoke_sweep):
    """The winner recomputed from the child runs' own last values, by the sweep's metric and mode."""
    import search_spaces

    summary, client, _ = smoke_sweep
    sweep = search_spaces.get("celeba_backbones")(real_data=False, smoke=True)
    experiment = client.get_experiment_by_name("celeba_backbones")
    values = {r.info.run_id: r.data.metrics[sweep.metric] for r in client.search_runs([experiment.experiment_id])
              if "mlflow.parentRunId" in r.data.tags}
    best = (max if sweep.mode == "max" else min)(values.values())
    assert summary["best_run_id"] in {run for run, value in values.items() if value == best}, (summary, values)
    assert summary["best_value"] == pytest.approx(best)


def test_logged_macro_f1_is_recomputed_by_sklearn_from_the_run_files(smoke_sweep, tmp_path):
    import json

    import numpy as np
    import pandas as pd
    from mlflow.artifacts import download_artifacts
    from sklearn.metrics import f1_score

    summary, client, _ = smoke_sweep
    run_id = summary["best_run_id"]
    folder = download_artifacts(run_id=run_id, dst_path=str(tmp_path), tracking_uri=client.tracking_uri)
    thresholds = json.loads(open(f"{folder}/thresholds.json").read())
    test = pd.read_parquet(f"{folder}/predictions/test.parquet")
    logged = client.get_run(run_id).data.metrics
    for strategy in ("fixed", "f1_opt"):
        names = list(thresholds[strategy])
        scores = test[[f"score/{n}" for n in names]].to_numpy()
        labels = test[[f"label/{n}" for n in names]].to_numpy()
        predicted = scores >= np.array([thresholds[strategy][n] for n in names])
        macro = np.mean([f1_score(labels[:, j], predicted[:, j], zero_division=0) for j in range(len(names))])
        assert macro == pytest.approx(logged[f"test/{strategy}/macro_f1"], abs=1e-6)


def test_threshold_sweep_on_the_best_trials_stored_scores(local_ray, smoke_sweep, tmp_path):
    from pathlib import Path

    from mlflow.artifacts import download_artifacts

    from trainables.tasks.attributes.thresholds import evaluate_policy, load_predictions

    summary, client, tmp = smoke_sweep
    result = run_sweep(SweepOptions("celeba_thresholds", smoke=True, from_run=summary["best_run_id"],
                                    tracking_uri=client.tracking_uri, storage=str(tmp / "runs")))
    assert result["trials"] == 8 and result["failed"] == 0
    parent = client.get_run(client.get_run(result["best_run_id"]).data.tags["mlflow.parentRunId"])
    assert parent.data.tags["source_run"] == summary["best_run_id"]
    assert "best/test/macro_f1" in parent.data.metrics and "best/val/macro_f1" in parent.data.metrics
    # The logged best policy's numbers are recomputed from the source trial's stored files.
    folder = Path(download_artifacts(run_id=summary["best_run_id"], dst_path=str(tmp_path), tracking_uri=client.tracking_uri))
    config = result["best_metrics"]["config"]
    again = evaluate_policy(load_predictions(folder), config["policy.strategy"], config["policy.smoothing"],
                            config["policy.offset"])
    assert again["val/macro_f1"] == pytest.approx(parent.data.metrics["best/val/macro_f1"], abs=1e-6)
    assert again["test/macro_f1"] == pytest.approx(parent.data.metrics["best/test/macro_f1"], abs=1e-6)


def test_the_last_line_links_the_experiments_runs_view(crashed_smoke_sweep):
    lines = [line for line in crashed_smoke_sweep.resumed[1] if line.strip()]
    assert "/#/experiments/" in lines[-1] and lines[-1].split("#/experiments/")[1].split("/")[1].startswith("runs")
