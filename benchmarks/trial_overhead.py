"""Where does a trial's first step go, against Ray's own floor? And what does orchestration cost per image?

In one run, on the local Ray this script starts:

1. **Ray's floor**, measured twice (before and after our trial): a Tune trial whose function builds
   and fits Ray's stock `TorchTrainer` with the same workers and resources as ours, whose training function
   only reports the time it was entered. Its start is the seconds from `tuner.fit()` to that entry:
   what Ray itself needs to place a trial and start its worker group. Each is followed by the same
   trial with our trainer and torch-free process group (`trainables/process_group.py`) instead.
2. **Our trial**: `sweep celeba_backbones` with one trial (`run_sweep`, so Tune trial -> TorchTrainer
   -> DDP workers -> MLflow, as a user's sweep), the same resources. Its worker reports, with its
   first epoch, where the time went (`timing/*_s`): Ray's start up to the training function,
   imports, data opening, model build, DDP set-up, and the first batch (optimizer, loader and the
   first optimizer step). `first_step` is the seconds from `tuner.fit()` to the first step's end.
3. **A bare loop** on the trial's own pieces (`train_one_epoch`, the same model, data, batch,
   augmentation and torch threads), run twice: in a plain Ray task with the trial's CPUs on the same
   running cluster (Ray's daemons take their share of the cores there too: on 2 cores, about 10% of a
   2-thread loop), and alone after `ray.shutdown()`. Steady state is the best epoch after the first,
   for the trial and for each loop.

The last line is

    throughput_ratio=R first_step_s=S first_step_vs_floor=F throughput_vs_no_ray=N our_floor_vs_floor=P

R being the trial's images/s over the bare loop's in a Ray task (what our trial adds per step), S
our first step from `tuner.fit()`, F that over the mean of the two floors, N the trial over the
loop with no Ray at all, and P the floor with our trainer over Ray's stock one. Targets: R >= 0.95,
F <= 1.3 and P < 1.

    python benchmarks/trial_overhead.py [--model resnet18] [--epochs 3] [--images 1600] [--workers 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PHASES = [("ray_start", "Ray: trial actor and worker group, to the training function"),
          ("imports", "imports (torch, timm, the task)"), ("data_open", "data opening"),
          ("model_build", "model build"), ("ddp_setup", "DDP set-up (prepare_model)"),
          ("first_batch", "first batch (optimizer, loader, first step)")]


def _floor_train_fn(config: dict) -> None:
    import ray.train

    ray.train.report({"entered_unix": time.time()})


def _floor_driver(config: dict, *, resources, storage: str, ours: bool) -> None:
    """A Tune trial that trains nothing: Ray's stock `TorchTrainer`, or (`ours`) our trial's trainer and torch-free
    process group (`runners.TrialTrainer`, `runners.worker_group`). Both have the same workers and resources."""
    import ray.train
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from orchestrator.runners import TrialTrainer, worker_group

    group = worker_group(resources)
    run_config = ray.train.RunConfig(name=f"floor-{tune.get_context().get_trial_id()}", storage_path=storage,
                                     callbacks=[TuneReportCallback()])
    if ours:
        TrialTrainer(_floor_train_fn, **group, run_config=run_config).fit()
        return
    from ray.train.torch import TorchConfig, TorchTrainer

    TorchTrainer(_floor_train_fn, torch_config=TorchConfig(backend=group["backend_config"].backend),
                 scaling_config=group["scaling_config"], run_config=run_config).fit()


def ray_floor(resources, storage: str, ours: bool = False) -> float:
    """Seconds from `tuner.fit()` to the floor trial's training function."""
    from ray import tune

    from orchestrator.cluster import DRIVER_CPUS

    trainable = tune.with_resources(tune.with_parameters(_floor_driver, resources=resources, storage=storage,
                                                         ours=ours), {"CPU": DRIVER_CPUS})
    tuner = tune.Tuner(trainable, run_config=tune.RunConfig(storage_path=storage, verbose=0))
    started = time.time()
    result = tuner.fit()[0]
    if result.error:
        raise SystemExit(f"the floor trial failed: {result.error}")
    return float(result.metrics["entered_unix"]) - started


def bare_loop(config: dict, threads: int, label: str = "bare loop") -> float:
    """Steady-state images/s (the best epoch after the first) of a single-process loop on the trial's
    own pieces."""
    import torch

    from trainables.config import TrainConfig
    from trainables.loop import TrainModule, laid_out, train_one_epoch
    from trainables.models import input_normalization
    from trainables.optim import build_optimizer
    from trainables.tasks import get_task

    torch.set_num_threads(threads)
    cfg = TrainConfig.from_dict(config)
    task = get_task(cfg.task).build(cfg)
    task.model, pipe = laid_out(task.model, torch.device("cpu"), *input_normalization(task.model),
                                cfg.model.channels_last)  # as the trial's worker lays them out
    module = TrainModule(task.model, task.criterion)
    steps = task.train_rows(1) // cfg.optim.batch_size
    optimizer, scheduler = build_optimizer(cfg.optim, module, steps, task.param_groups)
    speeds = []
    for epoch in range(cfg.optim.epochs):
        stats = train_one_epoch(module, task.train_loader(epoch, 0, 1, cfg.optim.batch_size, 0), optimizer, pipe,
                                scheduler, epoch * steps)
        speeds.append(stats.examples / stats.seconds)
        print(f"  {label}  epoch {epoch + 1}: {speeds[-1]:.1f} img/s", flush=True)
    return steady(speeds)


