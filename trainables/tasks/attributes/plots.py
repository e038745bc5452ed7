"""The attribute task's plots, drawn in the driver from a trial's stored scores (never on a worker)."""

from __future__ import annotations

from pathlib import Path

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
# Margins and gaps in inches, set once: matplotlib's tight_layout measured every tick label of the 40 panels
# again, a second of the driver's per trial, between one trial's end and the next one's start.
LEFT_IN, RIGHT_IN, BOTTOM_IN, TOP_IN = 0.3, 0.1, 0.25, 0.35
TICKS = (0.0, 0.5, 1.0)


def plot_pr_curves(predictions: pd.DataFrame, out: Path) -> None:
    """One small precision-recall panel per attribute, with its average precision."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    names = [c.split("/", 1)[1] for c in predictions.columns if c.startswith(artifacts.SCORE)]
    cols = min(8, max(1, len(names)))
    rows = -(-len(names) // cols)
    from trainables.plotting import new_figure

    width, height = cols * PANEL_IN, rows * PANEL_IN
    fig = new_figure((width, height))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, name in zip(axes.flat, names):
        y, s = predictions[f"{artifacts.LABEL}{name}"].to_numpy(), predictions[f"{artifacts.SCORE}{name}"].to_numpy()
        if 0 < y.sum() < len(y):
            precision, recall, _ = precision_recall_curve(y, s)
            ax.plot(recall, precision, lw=1)
            ax.set_title(f"{name[:18]}\nAP {average_precision_score(y, s):.2f}", fontsize=7)
        else:
            ax.set_title(f"{name[:18]}\n(one class)", fontsize=7)
        ax.set_xlim(0, 1), ax.set_ylim(0, 1.02), ax.tick_params(labelsize=5)
        ax.set_xticks(TICKS), ax.set_yticks(TICKS)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    # wspace and hspace are fractions of a panel: room for the tick labels, and for the two-line titles
    fig.subplots_adjust(left=LEFT_IN / width, right=1 - RIGHT_IN / width, bottom=BOTTOM_IN / height,
                        top=1 - TOP_IN / height, wspace=0.2, hspace=0.45)
    fig.savefig(out, dpi=90)
