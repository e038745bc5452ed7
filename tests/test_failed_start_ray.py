"""A start that fails after the sweep's records are written but before Tune has saved anything must not
block the same command: no "a sweep already exists", no MLflow "Changing param values is not allowed"."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient
from ray import tune

from orchestrator.sweep import SweepOptions, run_sweep

pytestmark = pytest.mark.ray


def test_the_same_command_runs_again_after_a_failed_start(local_ray, tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    reached = []

    def fit(tuner):
        reached.append(tuner)
        if len(reached) == 1:
            raise RuntimeError("the search algorithm refused the space")  # before any trial, as Optuna did
        raise KeyboardInterrupt  # the second start got as far as Tune: enough, stop here

    monkeypatch.setattr(tune.Tuner, "fit", fit)
    options = dict(smoke=True, storage=str(tmp_path / "runs"), tracking_uri=uri)
    with pytest.raises(RuntimeError, match="refused the space"):
        run_sweep(SweepOptions("celeba_losses", overrides=["loss.name=bce,focal,asl"], **options))
    with pytest.raises(KeyboardInterrupt):  # same sweep, other options: neither state nor MLflow refuses
        run_sweep(SweepOptions("celeba_losses", overrides=["loss.name=bce,focal"], **options))
    assert len(reached) == 2
    client = MlflowClient(uri)
    (parent,) = client.search_runs([client.get_experiment_by_name("celeba_losses").experiment_id])
    assert parent.info.status == "KILLED"  # the second start re-attached the failed start's parent run
