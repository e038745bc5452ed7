"""Grad-CAM of a model that compares two photos (`TaskOutputs.compare`), for `predict --explain REF` and `serve`.

Such a model has no output of its own to explain; what it decides by is a pair's score (its `compare`). So the
map of photo A is the Grad-CAM of A's score against photo B, B's outputs held fixed (`inference.pair_grad_cam`):
where in A lies the evidence that raises that score. `predict --explain REF` explains every face
at --images against one of them, REF, into `explain/<REF stem>/`: an overlay per face and a grid.png whose first
tile is REF, each other tile captioned with what the pair shows. `serve` draws a pair's two overlays side by side.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from orchestrator.pictures import GRID_STEM, draw_grid, overlay, to_image, unique_stems, warn_if_coarse
from trainables.errors import UserError


def pair_lines(pair: dict) -> list[str]:
    """What a compared pair shows (`compare`'s sections) as caption lines: each item's score, then its decision."""
    return [text for part in pair["sections"] for item in part["items"]
            for text in (f"{item['name']} {item['score']:.2f}", item["decision"]) if text]


def write_pair_explanations(exported, reference: Path, kept: list[Path], outputs: np.ndarray, names: list[str],
                            limit: int, out: Path) -> Path:
    """explain/<REF stem>/<stem>.png: the first `limit` faces of `kept` but REF, each explained by its score
    against REF; grid.png: REF, then those overlays captioned with what each pair shows."""
    from trainables import inference

    if reference not in kept:
        raise UserError(f"the reference photo {reference.name} could not be decoded (see the warning above): "
                        "pass --explain another photo")
    ref = kept.index(reference)
    chosen = [i for i in range(len(kept)) if i != ref][:limit]
    folder = out / "explain" / unique_stems(kept)[ref]
    folder.mkdir(parents=True, exist_ok=True)
    faces = inference.load_faces(exported, [reference] + [kept[i] for i in chosen])
    tiles, notes = [to_image(faces[0])], [[names[ref], "reference"]]
    if chosen:
        cams, grid = inference.pair_grad_cam(exported, faces[1:], np.repeat(outputs[ref:ref + 1], len(chosen), 0))
        warn_if_coarse(exported, grid)
        for i, stem, face, cam in zip(chosen, unique_stems([kept[i] for i in chosen]), faces[1:], cams):
            image = overlay(face, cam)
            image.save(folder / f"{stem}.png")
            tiles.append(image)
            notes.append([names[i], *pair_lines(exported.outputs.compare(exported, outputs[i], outputs[ref]))])
    draw_grid(tiles, notes, folder / f"{GRID_STEM}.png")
    return folder


def pair_picture(exported, names: list[str], faces, outputs: np.ndarray, pair: dict, size: int = 256) -> bytes:
    """A PNG of the two photos' Grad-CAM overlays side by side (each explained against the other), captioned with
    the photo's name and what the pair shows."""
    from trainables import inference

    cams, _ = inference.pair_grad_cam(exported, faces, outputs[::-1])
    png = io.BytesIO()
    lines = pair_lines(pair)
    draw_grid([overlay(face, cam, size=size) for face, cam in zip(faces, cams)], [[name, *lines] for name in names],
              png, tile=size)
    return png.getvalue()
