"""The deterministic demo dataset: cartoon faces written in CelebA's exact file layout.

Labels follow CelebA's real positive rates and its well-known correlations (a Gaussian copula);
each attribute except those in NO_CUE_ATTRIBUTES is drawn as a large cue that survives 64x64.
Identities carry fixed face parameters and never cross splits. `ensure_demo_celeba` builds a set
once into a cache folder, atomically, so the default sweep can run without any download.
"""

from __future__ import annotations

import functools
import io
import pathlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from scipy.special import ndtr, ndtri
from threadpoolctl import threadpool_limits

from trainables.data.demo.build_once import build_once
from trainables.data.formats.celeba import (ATTR_FILE, ATTRIBUTE_NAMES, IDENTITY_FILE, IMAGE_DIR,
                                    LANDMARKS_FILE, PARTITION_FILE)

# The published CelebA training-set positive rates (fraction of images labelled 1), approximate.
CELEBA_POSITIVE_RATES: dict[str, float] = {
    "5_o_Clock_Shadow": 0.111, "Arched_Eyebrows": 0.267, "Attractive": 0.513, "Bags_Under_Eyes": 0.205,
    "Bald": 0.022, "Bangs": 0.152, "Big_Lips": 0.241, "Big_Nose": 0.235, "Black_Hair": 0.239,
    "Blond_Hair": 0.148, "Blurry": 0.051, "Brown_Hair": 0.205, "Bushy_Eyebrows": 0.142, "Chubby": 0.058,
    "Double_Chin": 0.047, "Eyeglasses": 0.065, "Goatee": 0.063, "Gray_Hair": 0.042, "Heavy_Makeup": 0.387,
    "High_Cheekbones": 0.455, "Male": 0.417, "Mouth_Slightly_Open": 0.483, "Mustache": 0.042,
    "Narrow_Eyes": 0.115, "No_Beard": 0.835, "Oval_Face": 0.284, "Pale_Skin": 0.043, "Pointy_Nose": 0.277,
    "Receding_Hairline": 0.080, "Rosy_Cheeks": 0.066, "Sideburns": 0.057, "Smiling": 0.482,
    "Straight_Hair": 0.208, "Wavy_Hair": 0.320, "Wearing_Earrings": 0.189, "Wearing_Hat": 0.048,
    "Wearing_Lipstick": 0.472, "Wearing_Necklace": 0.123, "Wearing_Necktie": 0.073, "Young": 0.774,
}
# As in real photos, some labels have no visible cue; they stay partly predictable through correlations.
NO_CUE_ATTRIBUTES = frozenset({"Attractive", "Oval_Face", "Pointy_Nose", "Arched_Eyebrows", "High_Cheekbones"})

# Target phi coefficients between CelebA's binary labels (approximate): each line is an attribute,
# then partners and phi. Pairs not listed are left free for the positive-definite projection.
_CORRELATION_TABLE = """
Male: Heavy_Makeup -.67, Wearing_Lipstick -.79, Arched_Eyebrows -.39, Wearing_Earrings -.36, Attractive -.39,
  Wearing_Necklace -.22, Blond_Hair -.26, Wavy_Hair -.31, Rosy_Cheeks -.19, Young -.26, No_Beard -.52,
  Goatee .31, Mustache .25, Sideburns .29, 5_o_Clock_Shadow .42, Bald .18, Wearing_Necktie .33, Big_Nose .36,
  Bushy_Eyebrows .25, Receding_Hairline .18, Pointy_Nose -.15, Eyeglasses .15
No_Beard: Goatee -.56, Mustache -.47, Sideburns -.52, 5_o_Clock_Shadow -.42, Wearing_Lipstick .40, Heavy_Makeup .33
Goatee: Mustache .43, Sideburns .45
Mustache: Sideburns .33
Heavy_Makeup: Wearing_Lipstick .80, Attractive .48, Arched_Eyebrows .42, Wearing_Earrings .33, Rosy_Cheeks .22
Wearing_Lipstick: Attractive .48, Arched_Eyebrows .43, Wearing_Earrings .36, Wearing_Necklace .25, Wavy_Hair .34,
  5_o_Clock_Shadow -.33, Wearing_Necktie -.25
Wearing_Earrings: Wearing_Necklace .30
Smiling: High_Cheekbones .68, Mouth_Slightly_Open .53
High_Cheekbones: Mouth_Slightly_Open .42, Oval_Face .20
Young: Gray_Hair -.30, Bald -.17, Receding_Hairline -.22, Double_Chin -.30, Chubby -.29, Attractive .39,
  Bags_Under_Eyes -.25, Heavy_Makeup .23, Eyeglasses -.17, Big_Nose -.20
Bald: Receding_Hairline .18, Black_Hair -.04, Blond_Hair -.03, Brown_Hair -.03, Gray_Hair -.01
Chubby: Double_Chin .53
Black_Hair: Blond_Hair -.13, Brown_Hair -.15, Gray_Hair -.07
Blond_Hair: Brown_Hair -.12, Gray_Hair -.05
Brown_Hair: Gray_Hair -.06
Straight_Hair: Wavy_Hair -.33
Attractive: Oval_Face .28, Pointy_Nose .20, Big_Nose -.28, Bags_Under_Eyes -.28, Chubby -.20, Arched_Eyebrows .25
Big_Nose: Bags_Under_Eyes .27, Pointy_Nose -.20
"""
# Real hair colours are nearly exclusive (phi about -0.25), but a Gaussian copula cannot make five
# labels (with Bald) mutually exclusive: the hair lines hold the weaker values it reaches together.


