"""Grad-CAM of a face-recognition pair: the map of photo A is that of the cosine similarity of A's embedding to B's
(held fixed), through the whole flip-summed embedding, its two passes' maps averaged on the photo. Checked in
process on a tiny export (tests/serve_fixtures.py, with weights whose maps are dense) against torch autograd by
hand, and `predict --explain REF` as a person runs it."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from serve_fixtures import dense_cam_export


@pytest.fixture(scope="module")
def exported(recognition_exported, tmp_path_factory):
    out, _, root, _ = recognition_exported
    return dense_cam_export(out, tmp_path_factory.mktemp("dense-cam") / "model"), root


def people(root, n: int = 2, each: int = 2) -> list:
    """`each` photos of each of the first `n` held-out identities."""
    folders = sorted(p for p in (root / "lfw").iterdir() if p.is_dir())[:n]
    return [path for folder in folders for path in sorted(folder.glob("*.jpg"))[:each]]


def by_hand(model, a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Grad-CAM of cos(model(A), model(B) held fixed) from the feature maps the model's own forward makes (a hook
    catches both passes: A, then A mirrored), the mirrored pass's map flipped back and the two averaged."""
    net, maps = model.model.net, []
    hook = net.backbone.conv_head.register_forward_hook(lambda module, inputs, output: maps.append(output))
    try:
        with torch.no_grad():
            fixed = model.model(model.pipe(b[None]))
        maps.clear()
        with torch.enable_grad():
            similarity = F.cosine_similarity(model.model(model.pipe(a[None])), fixed)[0]
            plain, mirrored = maps
            grads = torch.autograd.grad(similarity, [plain, mirrored])
    finally:
        hook.remove()
    plain_cam, mirrored_cam = ((g.mean(dim=(2, 3), keepdim=True) * f).sum(dim=1) for g, f in zip(grads, maps))
    cam = F.relu((plain_cam + torch.flip(mirrored_cam, dims=[2])) / 2)[:, None].detach()
    cam = (cam - cam.min()) / (cam.max() - cam.min())
    return F.interpolate(cam, size=a.shape[-2:], mode="bilinear", align_corners=False)[0, 0].numpy()


def test_pair_maps_depend_on_the_pair_and_equal_autograd_by_hand(exported):
    from trainables import inference

    out, root = exported
    model = inference.load_exported(out, device="cpu")
    faces = inference.load_faces(model, people(root, 3, 1))  # three people: A, B and C
    outputs = inference.predict_faces(model, faces)
    cams, grid = inference.pair_grad_cam(model, faces[:2], outputs[[1, 0]])  # A against B, B against A
    assert cams.shape == (2, 112, 112) and grid == (7, 7)
    assert cams.min() >= 0 and cams.max() <= 1 and (cams.reshape(2, -1).max(axis=1) > 0.9).all()
    np.testing.assert_allclose(cams[0], by_hand(model, faces[0], faces[1]), atol=1e-4)
    np.testing.assert_allclose(cams[1], by_hand(model, faces[1], faces[0]), atol=1e-4)

    against_c, _ = inference.pair_grad_cam(model, faces[:1], outputs[2:3])
    assert np.abs(against_c[0] - cams[0]).max() > 0.1  # A's map is of the pair, not of A alone
    np.testing.assert_allclose(against_c[0], by_hand(model, faces[0], faces[2]), atol=1e-4)

    # the score explained is the similarity `compare` decides by
    with torch.no_grad():
        score, _ = model.outputs.explain_pair(model.model, model.pipe(faces[:1]), torch.from_numpy(outputs[1:2]))
    assert float(score) == pytest.approx(model.outputs.compare(model, outputs[0], outputs[1])["similarity"], abs=1e-5)


def predict(*args: str):
    return subprocess.run([sys.executable, "-m", "orchestrator", "predict", *map(str, args)],
                          capture_output=True, text=True, timeout=600)


def test_predict_explain_names_a_reference_photo(exported, tmp_path):
    from orchestrator.pictures import PAD, TILE

    out, root = exported
    folder = tmp_path / "faces"
    folder.mkdir()
    for path in people(root):  # two photos each of two people
        shutil.copy(path, folder / path.name)
    names = sorted(p.name for p in folder.iterdir())
    reference, others = names[0], names[1:]
    done = predict("--model", out, "--images", folder, "--out", tmp_path / "pred", "--explain", reference)
    assert done.returncode == 0, done.stderr
    assert f"Grad-CAM of the similarity to {reference}" in done.stdout
    explained = tmp_path / "pred" / "explain" / reference.split(".")[0]
    assert sorted(p.name for p in explained.iterdir()) == sorted([n.replace(".jpg", ".png") for n in others]
                                                                 + ["grid.png"])
    with Image.open(explained / "grid.png") as grid:  # the reference and three overlays, two by two
        assert grid.size[0] == PAD + 2 * (TILE + PAD)
    with Image.open(explained / others[0].replace(".jpg", ".png")) as image:
        assert image.size == (TILE, TILE)

    typo = reference.replace(".jpg", ".jpeg")
    wrong = predict("--model", out, "--images", folder, "--out", tmp_path / "wrong", "--explain", typo)
    errors = [line for line in wrong.stderr.splitlines() if line.startswith("error:")]
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr, wrong.stderr
    assert len(errors) == 1 and f"unknown photo '{typo}'" in errors[0] and reference in errors[0], errors
    assert not (tmp_path / "wrong").exists()  # refused before anything ran
