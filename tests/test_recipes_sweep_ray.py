"""A smoke sweep over `model.freeze` x `optim.ema` (issue 22) from a sweep file on a local Ray: every child
run holds its recipe's params, its trainable parameter count and its best-evaluation summary."""

import math

import pytest
from mlflow import MlflowClient

from orchestrator.sweep import SweepOptions, run_sweep

pytestmark = pytest.mark.ray

SWEEP = """\
question: Does a frozen backbone or an EMA of the weights help my attributes?
task: attributes
metric: val/macro_f1
search: basic
scheduler: none
samples: 1
workers_per_trial: 1
space:
  model.name: resnet18
  model.freeze: {grid: [none, backbone]}
  optim.ema: {grid: [0.0, 0.9]}
  optim.accum_steps: 2
  optim.patience: 5
  optim.epochs: 2
  optim.batch_size: 16
  data.image_size: 32
  data.augment: []
smoke:
  data.max_train_images: 128
"""


def test_a_freeze_by_ema_sweep_records_params_and_best_metrics(local_ray, tmp_path, capsys, monkeypatch):
    (tmp_path / "recipes.yaml").write_text(SWEEP)
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    summary = run_sweep(SweepOptions("recipes.yaml", smoke=True, storage=str(tmp_path / "runs"), tracking_uri=uri))
    out = capsys.readouterr().out
    assert summary["trials"] == 4 and summary["failed"] == 0, out
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("recipes").experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 4 and all(c.info.status == "FINISHED" for c in children)
    recipes = {(c.data.params["model.freeze"], float(c.data.params["optim.ema"])) for c in children}
    assert recipes == {("none", 0.0), ("none", 0.9), ("backbone", 0.0), ("backbone", 0.9)}
    trainable = {}
    for child in children:
        metrics, params = child.data.metrics, child.data.params
        assert params["optim.accum_steps"] == "2" and metrics["optim/effective_batch"] == 32
        trainable.setdefault(params["model.freeze"], set()).add(metrics["model/trainable_params"])
        history = client.get_metric_history(child.info.run_id, "val/macro_f1")
        best = max(history, key=lambda m: m.value)
        assert metrics["best/val/macro_f1"] == pytest.approx(best.value) and metrics["best/step"] == best.step
        assert math.isfinite(metrics["best/train/loss"])
    assert max(trainable["backbone"]) < min(trainable["none"])  # only the head trains
