"""What a person finds in MLflow: experiments open on their runs, runs carry MLflow's source tags and
the dataset they trained on as an input."""

from __future__ import annotations

import json

from mlflow import MlflowClient

from orchestrator.tracking import EXPERIMENT_KIND_KEY, MODEL_TRAINING, DatasetRecord, Tracking


def test_experiments_are_model_training_and_runs_have_sources_and_inputs(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracking = Tracking(uri)
    experiment = tracking.experiment_id("celeba_backbones")
    client = MlflowClient(uri)
    assert client.get_experiment(experiment).tags[EXPERIMENT_KIND_KEY] == MODEL_TRAINING
    client.set_experiment_tag(experiment, EXPERIMENT_KIND_KEY, "genai_development")  # an old one, retagged
    assert tracking.experiment_id("celeba_backbones") == experiment
    assert client.get_experiment(experiment).tags[EXPERIMENT_KIND_KEY] == MODEL_TRAINING

    run_id, created = tracking.find_or_create_run(experiment, {"orchestrator.sweep_path": str(tmp_path)}, "sweep", {})
    assert created
    tags = client.get_run(run_id).data.tags
    assert tags["mlflow.source.type"] == "LOCAL" and tags["mlflow.source.name"] and tags["mlflow.user"]

    record = DatasetRecord("s3://KEY:SECRET@bucket/celeba-shards", "0123abcd", "celeba",
                           {"train": 160, "val": 20, "test": 20})
    tracking.log_dataset(run_id, record)
    (inp,) = client.get_run(run_id).inputs.dataset_inputs
    assert inp.dataset.name == "celeba-shards" and inp.dataset.digest == "0123abcd"
    assert inp.dataset.source_type == "s3" and "SECRET" not in inp.dataset.source
    assert json.loads(inp.dataset.profile)["splits"] == {"train": 160, "val": 20, "test": 20}
    assert {t.key: t.value for t in inp.tags}["mlflow.data.context"] == "training"

    assert tracking.runs_url(experiment).startswith(f"http://127.0.0.1:5000/#/experiments/{experiment}/runs")
    served = Tracking.__new__(Tracking)
    served.uri = "http://mlflow-host:5000/"
    assert served.runs_url("7") == "http://mlflow-host:5000/#/experiments/7/runs"


def test_the_write_check_leaves_one_deleted_run_that_ended(tmp_path):
    """The pre-run check's scratch run is in MLflow's deleted runs (its UI's trash), ended, not RUNNING."""
    from mlflow.entities import ViewType

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracking = Tracking(uri)
    tracking.check_writable("celeba_backbones")
    client = MlflowClient(uri)
    experiment = tracking.experiment_id("celeba_backbones")
    assert client.search_runs([experiment]) == []
    (scratch,) = client.search_runs([experiment], run_view_type=ViewType.DELETED_ONLY)
    assert scratch.info.status == "FINISHED" and scratch.data.params == {"preflight": "ok"}
