"""How much compute does ASHA save on the demo backbone sweep, and what does it cost in the best result?

In one run, on one local Ray, `sweep celeba_backbones` on the demo data with the sweep's own
settings, twice:

1. the full grid (`--no-early-stopping`): every backbone trains all its epochs;
2. with the sweep's ASHA settings (grace period, reduction factor), as a user runs it.

For each it prints the compute used, as trial-epochs (the epochs each trial trained, summed) and as
seconds (each trial's running time in Tune, summed, and the sweep's wall time), and the sweep
metric of its best trial. Trials are seeded, so a trial that ASHA lets run trains exactly as in the
grid: the gap comes only from what ASHA stopped. It also replays ASHA's rule (Ray's: at each rung a
trial goes on only if its metric is at least the (1 - 1/rf) quantile of the trials recorded there
before it) on the grid's own learning curves, in the order the trials were created, for a few other
settings, so a change of the sweep's settings can be judged before it is run. The sweep's scheduler
(orchestrator/ordered_asha.py) judges each rung in that order however many trials run at once, so the
replay of the sweep's own settings predicts the ASHA run.

The last line is

    asha_compute_fraction=F best_gap=G

F being ASHA's trial-epochs over the grid's and G the grid's best minus ASHA's best (in the
direction of the sweep's mode: positive when ASHA's best is worse). Targets: F <= 0.5, G <= 0.005.

    python benchmarks/asha_efficiency.py [--sweep celeba_backbones] [--set KEY=VALUE ...]

It takes about 15 minutes on 2 cores with the demo's settings (the grid 600 s, ASHA 270 s on 2026-12-06).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPLAYED = [(1, 2), (1, 3), (1, 4), (2, 2), (2, 3), (2, 4), (3, 3)]  # (grace period, reduction factor)


def run(sweep, name: str, overrides: list[str], tmp: str, early_stopping: bool) -> dict:
    from orchestrator.space import describe, varying_keys
    from orchestrator.sweep import SweepOptions, run_sweep

    label = "ASHA" if early_stopping else "full grid"
    print(f"\n=== {name}, {label} ===", flush=True)
    started = time.time()
    summary = run_sweep(SweepOptions(name, overrides=overrides, early_stopping=early_stopping,
                                     storage=f"{tmp}/{'asha' if early_stopping else 'grid'}",
                                     tracking_uri=f"sqlite:///{tmp}/mlflow.db"))
    wall = time.time() - started
    curves, seconds, order = {}, 0.0, []
    for result in summary["results"]:
        history = result.metrics_dataframe
        trial = str(result.metrics.get("trial_id"))
        order.append((int(trial.rsplit("_", 1)[-1]), trial))  # Tune numbers its trials as it creates them
        curves[trial] = [float(v) for v in history.drop_duplicates("epoch", keep="last")[sweep.metric]]
        seconds += float(result.metrics.get("time_total_s", 0.0))
    keys = varying_keys(sweep.param_space)
    return {"label": label, "curves": curves, "order": [t for _, t in sorted(order)], "wall": wall,
            "seconds": seconds, "trial_epochs": sum(len(c) for c in curves.values()), "mode": sweep.mode,
            "metric": sweep.metric, "names": {str(r.metrics.get("trial_id")): describe(r.config, keys)
                                              for r in summary["results"]}}


def best(curves: dict[str, list[float]], mode: str) -> float:
    """The best trial's metric at its last epoch (what the sweep's table ranks by)."""
    finals = [c[-1] for c in curves.values() if c]
    return max(finals) if mode == "max" else min(finals)


def replay_asha(curves: dict[str, list[float]], order: list[str], mode: str, grace: int, rf: int) -> dict:
    """Ray's ASHA on finished learning curves, trials judged one after another in `order`: the trial-epochs
    it would spend and its best result."""
    epochs = max(len(c) for c in curves.values())
    max_t = epochs + 1  # as run_sweep sets it
    rungs = [grace * rf ** k for k in range(int(np.log(max_t / grace) / np.log(rf) + 1))]
    recorded: dict[int, list[float]] = {r: [] for r in rungs}
    sign = 1.0 if mode == "max" else -1.0
    kept = {}
    for trial in order:
        curve = curves[trial]
        ran = len(curve)
        for epoch in range(1, len(curve) + 1):
            if epoch in recorded:
                value = sign * curve[epoch - 1]
                previous = recorded[epoch]
                cutoff = np.nanpercentile(previous, (1 - 1 / rf) * 100) if previous else None
                previous.append(value)
                if cutoff is not None and value < cutoff:
                    ran = epoch
                    break
        kept[trial] = curve[:ran]
    return {"trial_epochs": sum(len(c) for c in kept.values()), "best": best(kept, mode)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", default="celeba_backbones")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for both runs (the demo sweep's own settings by default)")
    args = parser.parse_args()

    import search_spaces
    from orchestrator import cluster

    sweep = search_spaces.get(args.sweep)(real_data=False, smoke=False)
    print(f"{args.sweep}: ASHA grace period {sweep.grace_period}, reduction factor {sweep.reduction_factor}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        cluster.connect(None)
        grid = run(sweep, args.sweep, args.overrides, tmp, early_stopping=False)
        asha = run(sweep, args.sweep, args.overrides, tmp, early_stopping=True)

    sign = 1.0 if grid["mode"] == "max" else -1.0
    print(f"\n{'trial':<22} {'grid: ' + grid['metric'] + ' per epoch':<44} ASHA")
    asha_by_name = {asha["names"][trial]: curve for trial, curve in asha["curves"].items()}
    for trial in grid["order"]:  # the two runs' trial ids differ: a trial is matched by its config
        shown = " ".join(f"{v:.4f}" for v in grid["curves"][trial])
        kept = asha_by_name.get(grid["names"][trial], [])
        print(f"{grid['names'][trial]:<22} {shown:<44} {len(kept)} epoch(s)"
              + (f", {kept[-1]:.4f}" if kept else ""))
    for run_ in (grid, asha):
        print(f"{run_['label']:<10} {run_['trial_epochs']:3d} trial-epochs, {run_['seconds']:7.0f} trial-seconds, "
              f"{run_['wall']:6.0f}s wall, best {grid['metric']} {best(run_['curves'], grid['mode']):.4f}")
    grid_best = best(grid["curves"], grid["mode"])
    print("\nASHA replayed on the grid's curves (trials in the order they were created):")
    for grace, rf in REPLAYED:
        replay = replay_asha(grid["curves"], grid["order"], grid["mode"], grace, rf)
        mark = "  <- the sweep's" if (grace, rf) == (sweep.grace_period, sweep.reduction_factor) else ""
        print(f"  grace {grace}, rf {rf}: fraction {replay['trial_epochs'] / grid['trial_epochs']:.2f}, "
              f"best gap {sign * (grid_best - replay['best']):+.4f}{mark}")
    fraction = asha["trial_epochs"] / grid["trial_epochs"]
    gap = sign * (grid_best - best(asha["curves"], grid["mode"]))
    print(f"compute by trial-seconds: {asha['seconds'] / grid['seconds']:.2f}; by wall time: "
          f"{asha['wall'] / grid['wall']:.2f}")
    print(f"asha_compute_fraction={fraction:.3f} best_gap={gap:.4f}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
