"""How much does orchestration cost? One orchestrated trial against a bare torch loop, side by side.

Both train the same model on the same demo data, with the same batch, augmentation, loader code and
torch threads. The orchestrated trial goes the whole way a sweep goes (Tune trial -> TorchTrainer ->
one DDP worker -> MLflow); the bare loop is a single process calling `train_one_epoch`. Steady state is
the last epoch's images/s. The last line is `throughput_ratio=R first_step_s=S`, R being
orchestrated / bare and S the seconds from `fit()` to the trial's first optimizer step.

    python benchmarks/trial_overhead.py [--model resnet18] [--epochs 3] [--images 1600]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def bare_loop(config: dict, threads: int) -> float:
    """Steady-state images/s of the last epoch of a single-process loop on the trial's own pieces."""
    import torch

    from trainables.config import TrainConfig
    from trainables.loop import InputPipe, TrainModule, train_one_epoch
    from trainables.models import input_normalization
    from trainables.optim import build_optimizer
    from trainables.tasks import build_task

    torch.set_num_threads(threads)
    cfg = TrainConfig.from_dict(config)
    task = build_task(cfg)
    module = TrainModule(task.model, task.criterion)
    pipe = InputPipe(torch.device("cpu"), *input_normalization(task.model))
    steps = task.rows_per_rank(1) // cfg.optim.batch_size
    optimizer, scheduler = build_optimizer(cfg.optim, module, steps, task.param_groups)
    speed = 0.0
    for epoch in range(cfg.optim.epochs):
        loader = task.loader(epoch, 0, 1, cfg.optim.batch_size, 0, cfg.seed)
        stats = train_one_epoch(module, loader, optimizer, pipe, scheduler, epoch * steps)
        speed = stats.examples / stats.seconds
        print(f"  bare loop      epoch {epoch + 1}: {speed:.1f} img/s", flush=True)
    return speed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--images", type=int, default=1600, help="training images per epoch")
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()

    from orchestrator import cluster
    from orchestrator.sweep import SweepOptions, run_sweep

    overrides = {"model.name": args.model, "optim.epochs": args.epochs, "optim.batch_size": args.batch,
                 "data.max_train_images": args.images, "data.image_size": 64}
    with tempfile.TemporaryDirectory() as tmp:
        cluster.connect(None)
        options = SweepOptions("celeba_backbones", overrides=[f"{k}={v}" for k, v in overrides.items()],
                               num_workers=1, storage=f"{tmp}/runs", tracking_uri=f"sqlite:///{tmp}/mlflow.db")
        print("orchestrated trial (1 DDP worker):", flush=True)
        summary = run_sweep(options)
        result = summary["results"][0]
        history = result.metrics_dataframe
        orchestrated = float(history["train/images_per_sec"].iloc[-1])
        threads = int(history["train/threads_per_worker"].iloc[-1])
        first_step = float(history["timing/first_step_unix"].dropna().iloc[0]) - summary["fit_started"]
        import ray

        ray.shutdown()  # the bare loop gets the cores to itself, as the trial did
        print(f"bare loop ({threads} torch threads, as the trial's worker had):", flush=True)
        base_config = {**overrides, "loss.name": "bce", "optim.name": "adamw", "data.augment": ["hflip"]}
        bare = bare_loop(base_config, threads)
    print(f"orchestrated {orchestrated:.1f} img/s, bare {bare:.1f} img/s, fit() to first step {first_step:.1f}s")
    print(f"throughput_ratio={orchestrated / bare:.3f} first_step_s={first_step:.1f}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
