"""How long the driver takes to draw a trial's pr_curves.png: 40 panels drawn as 40 matplotlib Axes (how it was
drawn until 2026-12-06, kept here as the reference) against `plot_pr_curves` (one axes-less canvas).

The driver draws this figure for every finished trial of an attribute sweep, on the Tune loop: between one trial's
end and the next one's start. Both ways draw the same scores (a CelebA-sized test split's 40 attributes, by
default the demo's 400 test rows) into a PNG of the same size, in turns, REPEAT times each, after one warm-up
each (matplotlib's and sklearn's imports). The last line is

    axes_grid_s=A canvas_s=B speedup=A/B

(medians).

    python benchmarks/pr_plot.py [--repeat 7] [--rows 400]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from trainables import artifacts
from trainables.tasks.attributes.plots import (BOTTOM_IN, HSPACE, LEFT_IN, PANEL_IN, RIGHT_IN, TICKS, TOP_IN, WSPACE,
                                               Y_TOP, plot_pr_curves)


def axes_grid(predictions: pd.DataFrame, out: Path) -> None:
    """The reference: one matplotlib Axes per attribute, with its own ticks and tick labels."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    from trainables.plotting import new_figure

    names = [c.split("/", 1)[1] for c in predictions.columns if c.startswith(artifacts.SCORE)]
    cols = min(8, max(1, len(names)))
    rows = -(-len(names) // cols)
    width, height = cols * PANEL_IN, rows * PANEL_IN
    fig = new_figure((width, height))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, name in zip(axes.flat, names):
        y, s = predictions[f"{artifacts.LABEL}{name}"].to_numpy(), predictions[f"{artifacts.SCORE}{name}"].to_numpy()
        precision, recall, _ = precision_recall_curve(y, s)
        ax.plot(recall, precision, lw=1)
        ax.set_title(f"{name[:18]}\nAP {average_precision_score(y, s):.2f}", fontsize=7)
        ax.set_xlim(0, 1), ax.set_ylim(0, Y_TOP), ax.tick_params(labelsize=5)
        ax.set_xticks(TICKS), ax.set_yticks(TICKS)
    fig.subplots_adjust(left=LEFT_IN / width, right=1 - RIGHT_IN / width, bottom=BOTTOM_IN / height,
                        top=1 - TOP_IN / height, wspace=WSPACE, hspace=HSPACE)
    fig.savefig(out, dpi=90)


def scores(rows: int, attributes: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    labels = rng.random((rows, attributes)) < 0.3
    noisy = labels + rng.normal(0, 0.8, (rows, attributes))
    return pd.DataFrame({**{f"{artifacts.SCORE}Attribute_{k}": noisy[:, k] for k in range(attributes)},
                         **{f"{artifacts.LABEL}Attribute_{k}": labels[:, k].astype(np.uint8) for k in range(attributes)}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--rows", type=int, default=400, help="test rows per attribute (the demo's test split: 400)")
    args = parser.parse_args()
    predictions = scores(args.rows)
    ways = {"axes_grid": axes_grid, "canvas": plot_pr_curves}
    times: dict[str, list[float]] = {name: [] for name in ways}
    with tempfile.TemporaryDirectory() as tmp:
        for name, draw in ways.items():  # warm-up: the imports
            draw(predictions, Path(tmp) / f"{name}.png")
        for _ in range(args.repeat):
            for name, draw in ways.items():
                start = time.perf_counter()
                draw(predictions, Path(tmp) / f"{name}.png")
                times[name].append(time.perf_counter() - start)
    for name, seconds in times.items():
        print(f"{name}: median {statistics.median(seconds):.3f} s (min {min(seconds):.3f}, max {max(seconds):.3f})")
    grid, canvas = statistics.median(times["axes_grid"]), statistics.median(times["canvas"])
    print(f"axes_grid_s={grid:.3f} canvas_s={canvas:.3f} speedup={grid / canvas:.2f}")


if __name__ == "__main__":
    main()
