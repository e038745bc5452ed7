"""The deterministic FairFace-format demo set: abstract pictures whose labels are arbitrary visual codes.

The images depict nobody. Each label is carried by an ARBITRARY code chosen only to be learnable:
- race: which of 7 filled geometric shapes (circle, square, triangle, diamond, star, plus,
  hexagon, in RACES order) is drawn in the top band;
- gender: the orientation of a striped square in the bottom band (horizontal or vertical);
- age: the number of dots (1 to 9, the bin's position) in a column along the left edge.
No code uses skin tone, facial features or anything meant to depict a real group of people; the
class strings are FairFace's only so that the files match the real layout.

Nuisance keeps it from being trivial: every code's position, size, angle and colour are jittered
(colours are drawn independently of the labels), distractor shapes (outlined ones, and sometimes a
small filled one) and stray dots fill the middle, and each image gets a gradient, lighting change
and pixel noise. All codes are unchanged by a horizontal flip, so `hflip` augmentation is safe.
Labels follow FairFace's rough distribution: race near balanced, gender about 53/47, age
concentrated on 20-29 and 30-39. The files use the real layout (`fairface_label_train.csv`,
`fairface_label_val.csv`, `train/N.jpg`, `val/N.jpg` at 224x224); one sixth of the images are val.
`ensure_demo_fairface` builds a set once into a cache folder, atomically, like the CelebA demo.
"""

from __future__ import annotations

import pathlib

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from trainables.data.demo.build_once import build_once
from trainables.data.formats.fairface import AGE_BINS, GENDERS, HEADER, LABEL_FILES, RACES

SIZE = 224
FOLDER_VERSION = "v1"
# Rough FairFace training-split frequencies (per class, in RACES / GENDERS / AGE_BINS order).
RACE_RATES = np.array([16527, 12233, 13367, 12287, 10795, 12319, 9216], dtype=np.float64)
GENDER_RATES = np.array([0.53, 0.47])
AGE_RATES = np.array([1792, 10408, 9103, 25598, 19250, 10744, 6228, 2779, 842], dtype=np.float64)
_PALETTE = np.array([(200, 40, 40), (40, 120, 200), (40, 160, 70), (220, 150, 20), (140, 60, 170),
                     (20, 150, 150), (200, 80, 140), (90, 90, 90), (120, 80, 30), (30, 40, 120)])


def _plus(r: float) -> tuple[np.ndarray, np.ndarray]:
    a, b = r, r * 0.36
    xy = np.array([(-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b), (b, a), (-b, a), (-b, b), (-a, b),
                   (-a, -b), (-b, -b)])
    return np.arctan2(xy[:, 1], xy[:, 0]), np.hypot(xy[:, 0], xy[:, 1])


# Each shape as (vertex angles, vertex radii) for radius r; the race code, in RACES order.
SHAPES: dict[str, object] = {
    "circle": lambda r: (np.linspace(0, 2 * np.pi, 32, endpoint=False), np.full(32, r)),
    "square": lambda r: (np.arange(4) * np.pi / 2 + np.pi / 4, np.full(4, r)),
    "triangle": lambda r: (np.arange(3) * 2 * np.pi / 3 - np.pi / 2, np.full(3, r * 1.1)),
    "diamond": lambda r: (np.arange(4) * np.pi / 2, np.array([r, 0.7 * r, r, 0.7 * r])),
    "star": lambda r: (np.arange(10) * np.pi / 5 - np.pi / 2, np.tile([r * 1.1, r * 0.45], 5)),
    "plus": _plus,
    "hexagon": lambda r: (np.arange(6) * np.pi / 3, np.full(6, r)),
}
_SHAPE_NAMES = tuple(SHAPES)


