"""`sweep my_sweep.yaml --smoke --set loss.name=bce,focal` on a local Ray: a sweep file outside the
package runs through Optuna, whose comma grid becomes a categorical choice, announced as such, and whose
`first:` points that still fit the space are its first trials."""

import math

import pytest
from mlflow import MlflowClient

from orchestrator.sweep import SweepOptions, run_sweep

pytestmark = pytest.mark.ray

SWEEP = """\
question: Does a focal loss beat BCE on my attributes?
task: attributes
metric: val/macro_f1
search: optuna
scheduler: none
samples: 4
workers_per_trial: 1
space:
  model.name: resnet18
  loss.name: {choice: [bce, asl]}
  optim.lr: {loguniform: [1e-3, 1e-2]}
  optim.epochs: 3
  optim.batch_size: 16
  data.image_size: 32
  data.augment: []
smoke:
  samples: 2
  optim.epochs: 1
  data.max_train_images: 256
first:
  - {loss.name: asl, optim.lr: 0.002}
  - {loss.name: bce, optim.lr: 0.005}
"""


def test_a_sweep_file_runs_with_an_optuna_grid_as_a_choice(local_ray, tmp_path, capsys, monkeypatch):
    (tmp_path / "my_sweep.yaml").write_text(SWEEP)
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    summary = run_sweep(SweepOptions("my_sweep.yaml", smoke=True, storage=str(tmp_path / "runs"), tracking_uri=uri,
                                     overrides=["loss.name=bce,focal"]))
    out = capsys.readouterr().out
    assert "Sweep my_sweep: Does a focal loss beat BCE on my attributes?" in out
    assert "each trial draws loss.name from bce, focal (a categorical choice)" in out
    # The file's first points: the asl one lies outside the space this --set leaves, the bce one is trial 1.
    assert ("the first trial is set: bce lr=0.005; Optuna draws the rest; 1 of the sweep's set first points is left "
            "out, outside this space (changed by --set, --data or --smoke)") in out, out
    assert summary["trials"] == 2 and summary["failed"] == 0, out
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("my_sweep").experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
    # Two trials run at once, so which one MLflow saw start first is a race; that one of the two is exactly the
    # set point is not (Optuna's draws never land on lr=0.005 with bce).
    points = sorted((c.data.params["loss.name"], float(c.data.params["optim.lr"])) for c in children)
    assert ("bce", 0.005) in points and points[0] != points[1], points
    for child in children:
        params = child.data.params
        assert params["loss.name"] in ("bce", "focal") and params["optim.epochs"] == "1"
        assert 1e-3 <= float(params["optim.lr"]) <= 1e-2
        assert math.isfinite(child.data.metrics["val/macro_f1"])
