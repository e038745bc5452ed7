"""A face-recognition model on Ray Serve: POST /predict takes exactly two photos and answers their cosine
similarity and same/different at the exported threshold; POST /gradcam takes the same two and answers both
photos' Grad-CAM overlays side by side, and the page offers it for the pair. One photo or three is a 400 with one
sentence, and the server goes on serving. One Serve instance for this module (tests/serve_fixtures.py)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import requests
from PIL import Image

from browser import Chromium, needs_browser
from serve_fixtures import dense_cam_export, post, serving

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def model(recognition_exported, tmp_path_factory):
    out, _, root, _ = recognition_exported
    return dense_cam_export(out, tmp_path_factory.mktemp("serve-recognition") / "model"), root


@pytest.fixture(scope="module")
def served(local_ray, model):
    with serving({"recognition": model[0]}) as url:
        yield f"{url}/recognition"


def faces(root, n: int):
    paths = sorted((root / "lfw").rglob("*.jpg"))[:n]
    return [(p.name, p.read_bytes()) for p in paths], paths


def needs_exactly_two(url: str, sent: list) -> None:
    """One photo, and three, are each a 400 with one sentence saying so; two are answered after them."""
    for photos in (sent[:1], sent):
        refused = post(url, photos)
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert "exactly two" in error and f"has {len(photos)}" in error and error.count(". ") == 0, error
    assert post(url, sent[1:]).status_code == 200  # still serving


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

    needs_exactly_two(f"{served}/predict", sent)
    assert requests.get(f"{served}/info", timeout=30).json()["pair"] is True
    assert "Choose exactly two photos" in requests.get(f"{served}/", timeout=30).text  # the page says so


def test_gradcam_of_a_pair_draws_both_photos_and_needs_exactly_two(served, model):
    from orchestrator.pictures import PAD, overlay
    from trainables.inference import load_exported, load_faces, pair_grad_cam, predict_faces

    folder, root = model
    sent, paths = faces(root, 3)
    answer = post(f"{served}/gradcam", sent[:2])
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png", answer.text
    with Image.open(io.BytesIO(answer.content)) as picture:
        assert picture.size[0] == 2 * 256 + 3 * PAD and picture.size[1] > 256  # two overlays, a caption under
        left = np.asarray(picture.convert("RGB").crop((PAD, PAD, PAD + 256, PAD + 256)), dtype=np.float32)

    exported = load_exported(folder, device="cpu")  # the left tile is photo A's map against B
    shown = load_faces(exported, paths[:2])
    cams, _ = pair_grad_cam(exported, shown, predict_faces(exported, shown)[::-1])
    expected = np.asarray(overlay(shown[0], cams[0], size=256), dtype=np.float32)
    assert np.abs(left - expected).mean() < 2

    needs_exactly_two(f"{served}/gradcam", sent)


@needs_browser
def test_the_page_offers_grad_cam_for_the_pair(served, model, tmp_path):
    from orchestrator.pictures import PAD

    _, paths = faces(model[1], 2)
    with Chromium(tmp_path / "profile") as page:
        page.open(f"{served}/")
        page.wait_for("document.getElementById('info').textContent.includes('Choose exactly two')")
        page.choose_files("#images", paths)
        page.evaluate("document.querySelector('#upload button').click()")
        page.wait_for("document.getElementById('results').dataset.done === '2'")
        assert page.evaluate("document.querySelectorAll('.gradcam').length") == 1
        assert page.evaluate("document.querySelectorAll('#pair .output').length") == 0  # no output to choose
        page.evaluate("document.querySelector('#pair .gradcam').click()")
        page.wait_for(f"document.querySelector('#pair .cam img').naturalWidth === {2 * 256 + 3 * PAD}")
        assert page.evaluate("document.querySelector('#pair .cam img').alt") == "Grad-CAM of the pair"
        assert page.evaluate("document.getElementById('error').textContent") == ""