def _parse_table(text: str) -> dict[tuple[str, str], float]:
    pairs = {}
    for block in text.replace("\n  ", " ").strip().splitlines():
        first, rest = block.split(":")
        for item in rest.split(","):
            other, value = item.split()
            pairs[(first, other)] = float(value)
    return pairs


TARGET_CORRELATIONS: dict[tuple[str, str], float] = _parse_table(_CORRELATION_TABLE)

_A = {name: i for i, name in enumerate(ATTRIBUTE_NAMES)}
_I, _J = (np.array([_A[pair[k]] for pair in TARGET_CORRELATIONS]) for k in (0, 1))
_RATES = np.array([CELEBA_POSITIVE_RATES[n] for n in ATTRIBUTE_NAMES])
FOLDER_VERSION = "v1"
_GAUSS_LEGENDRE = np.polynomial.legendre.leggauss(64)


def _both_above(a: np.ndarray, b: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """P(Z1 > a, Z2 > b) for standard bivariate normals with correlation rho (Gauss-Legendre)."""
    nodes, weights = _GAUSS_LEGENDRE
    x = a[:, None] + (nodes + 1) * 5.0  # [a, a + 10] holds all the mass above a
    inner = ndtr((rho[:, None] * x - b[:, None]) / np.sqrt(1 - rho[:, None] ** 2))
    return (np.exp(-x * x / 2) / np.sqrt(2 * np.pi) * inner) @ weights * 5.0


def reachable_correlations() -> np.ndarray:
    """TARGET_CORRELATIONS' values, each pulled in to 80% of the largest |phi| the two rates allow.

    Near that (Frechet) bound the latent correlation tends to +-1 and the pairs stop being jointly
    feasible: Male with Mustache, Goatee, Bald and 5_o_Clock_Shadow are at it in real CelebA.
    """
    odds, i, j = _RATES / (1 - _RATES), _I, _J
    phi = np.array(list(TARGET_CORRELATIONS.values()))
    ratio = odds[i] / odds[j]
    bound = np.sqrt(np.where(phi > 0, np.minimum(ratio, 1 / ratio),
                             np.minimum(odds[i] * odds[j], 1 / (odds[i] * odds[j]))))
    return np.sign(phi) * np.minimum(np.abs(phi), 0.8 * bound)


@functools.lru_cache(maxsize=1)
def _latent_model() -> tuple[np.ndarray, np.ndarray]:
    """(thresholds, latent correlation) so thresholded normals hit the target rates and phis."""
    p, i, j = _RATES, _I, _J
    thresholds = ndtri(1 - p)
    phi = reachable_correlations()
    want = phi * np.sqrt(p[i] * (1 - p[i]) * p[j] * (1 - p[j])) + p[i] * p[j]
    lo, hi = np.full(len(phi), -0.999), np.full(len(phi), 0.999)
    for _ in range(40):  # P(both) rises with rho: bisect the tetrachoric correlation
        mid = (lo + hi) / 2
        above = _both_above(thresholds[i], thresholds[j], mid) > want
        hi, lo = np.where(above, mid, hi), np.where(above, lo, mid)
    rho = (lo + hi) / 2

    def nearest_pd(m: np.ndarray) -> np.ndarray:
        w, v = np.linalg.eigh(m)
        m = (v * np.maximum(w, 1e-3)) @ v.T
        d = np.sqrt(np.diag(m))
        return m / d[:, None] / d[None, :]

    # The listed pairs need not be jointly feasible: alternate projections, letting the pairs
    # not listed absorb the implied correlations, then a final projection guarantees PD.
    # One BLAS thread: on a busy 2-core machine, thread hand-offs made each 40x40 eigh take 15 ms.
    corr = np.eye(len(p))
    with threadpool_limits(1):
        for _ in range(300):
            corr[i, j] = corr[j, i] = rho
            corr = nearest_pd(corr)
    return thresholds, np.round(corr, 12)  # so BLAS builds' last-bit differences cannot flip a label


def sample_attributes(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 40) uint8 labels with CelebA's rates and correlations, columns in ATTRIBUTE_NAMES order."""
    thresholds, corr = _latent_model()
    z = rng.standard_normal((n, len(thresholds))) @ np.linalg.cholesky(corr).T
    return (z > thresholds).astype(np.uint8)


@dataclass(frozen=True)
class IdentityParams:
    """What stays fixed across one identity's images."""

    skin: tuple[int, int, int]
    background: tuple[int, int, int]
    face_width: float
    face_height: float
    eye_spacing: float


_SKIN = np.array([(232, 196, 160), (215, 170, 130), (190, 140, 100), (160, 112, 78), (125, 85, 58)])
_HAIR = {"Black_Hair": (28, 24, 24), "Blond_Hair": (236, 204, 104), "Brown_Hair": (112, 66, 30),
         "Gray_Hair": (172, 172, 178)}
_OTHER_HAIR = (135, 45, 38)  # none of the four labelled colours
_HATS = [(30, 50, 140), (150, 28, 40), (40, 95, 50), (35, 35, 38)]
_DARK = (30, 20, 15)


def sample_identity(rng: np.random.Generator) -> IdentityParams:
    tone = rng.uniform(0, len(_SKIN) - 1)
    k = int(tone)
    skin = _SKIN[k] + (_SKIN[min(k + 1, len(_SKIN) - 1)] - _SKIN[k]) * (tone - k)
    background = 200 + 30 * np.cos(rng.uniform(0, 2 * np.pi) + np.array([0, 2.1, 4.2]))  # pale, any hue
    return IdentityParams(tuple(int(c) for c in skin), tuple(int(c) for c in background),
                          rng.uniform(0.92, 1.08), rng.uniform(0.94, 1.06), rng.uniform(0.9, 1.1))


def _shade(color, k: float):
    return tuple(int(min(255, c * k)) for c in color)


def render_face(attrs: np.ndarray, identity_params: IdentityParams, rng: np.random.Generator,
                landmarks: list | None = None) -> Image.Image:
    """Draw one 178x218 face whose cues show `attrs` (40 values in ATTRIBUTE_NAMES order).

    Cues are drawn large and high-contrast so that they survive a 64x64 downscale. When
    `landmarks` is given, it receives the 10 aligned-landmark coordinates CelebA lists.
    """
    has = {name: bool(attrs[k]) for name, k in _A.items()}
    ident = identity_params
    s, dx, dy = rng.uniform(0.94, 1.06), rng.uniform(-5, 5), rng.uniform(-5, 5)

    def P(*xy):  # canonical coordinates -> this image's shifted and scaled ones
        return [89 + (v - 89) * s + dx if k % 2 == 0 else 118 + (v - 118) * s + dy for k, v in enumerate(xy)]

    def W(width):
        return max(1, round(width * s))

    img = Image.new("RGB", (178, 218), ident.background)
    d = ImageDraw.Draw(img)
    skin = ident.skin
    if has["Pale_Skin"]:  # near-white and desaturated: lighter than any palette tone
        skin = tuple(int(0.2 * c + 0.8 * w) for c, w in zip(ident.skin, (250, 247, 247)))
    hair = [_HAIR[n] for n in _HAIR if has[n]] or [_OTHER_HAIR]
    left, right = hair[0], hair[-1]  # two labelled colours show as two halves
    cx, cy, fw, fh = 89, 118, 40 * ident.face_width * (1.25 if has["Chubby"] else 1.0), 58 * ident.face_height
    top, bottom, ex, ey, my = cy - fh, cy + fh, 19 * ident.eye_spacing, 110, 152

    d.ellipse(P(-20, 198, 198, 290), fill=tuple(int(c) for c in rng.integers(40, 140, 3)))  # shoulders
    d.rectangle(P(cx - 18, 150, cx + 18, 206), fill=_shade(skin, 0.9))  # neck
    if has["Wearing_Necktie"]:
        d.polygon(P(cx - 22, 196, cx, 210, cx + 22, 196, cx + 26, 218, cx - 26, 218), fill=(245, 245, 245))
        d.polygon(P(cx - 8, 202, cx + 8, 202, cx + 13, 222, cx - 13, 222), fill=(180, 20, 30))
    if has["Wearing_Necklace"]:
        d.arc(P(cx - 30, 160, cx + 30, 204), 25, 155, fill=(245, 205, 40), width=W(6))
    for side, color, x0 in ((-1, left, cx - fw - 18), (1, right, cx + fw - 4)):  # long hair
        straight, wavy = has["Straight_Hair"], has["Wavy_Hair"]
        if straight and wavy:
            straight, wavy = side < 0, side > 0
        if straight:
            d.rectangle(P(x0, top + 20, x0 + 22, 214), fill=color)
            for k in (6, 14):
                d.line(P(x0 + k, top + 40, x0 + k, 210), fill=_shade(color, 0.6), width=W(2))
        elif wavy:
            for k, y in enumerate(range(int(top) + 30, 214, 16)):
                xw = x0 + 11 + (6 if k % 2 else -6)
                d.ellipse(P(xw - 13, y - 13, xw + 13, y + 13), fill=color)
    if has["Bald"]:  # tufts at the temples keep the hair colour visible
        d.ellipse(P(cx - fw - 8, ey - 30, cx - fw + 10, ey + 5), fill=left)
        d.ellipse(P(cx + fw - 10, ey - 30, cx + fw + 8, ey + 5), fill=right)
    else:
        d.pieslice(P(cx - fw - 10, top - 26, cx + fw + 10, top + 70), 90, 270, fill=left)
        d.pieslice(P(cx - fw - 10, top - 26, cx + fw + 10, top + 70), 270, 90, fill=right)

    # The face is a superellipse: a square jaw for Male, a pointed chin otherwise.
    t = np.linspace(0, 2 * np.pi, 60, endpoint=False)
    power = np.where(np.sin(t) > 0, 0.35 if has["Male"] else 1.35, 0.9)
    fx = cx + fw * np.sign(np.cos(t)) * np.abs(np.cos(t)) ** power
    fy = cy + fh * np.sign(np.sin(t)) * np.abs(np.sin(t)) ** power
    d.polygon(P(*np.column_stack([fx, fy]).ravel()), fill=skin, outline=_shade(skin, 0.6), width=W(3))
    if has["Bald"]:
        d.ellipse(P(cx - 16, top + 6, cx + 2, top + 16), fill=_shade(skin, 1.15))  # shine
    elif has["Receding_Hairline"]:
        for sgn in (-1, 1):  # bare temples: an M-shaped hairline
            d.ellipse(P(cx + sgn * fw * 0.5 - 17, top - 14, cx + sgn * fw * 0.5 + 17, top + 22), fill=skin)
    if not has["Young"]:
        for y in (top + 14, top + 22, top + 30):
            d.arc(P(cx - 26, y, cx + 26, y + 10), 200, 340, fill=_shade(skin, 0.55), width=W(3))
    if has["Bangs"]:
        d.polygon(P(cx - fw + 2, top - 6, cx + fw - 2, top - 6, cx + fw - 4, top + 34, cx + fw / 2, top + 26,
                    cx, top + 36, cx - fw / 2, top + 26, cx - fw + 4, top + 34), fill=left)
    if has["Wearing_Hat"]:
        hat = _HATS[int(rng.integers(len(_HATS)))]
        d.rectangle(P(cx - fw - 6, top - 60, cx + fw + 6, top + 6), fill=hat)
        d.rectangle(P(cx - fw - 30, top - 2, cx + fw + 30, top + 12), fill=_shade(hat, 0.7))

    if not has["No_Beard"]:
        low = fy > ey + 24
        beard = tuple(int(0.5 * a + 0.5 * b) for a, b in zip(left, (40, 30, 25)))
        d.polygon(P(*np.column_stack([fx[low], fy[low]]).ravel()), fill=beard)
    if has["5_o_Clock_Shadow"]:  # stubble: a stipple that reads as a grey tint once downscaled
        dots = np.column_stack([rng.uniform(cx - fw * 0.7, cx + fw * 0.7, 900), rng.uniform(ey + 30, bottom - 4, 900)])
        d.point(P(*dots.ravel()), fill=(70, 70, 80))
    if has["Sideburns"]:
        for x0 in (cx - fw + 1, cx + fw - 12):
            d.rectangle(P(x0, ey, x0 + 11, ey + 44), fill=_DARK)
    eye_h = 3 if has["Narrow_Eyes"] else 8
    for sgn in (-1, 1):
        x = cx + sgn * ex
        if has["Heavy_Makeup"]:  # eyeshadow
            d.ellipse(P(x - 18, ey - 17, x + 18, ey + 5), fill=(150, 60, 180))
        d.ellipse(P(x - 12, ey - eye_h, x + 12, ey + eye_h), fill=(250, 250, 250))
        d.ellipse(P(x - 5, ey - min(5, eye_h), x + 5, ey + min(5, eye_h)), fill=(50, 35, 25))
        brow = 9 if has["Bushy_Eyebrows"] else 3
        d.rectangle(P(x - 14, ey - 19 - brow / 2, x + 14, ey - 19 + brow / 2), fill=(55, 38, 25))
        if has["Bags_Under_Eyes"]:
            d.arc(P(x - 14, ey, x + 14, ey + 20), 20, 160, fill=(85, 50, 70), width=W(5))
        if has["Eyeglasses"]:
            d.rectangle(P(x - 18, ey - 13, x + 18, ey + 13), outline=(15, 15, 15), width=W(5))
        if has["Rosy_Cheeks"]:
            d.ellipse(P(x + sgn * 8 - 10, ey + 16, x + sgn * 8 + 10, ey + 36), fill=(240, 100, 130))
        if has["Wearing_Earrings"]:
            d.ellipse(P(cx + sgn * (fw + 2) - 7, ey + 26, cx + sgn * (fw + 2) + 7, ey + 40), fill=(240, 200, 30))
    if has["Eyeglasses"]:
        d.line(P(cx - ex + 18, ey, cx + ex - 18, ey), fill=(15, 15, 15), width=W(4))
    nose = 13 if has["Big_Nose"] else 6
    d.ellipse(P(cx - nose, 122, cx + nose, 140), fill=_shade(skin, 0.78))

    if has["Mustache"]:
        d.rounded_rectangle(P(cx - 22, my - 15, cx + 22, my - 6), radius=4, fill=_DARK)
    if has["Goatee"]:
        d.rectangle(P(cx - 15, my + 12, cx + 15, bottom - 2), fill=_DARK)
    lips = (225, 15, 50) if has["Wearing_Lipstick"] else (110, 45, 45)
    lw, half = (12, 26) if has["Big_Lips"] else (6, 22)
    # Lips grow outwards, so an open mouth keeps the same dark opening whatever the lips.
    if has["Mouth_Slightly_Open"] and has["Smiling"]:  # open grin with teeth
        d.pieslice(P(cx - 18 - lw, my - 18 - lw, cx + 18 + lw, my + 18 + lw), 0, 180, fill=lips)
        d.pieslice(P(cx - 18, my - 18, cx + 18, my + 18), 0, 180, fill=(25, 10, 10))
        d.rectangle(P(cx - 15, my + 1, cx + 15, my + 5), fill=(250, 250, 250))
    elif has["Mouth_Slightly_Open"]:
        d.ellipse(P(cx - 12 - lw, my - 10 - lw, cx + 12 + lw, my + 10 + lw), fill=lips)
        d.ellipse(P(cx - 12, my - 10, cx + 12, my + 10), fill=(25, 10, 10))
    elif has["Smiling"]:
        d.arc(P(cx - half, my - 26, cx + half, my + 10), 10, 170, fill=lips, width=W(lw))
    else:
        d.line(P(cx - half, my, cx + half, my), fill=lips, width=W(lw))
    if has["Double_Chin"]:
        d.arc(P(cx - 34, bottom - 10, cx + 34, bottom + 16), 20, 160, fill=_shade(skin, 0.5), width=W(6))
    if landmarks is not None:
        landmarks[:] = [round(v) for v in P(cx - ex, ey, cx + ex, ey, cx, 134, cx - half, my, cx + half, my)]

    pixels = np.asarray(img, dtype=np.int16) * rng.uniform(0.82, 1.12)  # lighting
    pixels += rng.integers(-10, 11, pixels.shape)  # sensor noise
    img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return img.filter(ImageFilter.GaussianBlur(3.5)) if has["Blurry"] else img


def _assign_identities(n: int, num_identities: int, rng: np.random.Generator):
    """(identity per image, split per image), train first like the real file; no identity crosses splits."""
    k = max(1, min(num_identities, n))
    n_val = n_test = max(1, round(0.1 * k)) if k >= 3 else 0
    id_split = np.repeat(np.array([0, 1, 2], dtype=np.int8), [k - n_val - n_test, n_val, n_test])
    sizes = np.full(k, n // k)
    sizes[rng.permutation(k)[: n % k]] += 1
    ids = np.repeat(np.arange(k), sizes)
    order = np.lexsort((rng.random(n), id_split[ids]))  # group by split, shuffle within it
    ids = ids[order]
    labels = rng.permutation(k) + 1  # identity numbers as arbitrary as the real ones
    return ids, labels[ids], id_split[ids]


def write_demo_celeba(root, num_images: int, seed: int = 0, num_identities: int | None = None,
                      distinct: int | None = None) -> pathlib.Path:
    """Write a synthetic CelebA root (images and label files, real layout) and return its path.

    With `distinct`, only that many faces are drawn and encoded; image i is face i % distinct's JPEG with
    i written into a comment segment, so every file differs and large sets (benchmarks/scale.py) cost
    little more than their writes. Those images do not show their labels, and landmarks are left at 0."""
    root = pathlib.Path(root)
    (root / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    label_rng, id_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    attrs = sample_attributes(num_images, label_rng)
    # About 20 images per identity as in CelebA, but enough identities that small sets still split.
    num_identities = num_identities or max(min(num_images, 10), round(num_images / 20))
    ids, id_labels, split = _assign_identities(num_images, num_identities, id_rng)
    people = [sample_identity(id_rng) for _ in range(int(ids.max(initial=0)) + 1)]
    names = [f"{i + 1:06d}.jpg" for i in range(num_images)]
    marks = np.zeros((num_images, 10), dtype=np.int64)
    encoded: list[bytes] = []
    for i, name in enumerate(names):
        if distinct is not None and i >= distinct:
            base = encoded[i % distinct]  # SOI, then a COM segment holding i, then the rest of the file
            (root / IMAGE_DIR / name).write_bytes(base[:2] + b"\xff\xfe\x00\x08" + i.to_bytes(6, "big") + base[2:])
            continue
        rng = np.random.default_rng([seed, 7, i])  # per image, so any subset can be re-rendered alone
        lm: list = []
        face = render_face(attrs[i], people[ids[i]], rng, landmarks=lm)
        if distinct is None:
            face.save(root / IMAGE_DIR / name, quality=90)
            marks[i] = lm
            continue
        buf = io.BytesIO()
        face.save(buf, format="JPEG", quality=90)
        encoded.append(buf.getvalue())
        (root / IMAGE_DIR / name).write_bytes(encoded[-1])

    values = np.where(attrs == 1, "  1", " -1")
    rows = [f"{name} {v[0].strip()}{''.join(v[1:])}\n" for name, v in zip(names, values)]
    header = "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y"
    for path, text in (
        (ATTR_FILE, [f"{num_images}\n{' '.join(ATTRIBUTE_NAMES)} \n"] + rows),
        (PARTITION_FILE, [f"{n} {s}\n" for n, s in zip(names, split)]),
        (IDENTITY_FILE, [f"{n} {k}\n" for n, k in zip(names, id_labels)]),
        (LANDMARKS_FILE, [f"{num_images}\n{header}\n"]
         + [f"{n} {m[0]:5d}" + "".join(f"{v:5d}" for v in m[1:]) + "\n" for n, m in zip(names, marks)]),
    ):
        (root / path).write_bytes("".join(text).encode("ascii"))  # bytes: "\n" endings on every OS
    return root


def ensure_demo_celeba(cache_dir, num_images: int = 4000, seed: int = 0) -> tuple[pathlib.Path, bool]:
    """Build the demo set once under `cache_dir`; returns (root, created_now).

    The set is built in a temporary sibling and renamed into place, so an interrupted build or two
    racing processes never leave a half-written set behind the final name.
    """
    final = pathlib.Path(cache_dir) / f"celeba_demo-n{num_images}-s{seed}-{FOLDER_VERSION}"
    params = {"num_images": num_images, "seed": seed, "version": FOLDER_VERSION}
    return build_once(final, lambda folder: write_demo_celeba(folder, num_images, seed), params)
