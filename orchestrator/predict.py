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
import sys
from pathlib import Path

import numpy as np

from orchestrator.pictures import GRID_STEM, draw_grid, overlay, to_image, unique_stems, warn_if_coarse
from trainables.errors import UserError


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
    reference = reference_photo(paths, images, explain) if explain and pair else None
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


def reference_photo(paths: list[Path], images, wanted: str) -> Path:
    """The photo `wanted` names among `paths` (by its name in predictions.csv's `file` column, or as a path);
    else one line naming those that are close."""
    names = [display_name(p, images) for p in paths]
    if wanted in names:
        return paths[names.index(wanted)]
    given = Path(wanted).expanduser()
    if given.is_file():
        match = [p for p in paths if p.resolve() == given.resolve()]
        if match:
            return match[0]
    raise UserError(f"unknown photo '{wanted}' for --explain: this model compares two photos, so --explain names "
                    f"the reference photo, one of the files at {images}; {did_you_mean(wanted, names)}")
