"""The deterministic face-recognition demo set: cartoon identities in an image folder plus LFW-style pairs.

Each identity is a fixed set of drawing parameters (face shape and size, eye spacing and size, brows,
nose, mouth, hair, colours of face/background/hair, and a few geometric marks). The colours and marks
are arbitrary visual codes, never an attempt to depict any real group. Each image of an identity
varies what varies in real photos: pose (rotation, shift, scale), expression (mouth curve, eye
openness), lighting (brightness, contrast, a directional gradient), sensor noise and, sometimes, an
occluding bar or patch. Images are 112x112 JPEGs:
  root/train/<id>/<n>.jpg                   training identities (identity-folder layout)
  root/lfw/<name>/<name>_%04d.jpg           held-out identities, never in train
  root/lfw/pairs.txt                        LFW's exact pairs format (10 folds, matched then mismatched)
As in LFW's View 2, the ten folds use disjoint identities. `ensure_demo_faces` builds a set once
under a cache folder, atomically.
"""

from __future__ import annotations

import colorsys
import math
import pathlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from trainables.data.demo.build_once import build_once

SIZE = 112
N_FOLDS = 10  # LFW's pairs.txt always has ten folds
FOLDER_VERSION = "v1"  # bump when the renderer changes, so cached sets are rebuilt
_MARK_KINDS = ("circle", "square", "triangle", "bar")


@dataclass(frozen=True)
class Identity:
    """The fixed drawing parameters of one synthetic identity (canonical 112x112 coordinates)."""

    background: tuple[int, int, int]
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    face_rx: float
    face_ry: float
    hair_style: int  # 0 none, 1 cap, 2 side fringe, 3 tall crest
    eye_dx: float
    eye_y: float
    eye_rx: float
    eye_ry: float
    iris: tuple[int, int, int]
    brow_tilt: float
    brow_width: int
    nose_len: float
    nose_w: float
    mouth_w: float
    mouth_y: float
    mouth_curve: float
    mouth_color: tuple[int, int, int]
    marks: tuple[tuple[str, float, float, float, tuple[int, int, int]], ...]  # kind, x, y, size, colour


def _colour(rng: np.random.Generator, sat: tuple[float, float], val: tuple[float, float]) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(*sat), rng.uniform(*val))
    return int(r * 255), int(g * 255), int(b * 255)


def sample_identity(rng: np.random.Generator) -> Identity:
    marks = tuple(
        (str(rng.choice(_MARK_KINDS)), float(rng.uniform(-0.7, 0.7)), float(rng.uniform(-0.2, 0.6)),
         float(rng.uniform(3, 6.5)), _colour(rng, (0.6, 1.0), (0.3, 1.0)))
        for _ in range(int(rng.integers(1, 4)))
    )
    return Identity(
        background=_colour(rng, (0.2, 0.9), (0.25, 0.95)),
        skin=_colour(rng, (0.15, 0.6), (0.55, 0.95)),
        hair=_colour(rng, (0.3, 1.0), (0.1, 0.8)),
        face_rx=float(rng.uniform(27, 38)), face_ry=float(rng.uniform(33, 45)),
        hair_style=int(rng.integers(0, 4)),
        eye_dx=float(rng.uniform(9, 17)), eye_y=float(rng.uniform(-12, -2)),
        eye_rx=float(rng.uniform(3, 7)), eye_ry=float(rng.uniform(2, 4.5)),
        iris=_colour(rng, (0.5, 1.0), (0.1, 0.7)),
        brow_tilt=float(rng.uniform(-0.35, 0.35)), brow_width=int(rng.integers(1, 4)),
        nose_len=float(rng.uniform(5, 14)), nose_w=float(rng.uniform(3, 8)),
        mouth_w=float(rng.uniform(8, 24)), mouth_y=float(rng.uniform(12, 23)),
        mouth_curve=float(rng.uniform(-5, 5)), mouth_color=_colour(rng, (0.4, 1.0), (0.2, 0.8)),
        marks=marks,
    )


