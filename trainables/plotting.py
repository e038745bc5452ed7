"""Figures for result files: each on an Agg canvas of its own, so drawing a plot never touches pyplot's global
state or switches the backend of the process it runs in (a driver, a notebook, a served model)."""

from __future__ import annotations


def new_figure(figsize: tuple[float, float]):
    """A matplotlib `Figure` that can be saved with `fig.savefig`, independent of any pyplot backend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig
