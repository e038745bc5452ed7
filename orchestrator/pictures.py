"""The pictures that predict, its Grad-CAM explanations and serve draw: a face tensor as an image, a heat map
blended over a face, faces in a captioned grid, and the file stems overlays are written under.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

TILE, PAD, FONT_SIZE, LINE_HEIGHT, MAX_LINES = 128, 6, 11, 13, 9
GRID_STEM = "grid"  # grid.png sits beside the overlays: a photo of that stem keeps its suffix instead


def unique_stems(paths: list[Path]) -> list[str]:
    """File stems, with the suffix kept where two files share a stem (a.jpg and a.png) or where the stem is
    the grid's (grid.jpg's overlay would otherwise be written over by grid.png)."""
    stems = [p.stem for p in paths]
    return [p.stem if stems.count(p.stem) == 1 and p.stem != GRID_STEM else p.name.replace(".", "_") for p in paths]


def to_image(face) -> Image.Image:
    """A (3, H, W) uint8 tensor as a PIL image."""
    return Image.fromarray(face.permute(1, 2, 0).cpu().numpy())


def overlay(face, cam: np.ndarray, size: int = TILE, alpha: float = 0.45) -> Image.Image:
    """The face with the heat map (jet, red = most evidence) blended over it, at display size."""
    from matplotlib import colormaps

    base = np.asarray(to_image(face).resize((size, size), Image.BICUBIC), dtype=np.float32)
    heat = Image.fromarray((np.clip(cam, 0, 1) * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR)
    colored = colormaps["jet"](np.asarray(heat, dtype=np.float32) / 255.0)[..., :3] * 255.0
    return Image.fromarray(((1 - alpha) * base + alpha * colored).clip(0, 255).astype(np.uint8))


def wrap(items: list[str], font, width: int) -> list[str]:
    """The first item on its own line, the rest packed comma-separated; at most MAX_LINES lines."""
    def fit(text: str) -> str:
        while len(text) > 1 and font.getlength(text) > width:
            text = text[:-2] + "…"
        return text

    lines = [fit(items[0])]
    current = ""
    for item in items[1:]:
        candidate = f"{current}, {item}" if current else item
        if font.getlength(candidate) <= width:
            current = candidate
        else:
            if current:
                lines.append(current + ",")
            current = fit(item)
    if current:
        lines.append(current)
    if len(lines) > MAX_LINES:
        lines = lines[:MAX_LINES - 1] + ["…"]
    return lines


def draw_grid(faces: list[Image.Image], captions: list[list[str]], path: Path, tile: int = TILE) -> None:
    """Faces in a near-square grid, each with its caption lines written underneath."""
    font = ImageFont.load_default(size=FONT_SIZE)
    wrapped = [wrap(c, font, tile) for c in captions]
    text_height = max(len(w) for w in wrapped) * LINE_HEIGHT + 4
    cols = max(1, math.ceil(math.sqrt(len(faces))))
    rows = math.ceil(len(faces) / cols)
    canvas = Image.new("RGB", (PAD + cols * (tile + PAD), PAD + rows * (tile + text_height + PAD)), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (face, lines) in enumerate(zip(faces, wrapped)):
        row, col = divmod(i, cols)
        x, y = PAD + col * (tile + PAD), PAD + row * (tile + text_height + PAD)
        canvas.paste(face.resize((tile, tile), Image.BICUBIC), (x, y))
        for k, line in enumerate(lines):
            draw.text((x, y + tile + 2 + k * LINE_HEIGHT), line, fill="black", font=font)
    canvas.save(path, format="PNG")  # `path` may be a file object (serve answers the bytes)


def warn_if_coarse(exported, grid: tuple[int, int]) -> None:
    """One warning line when the Grad-CAM maps are coarser than 3x3 (a model trained on small images)."""
    height, width = grid
    if height * width < 9:
        print(f"warning: the last feature map is only {height}x{width} at {exported.cfg.data.image_size} px "
              "input, so the Grad-CAM maps are that coarse; a model trained at a larger data.image_size "
              "gives finer ones", file=sys.stderr)
