"""Plots of result files draw on a canvas of their own: rendering them leaves the process's matplotlib
backend as it was (the driver may be a notebook, or serve a model)."""

import matplotlib
import numpy as np
import pandas as pd

from trainables.tasks.attributes.plots import plot_pr_curves
from trainables.tasks.fairface.group_metrics import plot_group_accuracy
from trainables.tasks.recognition.verification import plot_roc


def test_every_result_plot_is_written_and_keeps_the_callers_backend(tmp_path):
    rng = np.random.default_rng(0)
    before = matplotlib.get_backend()
    matplotlib.use("svg")  # not the Agg that the plots draw on: a switch to Agg would show
    try:
        predictions = pd.DataFrame({"score/Smiling": rng.random(50), "label/Smiling": rng.integers(0, 2, 50),
                                    "score/Bald": rng.random(50), "label/Bald": np.zeros(50, dtype=int)})
        plot_pr_curves(predictions, tmp_path / "pr.png")
        groups = pd.DataFrame({"kind": ["race", "race"], "group": ["A", "B"], "n": [10, 12],
                               "race_accuracy": [0.7, 0.6], "gender_accuracy": [0.9, np.nan]})
        plot_group_accuracy(groups, ["race", "gender"], tmp_path / "groups.png")
        pairs = pd.DataFrame({"distance": rng.random(40), "issame": np.arange(40) % 2 == 0})
        plot_roc({"lfw": pairs}, tmp_path / "roc.png")
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
    for name in ("pr.png", "groups.png", "roc.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