def steady(speeds: list[float]) -> float:
    """The best epoch after the first (which decodes every image into the cache)."""
    return max(speeds[1:] or speeds)


def bare_loop_in_ray(config: dict, threads: int, cpus: float) -> float:
    import ray

    @ray.remote(num_cpus=cpus)
    def loop() -> float:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        return bare_loop(config, threads, "bare loop in a Ray task")

    return ray.get(loop.remote())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--images", type=int, default=1600, help="training images per epoch")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="DDP workers of the trial (and of the floor)")
    args = parser.parse_args()

    import ray

    from orchestrator import cluster
    from orchestrator.sweep import SweepOptions, run_sweep

    overrides = {"model.name": args.model, "optim.epochs": args.epochs, "optim.batch_size": args.batch,
                 "data.max_train_images": args.images, "data.image_size": 64}
    with tempfile.TemporaryDirectory() as tmp:
        cluster.connect(None)
        resources = cluster.plan_resources(cluster.cluster_nodes(), num_workers=args.workers, max_concurrent=1)
        print(f"resources: {resources.describe()}", flush=True)
        floors = [ray_floor(resources, f"{tmp}/floor")]
        print(f"Ray's floor: {floors[0]:.1f}s from tuner.fit() to the training function", flush=True)
        ours = [ray_floor(resources, f"{tmp}/floor", ours=True)]
        print(f"the same floor with our trainer and torch-free process group: {ours[0]:.1f}s", flush=True)
        options = SweepOptions("celeba_backbones", overrides=[f"{k}={v}" for k, v in overrides.items()],
                               num_workers=args.workers, storage=f"{tmp}/runs",
                               tracking_uri=f"sqlite:///{tmp}/mlflow.db")
        print(f"our trial ({args.workers} DDP worker(s)):", flush=True)
        summary = run_sweep(options)
        history = summary["results"][0].metrics_dataframe
        first = history.iloc[0]
        floors.append(ray_floor(resources, f"{tmp}/floor"))
        print(f"Ray's floor again: {floors[1]:.1f}s", flush=True)
        ours.append(ray_floor(resources, f"{tmp}/floor", ours=True))
        print(f"the floor with our trainer again: {ours[1]:.1f}s", flush=True)
        orchestrated = steady(list(history["train/images_per_sec"]))
        threads = int(history["train/threads_per_worker"].iloc[-1])
        bare_config = {**overrides, "task": "attributes", "loss.name": "bce", "optim.name": "adamw",
                       "data.augment": ["hflip"], "data.root": summary["data_root"]}
        print(f"bare loop ({threads} torch threads, as the trial's worker had), in a Ray task:", flush=True)
        in_ray = bare_loop_in_ray(bare_config, threads, resources.cpus_per_worker)
        ray.shutdown()
        print("bare loop alone, without Ray:", flush=True)
        bare = bare_loop(bare_config, threads)

    first_step = float(first["timing/first_step_unix"]) - summary["fit_started"]
    phases = {"ray_start": float(first["timing/worker_start_unix"]) - summary["fit_started"],
              **{name: float(first[f"timing/{name}_s"]) for name, _ in PHASES[1:]}}
    floor = sum(floors) / len(floors)
    print("\nwhere our first step went, from tuner.fit():")
    for name, label in PHASES:
        print(f"  {phases[name]:6.2f}s  {label}")
    print(f"  {first_step:6.2f}s  first step, in all (the phases above sum to {sum(phases.values()):.2f}s)")
    print(f"  {floor:6.2f}s  Ray's floor (mean of {', '.join(f'{f:.2f}' for f in floors)})")
    print(f"  {sum(ours) / len(ours):6.2f}s  the floor with our trainer, whose trial actor and controller import no torch")
    print(f"\nsteady state: our trial {orchestrated:.1f} img/s, the bare loop {in_ray:.1f} img/s in a Ray task "
          f"and {bare:.1f} img/s without Ray")
    print(f"throughput_ratio={orchestrated / in_ray:.3f} first_step_s={first_step:.1f} "
          f"first_step_vs_floor={first_step / floor:.2f} throughput_vs_no_ray={orchestrated / bare:.3f} "
          f"our_floor_vs_floor={sum(ours) / len(ours) / floor:.2f}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
