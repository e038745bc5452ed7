"""Face recognition exported, loaded back, predicted and compared: a tiny in-process trial (tests/trial_fixtures.py)
whose verification files give the exported threshold, recomputed here by hand."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch


@pytest.fixture(scope="module")
def exported(recognition_exported):
    return recognition_exported


def by_hand(table: pd.DataFrame) -> tuple[float, float]:
    """The pooled best-accuracy threshold, the slow way: every candidate of arange(0, 4, 0.01), first best wins."""
    best, best_accuracy = 0.0, -1.0
    for t in np.arange(0, 4, 0.01):
        accuracy = np.mean((table["distance"].to_numpy() < t) == table["issame"].to_numpy())
        if accuracy > best_accuracy:
            best, best_accuracy = float(t), float(accuracy)
    return best, best_accuracy


def test_export_carries_the_threshold_of_the_verification_pairs(exported):
    out, trial, _, summary = exported
    rule = json.loads((out / "verification_threshold.json").read_text())
    table = pd.read_parquet(trial["folders"][summary["epoch"] - 1] / "verification" / "lfw.parquet")
    threshold, accuracy = by_hand(table)
    assert rule["target"] == "lfw" and rule["pairs"] == len(table) == 40
    assert rule["distance"] == pytest.approx(threshold, abs=1e-12) and rule["accuracy"] == pytest.approx(accuracy)
    assert rule["similarity"] == pytest.approx(1 - threshold / 2, abs=1e-12)
    assert json.loads((out / "labels.json").read_text())["outputs"] == [f"embedding/{i}" for i in range(32)]
    assert "verification_threshold.json" in (out / "MODEL_CARD.md").read_text()


def test_loaded_model_gives_the_trials_own_distances(exported):
    """The exported model's embeddings give every verification pair the distance the trial recorded."""
    from trainables.data.decode import decode_shard_image
    from trainables.data.formats.lfw_pairs import read_lfw_pairs
    from trainables.inference import load_exported, predict_faces

    out, trial, root, summary = exported
    model = load_exported(out, device="cpu")
    pairs = read_lfw_pairs(root / "lfw")
    faces = lambda paths: torch.stack([decode_shard_image(p.read_bytes(), 112, str(p), square=True) for p in paths])
    left, right = predict_faces(model, faces(pairs.left)), predict_faces(model, faces(pairs.right))
    np.testing.assert_allclose(np.linalg.norm(left, axis=1), 1.0, atol=1e-5)
    table = pd.read_parquet(trial["folders"][summary["epoch"] - 1] / "verification" / "lfw.parquet")
    distances = np.sum((left.astype(np.float64) - right) ** 2, axis=1)
    # Distances that all round to one value would let a wrong model pass the comparison below.
    assert np.ptp(distances) > 0.1, f"the fixture's model maps faces to near-identical embeddings: {distances}"
    np.testing.assert_allclose(distances, table["distance"].to_numpy(), atol=1e-4)
    for a, b, d in zip(left, right, distances):
        result = model.outputs.compare(model, a, b)
        assert result["similarity"] == pytest.approx(1 - d / 2, abs=1e-5)
        assert result["same"] == (result["similarity"] > result["threshold"])


def test_predict_writes_each_photos_embedding(exported, tmp_path):
    from orchestrator.predict import run_predict
    from trainables.inference import load_exported, load_faces, predict_faces

    out, _, root, _ = exported
    folder = root / "lfw" / sorted(p.name for p in (root / "lfw").iterdir() if p.is_dir())[0]
    run_predict(out, folder, tmp_path / "pred")
    table = pd.read_csv(tmp_path / "pred" / "predictions.csv")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    assert len(table) == len(paths) and [c for c in table.columns if c.startswith("embedding/")] == [
        f"embedding/{i}" for i in range(32)]
    model = load_exported(out, device="cpu")
    ours = predict_faces(model, load_faces(model, paths))
    np.testing.assert_allclose(table[[f"embedding/{i}" for i in range(32)]].to_numpy(), ours, atol=1e-5)
