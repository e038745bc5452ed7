"""The check that a registered champion is the best trial's LoggedModel and predicts as `predict` does:
shared by `export --register` (test_logged_model.py) and the smoke sweep's `--register` (test_sweep_ray.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from mlflow import MlflowClient


def check_champion(uri: str, name: str, best_run: str, export: Path, images, tmp_path) -> None:
    """The LoggedModel is linked to `best_run` with its metrics, `champion` resolves to it, and the pyfunc
    model's scores are predict's score/ columns on the same images (to 1e-5)."""
    import mlflow
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    from orchestrator.predict import run_predict
    from trainables import inference

    client = MlflowClient(uri)
    run = client.get_run(best_run)
    models = client.search_logged_models([run.info.experiment_id], filter_string=f"source_run_id = '{best_run}'")
    version = client.get_model_version_by_alias(name, "champion")
    model = next(m for m in models if version.source == f"models:/{m.model_id}")
    assert str(model.status) == "READY" and version.run_id == best_run
    assert {m.key for m in model.metrics} >= {"val/mean_accuracy"}  # the chosen epoch's metrics, linked to it
    assert all(m.model_id == model.model_id and m.step == int(model.tags["epoch"]) for m in model.metrics)
    assert model.model_id in {o.model_id for o in run.outputs.model_outputs}

    paths = inference.find_images(images)[:6]
    table = pd.read_csv(Path(run_predict(export, images, tmp_path / "predicted", limit=1)["out"]) / "predictions.csv")
    table = table.set_index("file").loc[[p.name for p in paths]]
    exported = inference.load_exported(export, device="cpu")
    pixels = inference.load_faces(exported, paths).numpy().astype(np.float32) / 255
    with _use_tracking_uri(uri):
        scores = mlflow.pyfunc.load_model(f"models:/{name}@champion").predict(pixels)
    expected = table[[f"score/{n}" for n in exported.output_names]].to_numpy()
    assert scores.shape == expected.shape and np.abs(scores - expected).max() < 1e-5
