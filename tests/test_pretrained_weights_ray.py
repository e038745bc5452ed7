"""The weights' report reaches MLflow: each child run's `weights.source` param, its `weights.*` tags
(written by the worker beside each checkpoint as weights.json, read by the driver) and that file."""

import pytest
from mlflow import MlflowClient

from hf_cache import random_weights
from orchestrator.sweep import SweepOptions, run_sweep

pytestmark = pytest.mark.ray


def test_scratch_trials_say_so(crashed_smoke_sweep):
    children = crashed_smoke_sweep.runs()[1]
    assert children
    for child in children:
        assert child.data.params["weights.source"] == "scratch"
        assert child.data.tags["weights.source"] == "scratch"
        files = {a.path for a in crashed_smoke_sweep.client.list_artifacts(child.info.run_id)}
        assert "weights.json" in files


def test_a_trial_from_a_weights_file_is_tagged_with_what_was_not_loaded(local_ray, tmp_path):
    from safetensors.torch import save_file

    file = tmp_path / "resnet18.safetensors"
    save_file(random_weights("resnet18", seed=0).state_dict(), str(file))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    summary = run_sweep(SweepOptions("celeba_backbones", smoke=True, storage=str(tmp_path / "runs"), tracking_uri=uri,
                                     num_workers=1, overrides=["model.name=resnet18", f"model.weights={file}",
                                                               "optim.epochs=1", "data.max_train_images=256"]))
    assert summary["trials"] == 1 and summary["failed"] == 0
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("celeba_backbones").experiment_id])
    child = next(r for r in runs if "mlflow.parentRunId" in r.data.tags)
    assert child.data.params["weights.source"] == f"file:{file}"
    assert child.data.tags["weights.source"] == f"file:{file}"
    assert child.data.tags["weights.not_loaded"] == "fc.weight, fc.bias"  # the 40-attribute head is new
    assert child.data.tags["weights.unused"] == "fc.bias, fc.weight"      # the file's 1000-class one
    assert "weights.json" in {a.path for a in client.list_artifacts(child.info.run_id)}