def _draw_face(ident: Identity, rng: np.random.Generator) -> Image.Image:
    """The identity drawn frontal and centred, with this image's expression."""
    img = Image.new("RGB", (SIZE, SIZE), ident.background)
    d = ImageDraw.Draw(img)
    cx, cy = SIZE / 2, SIZE / 2 + 4
    rx, ry = ident.face_rx, ident.face_ry
    if ident.hair_style == 3:
        d.rectangle([cx - rx * 0.5, cy - ry - 12, cx + rx * 0.5, cy - ry * 0.5], fill=ident.hair)
    d.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=ident.skin)
    if ident.hair_style == 1:
        d.chord([cx - rx, cy - ry, cx + rx, cy + ry * 0.2], 180, 360, fill=ident.hair)
    elif ident.hair_style == 2:
        d.pieslice([cx - rx, cy - ry, cx + rx, cy + ry], 190, 300, fill=ident.hair)
    for kind, mx, my, size, colour in ident.marks:
        x, y = cx + mx * rx, cy + my * ry
        box = [x - size, y - size, x + size, y + size]
        if kind == "circle":
            d.ellipse(box, fill=colour)
        elif kind == "square":
            d.rectangle(box, fill=colour)
        elif kind == "triangle":
            d.polygon([(x, y - size), (x - size, y + size), (x + size, y + size)], fill=colour)
        else:
            d.rectangle([x - size * 1.6, y - size * 0.4, x + size * 1.6, y + size * 0.4], fill=colour)
    openness = rng.uniform(0.45, 1.15)  # blinks and squints
    for side in (-1, 1):
        ex, ey = cx + side * ident.eye_dx, cy + ident.eye_y
        erx, ery = ident.eye_rx, max(ident.eye_ry * openness, 0.8)
        d.ellipse([ex - erx, ey - ery, ex + erx, ey + ery], fill=(245, 245, 245))
        ir = min(erx, ery) * 0.8
        d.ellipse([ex - ir, ey - ir, ex + ir, ey + ir], fill=ident.iris)
        by = ey - ident.eye_ry - 4
        tilt = side * ident.brow_tilt * erx
        d.line([(ex - erx - 1, by + tilt), (ex + erx + 1, by - tilt)], fill=ident.hair, width=ident.brow_width)
    nose_top = cy + ident.eye_y + 4
    d.line([(cx, nose_top), (cx - ident.nose_w / 2, nose_top + ident.nose_len),
            (cx + ident.nose_w / 2, nose_top + ident.nose_len)], fill=_shade(ident.skin, 0.6), width=2)
    curve = ident.mouth_curve + rng.uniform(-2.5, 2.5)  # expression
    mx0, mx1, my = cx - ident.mouth_w / 2, cx + ident.mouth_w / 2, cy + ident.mouth_y
    d.line([(mx0, my), (cx, my + curve), (mx1, my)], fill=ident.mouth_color, width=3, joint="curve")
    return img


def _shade(colour: tuple[int, int, int], k: float) -> tuple[int, int, int]:
    return tuple(int(min(255, c * k)) for c in colour)  # type: ignore[return-value]


def _pose(img: Image.Image, ident: Identity, rng: np.random.Generator) -> Image.Image:
    """A small random similarity transform (rotation, scale, shift) about the image centre."""
    angle = math.radians(rng.uniform(-12, 12))
    scale = rng.uniform(0.9, 1.1)
    tx, ty = rng.uniform(-5, 5, size=2)
    c = SIZE / 2
    # PIL's AFFINE maps output pixels to input pixels, so give it the inverse transform.
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    a, b, d, e = cos, sin, -sin, cos
    coeffs = (a, b, c - a * (c + tx) - b * (c + ty), d, e, c - d * (c + tx) - e * (c + ty))
    return img.transform(img.size, Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR,
                         fillcolor=ident.background)


def _occlude(img: Image.Image, rng: np.random.Generator) -> None:
    """Sometimes an occluder: a bar across the face (hand, scarf, glasses frame) or a patch."""
    if rng.uniform() >= 0.3:
        return
    d = ImageDraw.Draw(img)
    colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
    if rng.uniform() < 0.5:
        width, pos = rng.uniform(7, 18), rng.uniform(25, 87)
        box = [0, pos, SIZE, pos + width] if rng.uniform() < 0.5 else [pos, 0, pos + width, SIZE]
    else:
        w, h = rng.uniform(18, 36, size=2)
        x, y = rng.uniform(10, SIZE - 10 - w), rng.uniform(10, SIZE - 10 - h)
        box = [x, y, x + w, y + h]
    d.rectangle(box, fill=colour)  # type: ignore[arg-type]