def shape_points(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Polygon vertices of a shape of radius r centred at (cx, cy), rotated by `angle` radians."""
    t, radius = SHAPES[kind](r)
    t = t + angle
    return list(zip((cx + radius * np.cos(t)).tolist(), (cy + radius * np.sin(t)).tolist()))


def sample_labels(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(race, gender, age-bin) canonical indices, independent, at FairFace's rough rates."""
    draw = lambda rates: rng.choice(len(rates), size=n, p=rates / rates.sum())  # noqa: E731
    return draw(RACE_RATES), draw(GENDER_RATES), draw(AGE_RATES)


def _color(rng: np.random.Generator) -> tuple[int, int, int]:
    c = _PALETTE[rng.integers(len(_PALETTE))] + rng.integers(-25, 26, 3)
    return tuple(int(v) for v in np.clip(c, 0, 255))


def _stripes(horizontal: bool, rng: np.random.Generator) -> Image.Image:
    """A square of stripes, tilted by up to 10 degrees; horizontal or vertical is the gender code.
    Stripes are 12-15 px wide so that they survive a 64 px input without aliasing."""
    side, period = int(rng.integers(62, 76)), int(rng.integers(24, 31))
    # Dark ink on a pale ground whatever the hues, so orientation never vanishes into equal luminance;
    # but one patch in six is faint (contrast near the pixel noise), so that gender is not free.
    ground = rng.integers(190, 256, 3)
    big = Image.new("RGB", (2 * side, 2 * side), tuple(int(v) for v in ground))
    d = ImageDraw.Draw(big)
    ink = tuple(int(v) for v in (ground - rng.integers(18, 40, 3) if rng.random() < 1 / 6 else rng.integers(0, 90, 3)))
    for k in range(0, 2 * side, period):
        d.rectangle((0, k, 2 * side, k + period // 2) if horizontal else (k, 0, k + period // 2, 2 * side), fill=ink)
    big = big.rotate(float(rng.uniform(-10, 10)), resample=Image.BILINEAR)
    return big.crop((side // 2, side // 2, side // 2 + side, side // 2 + side))


def render_image(race: int, gender: int, age: int, rng: np.random.Generator) -> Image.Image:
    """One 224x224 picture carrying the three codes (see the module docstring)."""
    base = np.array(_PALETTE[rng.integers(len(_PALETTE))], dtype=np.float32) * 0.25 + 170
    column = np.clip(base + np.linspace(-1, 1, SIZE, dtype=np.float32)[:, None] * rng.uniform(-25, 25, 3), 0, 255)
    img = Image.fromarray(np.ascontiguousarray(np.broadcast_to(column.astype(np.uint8)[:, None], (SIZE, SIZE, 3))))
    d = ImageDraw.Draw(img)

    for _ in range(int(rng.integers(2, 5))):  # distractors: outlined shapes in the middle
        kind = _SHAPE_NAMES[rng.integers(len(_SHAPE_NAMES))]
        pts = shape_points(kind, rng.uniform(50, 200), rng.uniform(90, 140), rng.uniform(10, 22), rng.uniform(0, 6.3))
        d.polygon(pts, outline=_color(rng), width=3)
    if rng.random() < 0.5:  # a small filled shape: the race code is told apart by its band, not its fill
        kind = _SHAPE_NAMES[rng.integers(len(_SHAPE_NAMES))]
        d.polygon(shape_points(kind, rng.uniform(60, 190), rng.uniform(100, 130), rng.uniform(9, 14),
                               rng.uniform(-0.3, 0.3)), fill=_color(rng))
    for _ in range(int(rng.integers(0, 4))):  # stray dots, away from the age column
        x, y = rng.uniform(60, 210), rng.uniform(85, 145)
        d.ellipse((x - 6, y - 6, x + 6, y + 6), fill=_color(rng))
    if rng.random() < 0.5:
        d.line((rng.uniform(0, SIZE), 0, rng.uniform(0, SIZE), SIZE), fill=_color(rng), width=2)

    # race: one filled shape in the top band
    r = rng.uniform(22, 30)
    pts = shape_points(_SHAPE_NAMES[race], rng.uniform(75, 190), rng.uniform(36, 52), r, rng.uniform(-0.25, 0.25))
    d.polygon(pts, fill=_color(rng), outline=(20, 20, 20), width=2)
    # gender: striped square in the bottom band
    patch = _stripes(horizontal=(gender == 0), rng=rng)
    img.paste(patch, (int(rng.uniform(60, SIZE - 8 - patch.width)), int(rng.uniform(142, SIZE - 4 - patch.height))))
    # age: bin k is k + 1 dots down the left edge
    count, pitch = age + 1, rng.uniform(19, 22)
    top = rng.uniform(8, SIZE - 8 - count * pitch)
    ink = tuple(int(v) for v in rng.integers(10, 70, 3))
    for k in range(count):
        x, y = 17 + rng.uniform(-3, 3), top + (k + 0.5) * pitch
        d.ellipse((x - 6.5, y - 6.5, x + 6.5, y + 6.5), fill=ink)

    pixels = np.asarray(img, dtype=np.float32) * np.float32(rng.uniform(0.8, 1.15))  # lighting
    pixels += np.float32(rng.uniform(-20, 20))
    pixels += rng.standard_normal(pixels.shape, dtype=np.float32) * np.float32(rng.uniform(4, 14))  # sensor noise
    img = Image.fromarray(np.clip(pixels, 0, 255, out=pixels).astype(np.uint8))
    return img.filter(ImageFilter.GaussianBlur(1.2)) if rng.random() < 0.1 else img


def write_demo_fairface(root, num_images: int, seed: int = 0) -> pathlib.Path:
    """Write a synthetic FairFace release (CSVs and images, real layout) and return its path."""
    root = pathlib.Path(root)
    race, gender, age = sample_labels(num_images, np.random.default_rng(np.random.SeedSequence(seed)))
    service = np.random.default_rng([seed, 5]).random(num_images) < 0.5
    n_val = max(1, round(num_images / 6)) if num_images > 1 else 0
    splits = {"train": range(num_images - n_val), "val": range(num_images - n_val, num_images)}
    for split, rows in splits.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        lines = [",".join(HEADER) + "\n"]
        for n, i in enumerate(rows, start=1):
            name = f"{split}/{n}.jpg"
            rng = np.random.default_rng([seed, 11, i])  # per image, so any one can be re-rendered alone
            render_image(int(race[i]), int(gender[i]), int(age[i]), rng).save(root / name, quality=90)
            lines.append(f"{name},{AGE_BINS[age[i]]},{GENDERS[gender[i]]},{RACES[race[i]]},{bool(service[i])}\n")
        (root / LABEL_FILES[split]).write_bytes("".join(lines).encode("ascii"))  # "\n" endings on every OS
    return root


def ensure_demo_fairface(cache_dir, num_images: int = 3600, seed: int = 0) -> tuple[pathlib.Path, bool]:
    """Build the demo set once under `cache_dir`; returns (root, created_now).

    Built in a temporary sibling and renamed into place, so an interrupted build or two racing
    processes never leave a half-written set behind the final name.
    """
    final = pathlib.Path(cache_dir) / f"fairface_demo-n{num_images}-s{seed}-{FOLDER_VERSION}"
    params = {"num_images": num_images, "seed": seed, "version": FOLDER_VERSION}
    return build_once(final, lambda folder: write_demo_fairface(folder, num_images, seed), params)
