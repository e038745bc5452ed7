"""Labels for new faces from an exported model: what `orchestrator predict` writes (its command line is
orchestrator/commands/predict.py).

Writes `predictions.csv` (one row per decodable image, in sorted file order), `grid.png` (the
first --limit faces with their predicted labels written under each) and, with `--explain NAME`,
Grad-CAM overlays for that output under `explain/<NAME>/` (for a model that compares two photos, NAME
is a reference photo: orchestrator/pair_explain.py). The model side (loading, preprocessing,
Grad-CAM) is `trainables.inference`; this file only chooses, writes and draws. An undecodable image
is skipped with a warning line, unless every image is.
"""

from __future__ import annotations

import difflib
import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from trainables.errors import UserError

TILE, PAD, FONT_SIZE, LINE_HEIGHT, MAX_LINES = 128, 6, 11, 13, 9


def run_predict(model_dir, images, out, decision: str | None = None, explain: str | None = None,
                limit: int = 16, device: str | None = None, batch_size: int = 64) -> dict:
    """Predict every image at `images`, labelling by the task's named `decision` (its default when None); returns
    {images, skipped, out, decision, explain_dir, explained}. For a model that compares two photos, `explain`
    names the reference photo, one of `images`."""
    from orchestrator import pair_explain
    from trainables import inference

    if limit < 1:
        raise UserError(f"--limit must be at least 1, got {limit}")
    exported = inference.load_exported(model_dir, device=device)
    decision = inference.choose_decision(exported, decision)
    pair = exported.outputs.compare is not None
    column = output_column(exported.output_names, explain) if explain and not pair else None
    paths = inference.find_images(images)
    reference = pair_explain.reference_photo(paths, images, explain) if explain and pair else None
    out = Path(out).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create {out} ({err.strerror or err}): pass --out a writable folder") from None

    outputs, kept, failed = inference.run_model(exported, paths, batch_size)
    for path, reason in failed.items():
        print(f"warning: skipped {path}: {reason}", file=sys.stderr)
    if not kept:
        raise UserError(f"none of the {len(paths)} images at {images} could be decoded: pass JPEG or PNG face images")
    table = exported.outputs.describe(outputs, exported, decision)
    table.insert(0, "file", [display_name(p, images) for p in kept])
    table.to_csv(out / "predictions.csv", index=False, float_format="%.6g")

    shown = kept[:limit]
    faces = inference.load_faces(exported, shown)
    captions = [[row["file"], *(exported.outputs.captions(row) or ["(none)"])]
                for _, row in table.head(limit).iterrows()]
    draw_grid([to_image(f) for f in faces], captions, out / "grid.png")

    explain_dir, explained = None, explain
    if column is not None:
        explain_dir = write_explanations(exported, column, shown, faces, outputs[:limit, column], table.head(limit),
                                         out)
    elif reference is not None:
        explain_dir = pair_explain.write_pair_explanations(exported, reference, kept, outputs, list(table["file"]),
                                                          limit, out)
        explained = f"the similarity to {explain}"
    return {"images": len(kept), "skipped": list(failed), "out": str(out), "decision": decision,
            "explain_dir": str(explain_dir) if explain_dir else None, "explained": explained}


def write_explanations(exported, column: int, paths: list[Path], faces, raw: np.ndarray, table, out: Path) -> Path:
    """explain/<name>/<stem>.png Grad-CAM overlays and their grid.png, captioned with score and label."""
    from trainables import inference

    name = exported.output_names[column]
    folder = out / "explain" / name.replace("/", "_")
    folder.mkdir(parents=True, exist_ok=True)
    cams, grid = inference.grad_cam(exported, faces, column)
    warn_if_coarse(exported, grid)
    overlays, notes = [], []
    for stem, face, cam, (_, row), value in zip(unique_stems(paths), faces, cams, table.iterrows(), raw):
        image = overlay(face, cam)
        image.save(folder / f"{stem}.png")
        overlays.append(image)
        value = row.get(f"score/{name}", value)  # the probability where the table has one
        verdict = {0: " (no)", 1: " (yes)"}.get(row.get(f"label/{name}"), "")
        notes.append([row["file"], f"{name} {float(value):.2f}{verdict}"])
    draw_grid(overlays, notes, folder / f"{GRID_STEM}.png")
    return folder


def warn_if_coarse(exported, grid: tuple[int, int]) -> None:
    height, width = grid
    if height * width < 9:
        print(f"warning: the last feature map is only {height}x{width} at {exported.cfg.data.image_size} px "
              "input, so the Grad-CAM maps are that coarse; a model trained at a larger data.image_size "
              "gives finer ones", file=sys.stderr)


def output_column(names: list[str], wanted: str) -> int:
    if wanted in names:
        return names.index(wanted)
    raise UserError(f"unknown output '{wanted}' for --explain: {did_you_mean(wanted, names)}")


def did_you_mean(wanted: str, names: list[str]) -> str:
    """The names close to `wanted` (case aside) as a question; else the first few names."""
    lowered = {n.lower(): n for n in names}
    close = difflib.get_close_matches(wanted.lower(), list(lowered), n=4, cutoff=0.5)
    return f"did you mean {', '.join(lowered[c] for c in close)}?" if close else f"known: {', '.join(names[:8])}, ..."


def display_name(path: Path, images) -> str:
    """The file's name relative to the --images folder (its own name for a single file)."""
    root = Path(images).expanduser()
    return path.name if root.is_file() else str(path.relative_to(root))


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