def _light(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Brightness, contrast, white balance, a directional light gradient and sensor noise."""
    x = np.asarray(img, dtype=np.float32)
    mean = x.mean()
    x = (x - mean) * rng.uniform(0.7, 1.3) + mean * rng.uniform(0.7, 1.25)
    x *= rng.uniform(0.85, 1.15, size=3).astype(np.float32)  # white balance: colour alone is not enough
    gx, gy = rng.uniform(-35, 35, size=2)
    ramp = np.linspace(-0.5, 0.5, SIZE, dtype=np.float32)
    x += (gx * ramp[None, :] + gy * ramp[:, None])[:, :, None]
    x += rng.normal(0.0, rng.uniform(2, 9), size=x.shape).astype(np.float32)
    return Image.fromarray(np.clip(x, 0, 255).astype(np.uint8))


def render_image(ident: Identity, rng: np.random.Generator) -> Image.Image:
    """One photo of `ident`: expression, pose, occlusion, then lighting and noise."""
    img = _pose(_draw_face(ident, rng), ident, rng)
    _occlude(img, rng)
    return _light(img, rng)


def identity_params(seed: int, index: int) -> Identity:
    return sample_identity(np.random.default_rng([seed, 0, index]))


def _image_rng(seed: int, index: int, n: int) -> np.random.Generator:
    return np.random.default_rng([seed, 1, index, n])


def lfw_name(j: int) -> str:
    return f"Synthetic_Person_{j + 1:04d}"


def _pairs_lines(names: list[str], images: int, pairs_per_fold: int, rng: np.random.Generator) -> list[str]:
    """LFW's pairs.txt body; fold k draws from its own identities (names[k::10]), as LFW's folds do."""
    lines = []
    for k in range(N_FOLDS):
        fold_names = names[k::N_FOLDS]
        matched: set[tuple[str, int, int]] = set()
        while len(matched) < pairs_per_fold:
            n1, n2 = sorted(rng.choice(images, size=2, replace=False) + 1)
            matched.add((str(rng.choice(fold_names)), int(n1), int(n2)))
        mismatched: set[tuple[str, int, str, int]] = set()
        while len(mismatched) < pairs_per_fold:
            a, b = sorted(rng.choice(fold_names, size=2, replace=False))
            mismatched.add((str(a), int(rng.integers(images)) + 1, str(b), int(rng.integers(images)) + 1))
        lines += ["\t".join(map(str, p)) for p in sorted(matched)]
        lines += ["\t".join(map(str, p)) for p in sorted(mismatched)]
    return lines


def write_demo_faces(root, num_identities: int = 100, images_per_identity: int = 20, verify_identities: int = 40,
                     pairs_per_fold: int = 30, seed: int = 0) -> pathlib.Path:
    """Write the demo set under `root` (see the module docstring); returns `root`."""
    if verify_identities < 2 * N_FOLDS:
        raise ValueError(f"verify_identities must be >= {2 * N_FOLDS} (two identities per fold), got {verify_identities}")
    if images_per_identity < 2:
        raise ValueError("images_per_identity must be >= 2 for matched pairs")
    per_fold = verify_identities // N_FOLDS
    max_matched = per_fold * images_per_identity * (images_per_identity - 1) // 2
    max_mismatched = per_fold * (per_fold - 1) // 2 * images_per_identity ** 2
    if pairs_per_fold > min(max_matched, max_mismatched):
        raise ValueError(f"pairs_per_fold={pairs_per_fold} needs more verify identities or images per identity")
    root = pathlib.Path(root)
    for i in range(num_identities):
        folder = root / "train" / f"id{i:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        ident = identity_params(seed, i)
        for n in range(images_per_identity):
            render_image(ident, _image_rng(seed, i, n)).save(folder / f"{n:03d}.jpg", quality=90)
    names = [lfw_name(j) for j in range(verify_identities)]
    for j, name in enumerate(names):
        folder = root / "lfw" / name
        folder.mkdir(parents=True, exist_ok=True)
        index = num_identities + j  # held-out identities continue the index: never a train identity
        ident = identity_params(seed, index)
        for n in range(1, images_per_identity + 1):
            render_image(ident, _image_rng(seed, index, n)).save(folder / f"{name}_{n:04d}.jpg", quality=90)
    lines = _pairs_lines(names, images_per_identity, pairs_per_fold, np.random.default_rng([seed, 2]))
    (root / "lfw" / "pairs.txt").write_text(f"{N_FOLDS}\t{pairs_per_fold}\n" + "\n".join(lines) + "\n")
    return root


def ensure_demo_faces(cache_dir, num_identities: int = 100, images_per_identity: int = 20,
                      verify_identities: int = 40, pairs_per_fold: int = 30, seed: int = 0) -> tuple[pathlib.Path, bool]:
    """Build the demo set once under `cache_dir`; returns (root, created_now).

    The set is written into a temporary sibling and renamed into place, so an interrupted build or
    two racing processes never leave a half-written set under the final name.
    """
    params = {"num_identities": num_identities, "images_per_identity": images_per_identity,
              "verify_identities": verify_identities, "pairs_per_fold": pairs_per_fold, "seed": seed}
    final = pathlib.Path(cache_dir) / (f"faces_demo-i{num_identities}-n{images_per_identity}-v{verify_identities}"
                                       f"-p{pairs_per_fold}-s{seed}-{FOLDER_VERSION}")
    return build_once(final, lambda folder: write_demo_faces(folder, **params), {**params, "version": FOLDER_VERSION})
