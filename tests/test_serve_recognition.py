"""A face-recognition model on Ray Serve: POST /predict takes exactly two photos and answers their cosine
similarity and same/different at the exported threshold; one photo or three is a 400 with one sentence, and the
server goes on serving. One Serve instance for this module (tests/serve_fixtures.py)."""

from __future__ import annotations

import numpy as np
import pytest
import requests

from serve_fixtures import post, recognition_export, serving

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def model(tmp_path_factory, mlflow_uri):
    out, _, root, _ = recognition_export(tmp_path_factory.mktemp("serve-recognition"), mlflow_uri)
    return out, root


@pytest.fixture(scope="module")
def served(local_ray, model):
    with serving({"recognition": model[0]}) as url:
        yield f"{url}/recognition"


def faces(root, n: int):
    paths = sorted((root / "lfw").rglob("*.jpg"))[:n]
    return [(p.name, p.read_bytes()) for p in paths], paths


def test_two_photos_give_their_similarity_and_a_decision_and_bad_counts_are_refused(served, model):
    from trainables.inference import load_exported, load_faces, predict_faces

    folder, root = model
    sent, paths = faces(root, 3)
    answer = post(f"{served}/predict", sent[:2])
    assert answer.status_code == 200, answer.text
    pair = answer.json()["pair"]

    exported = load_exported(folder, device="cpu")
    a, b = predict_faces(exported, load_faces(exported, paths[:2])).astype(np.float64)
    cosine = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    assert pair["similarity"] == pytest.approx(cosine, abs=1e-5)
    assert pair["threshold"] == pytest.approx(exported.outputs.compare(exported, a, b)["threshold"])
    assert pair["same"] == (pair["similarity"] > pair["threshold"]) and pair["target"] == "lfw"
    assert pair["sections"][0]["items"][0]["decision"] in ("same person", "different people")

    for photos in (sent[:1], sent):
        refused = post(f"{served}/predict", photos)
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert "exactly two" in error and f"has {len(photos)}" in error and error.count(". ") == 0, error
    assert post(f"{served}/predict", sent[1:]).status_code == 200  # still serving
    assert requests.get(f"{served}/info", timeout=30).json()["pair"] is True
    assert "Choose exactly two photos" in requests.get(f"{served}/", timeout=30).text  # the page says so
