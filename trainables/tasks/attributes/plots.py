"""The attribute task's plots, drawn in the driver from a trial's stored scores (never on a worker)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from trainables import artifacts


def render_trial_plots(checkpoint: Path, out: Path) -> list[str]:
    """pr_curves.png from predictions/test.parquet; returns the names written into `out`."""
    test = checkpoint / artifacts.predictions_file("test")
    if not test.is_file():
        return []
    plot_pr_curves(pd.read_parquet(test), out / artifacts.PR_PLOT)
    return [artifacts.PR_PLOT]


PANEL_IN = 2.0  # each attribute's panel, in inches
# Margins and gaps in inches, set once (matplotlib's tight_layout measured every tick label of the 40 panels
# again, a second of the driver's per trial, between one trial's end and the next one's start).
LEFT_IN, RIGHT_IN, BOTTOM_IN, TOP_IN = 0.3, 0.1, 0.25, 0.35
WSPACE, HSPACE = 0.2, 0.45  # gaps between panels, as fractions of a panel: room for tick labels and two-line titles
TICKS = (0.0, 0.5, 1.0)
TICK_IN = 0.05  # a tick mark's length
Y_TOP = 1.02  # the precision axis ends a little above 1, so a curve along 1.0 stays visible


def panel_boxes(count: int, cols: int, rows: int, width: float, height: float) -> list[tuple[float, float, float, float]]:
    """(x0, y0, w, h) in inches from the figure's bottom left, of each of `count` panels, row by row."""
    w = (width - LEFT_IN - RIGHT_IN) / (cols + (cols - 1) * WSPACE)
    h = (height - BOTTOM_IN - TOP_IN) / (rows + (rows - 1) * HSPACE)
    return [(LEFT_IN + (k % cols) * w * (1 + WSPACE), height - TOP_IN - h - (k // cols) * h * (1 + HSPACE), w, h)
            for k in range(count)]


def average_precision(precision: np.ndarray, recall: np.ndarray) -> float:
    """sklearn's average_precision_score, from the curve precision_recall_curve gave (recall decreasing)."""
    return float(-np.sum(np.diff(recall) * precision[:-1]))


def plot_pr_curves(predictions: pd.DataFrame, out: Path) -> None:
    """One small precision-recall panel per attribute, with its average precision.

    The panels are drawn on one axes-less canvas in inches, as two line collections (frames and ticks,
    curves) and the texts: 40 matplotlib Axes, each with its own tick machinery and its tick labels, took about
    a second to build and draw per trial in the driver, on the Tune loop between one trial's end and the next
    one's start (benchmarks/pr_plot.py measures both ways)."""
    from matplotlib.collections import LineCollection
    from sklearn.metrics import precision_recall_curve

    from trainables.plotting import new_figure

    names = [c.split("/", 1)[1] for c in predictions.columns if c.startswith(artifacts.SCORE)]
    cols = min(8, max(1, len(names)))
    rows = -(-len(names) // cols)
    width, height = cols * PANEL_IN, rows * PANEL_IN
    fig = new_figure((width, height))
    canvas = fig.add_axes((0, 0, 1, 1))
    canvas.set_axis_off()
    canvas.set_xlim(0, width), canvas.set_ylim(0, height)
    frames, curves = [], []
    for k, (name, (x0, y0, w, h)) in enumerate(zip(names, panel_boxes(len(names), cols, rows, width, height))):
        frames.append([(x0, y0), (x0 + w, y0), (x0 + w, y0 + h), (x0, y0 + h), (x0, y0)])
        for t in TICKS:  # tick marks on every panel; their values beside the left column and under the last row
            x, y = x0 + t * w, y0 + t / Y_TOP * h
            frames += [[(x, y0), (x, y0 - TICK_IN)], [(x0, y), (x0 - TICK_IN, y)]]
            if k + cols >= len(names):
                canvas.text(x, y0 - TICK_IN - 0.02, f"{t:.1f}", fontsize=5, ha="center", va="top")
            if k % cols == 0:
                canvas.text(x0 - TICK_IN - 0.02, y, f"{t:.1f}", fontsize=5, ha="right", va="center")
        y, s = predictions[f"{artifacts.LABEL}{name}"].to_numpy(), predictions[f"{artifacts.SCORE}{name}"].to_numpy()
        if 0 < y.sum() < len(y):
            precision, recall, _ = precision_recall_curve(y, s)
            curves.append(np.column_stack([x0 + recall * w, y0 + precision / Y_TOP * h]))
            title = f"{name[:18]}\nAP {average_precision(precision, recall):.2f}"
        else:
            title = f"{name[:18]}\n(one class)"
        canvas.text(x0 + w / 2, y0 + h + 0.05, title, fontsize=7, ha="center", va="bottom", linespacing=1.2)
    canvas.add_collection(LineCollection(frames, colors="black", linewidths=0.8))
    canvas.add_collection(LineCollection(curves, colors="C0", linewidths=1))
    fig.savefig(out, dpi=90)
