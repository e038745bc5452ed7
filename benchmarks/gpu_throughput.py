"""On one GPU: does our trial train as fast as a bare torch loop, and does its loader keep the GPU fed?

Side by side in one run, for resnet50 at 224 px (`--model`, `--size`), batch `--batch`, bf16 autocast
and channels_last, on the CelebA-format demo set (`--images` of them, built once into a temporary cache):

1. **our trial**: `sweep celeba_backbones` with one trial of one DDP worker on one GPU
   (`--gpus-per-worker 1`, NCCL), as a user runs it; its steady images/s is the best epoch after the first;
2. **a bare loop**: the same model, criterion and optimizer (built by the task from the same
   config), trained on uint8 batches already on the GPU, normalised as the trial's `InputPipe` does,
   under the same autocast and memory format, for `--steps` steps after `--warmup`;
3. **the loader alone**: the trial's own train loader (decoding, resizing and augmenting on CPU, with
   the loader processes a trial on this machine gets), iterated without training.

The last line is

    gpu_ratio=R loader_vs_step=L

R being the trial's images/s over the bare loop's, L the loader's over the bare loop's. Targets:
R >= 0.95 and L >= 2. Without a CUDA GPU it prints why it skipped and exits 0.

    python benchmarks/gpu_throughput.py [--model resnet50] [--size 224] [--batch 128] [--images 12000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def bare_loop(config: dict, steps: int, warmup: int) -> float:
    """Images/s of the trial's model, criterion and optimizer on batches already on the GPU."""
    import torch

    from trainables.config import TrainConfig
    from trainables.loop import InputPipe, TrainModule, autocast
    from trainables.models import input_normalization
    from trainables.optim import build_optimizer
    from trainables.tasks import get_task

    cfg = TrainConfig.from_dict(config)
    task = get_task(cfg.task).build(cfg)
    device = torch.device("cuda")
    model = task.model.to(device).to(memory_format=torch.channels_last)
    module = TrainModule(model, task.criterion.to(device))
    pipe = InputPipe(device, *input_normalization(model), channels_last=True)
    optimizer, _ = build_optimizer(cfg.optim, module, steps + warmup, task.param_groups)
    batch, size = cfg.optim.batch_size, cfg.data.image_size
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)
    targets = torch.randint(0, 2, (batch, task.num_outputs), device=device).float()
    module.train()
    for step in range(warmup + steps):
        if step == warmup:
            torch.cuda.synchronize()
            started = time.perf_counter()
        with autocast(device):
            loss = module(pipe(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - started)


def loader_alone(config: dict, workers: int, batches: int) -> float:
    """Images/s of the trial's train loader, iterated without training (its start-up excluded)."""
    from trainables.config import TrainConfig
    from trainables.tasks import get_task

    cfg = TrainConfig.from_dict(config)
    task = get_task(cfg.task).build(cfg)
    seen, started = 0, None
    for index, (images, _) in enumerate(task.train_loader(0, 0, 1, cfg.optim.batch_size, workers)):
        if index == 2:  # the loader processes have started and filled their first batches
            started, seen = time.perf_counter(), 0
        seen += len(images)
        if index >= batches:
            break
    return seen / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--images", type=int, default=12000, help="demo images (80%% of them train)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("skipped: torch sees no CUDA GPU here (torch.cuda.is_available() is False); run it on a GPU machine")
        return

    import ray

    from orchestrator import cluster
    from orchestrator.sweep import SweepOptions, run_sweep

    overrides = {"model.name": args.model, "optim.epochs": args.epochs, "optim.batch_size": args.batch,
                 "data.image_size": args.size, "data.demo_images": args.images, "data.max_train_images": 0,
                 "model.channels_last": True}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["FACE_ORCHESTRATOR_CACHE"] = f"{tmp}/cache"
        cluster.connect(None)
        options = SweepOptions("celeba_backbones", overrides=[f"{k}={v}" for k, v in overrides.items()],
                               num_workers=1, gpus_per_worker=1, max_concurrent=1, storage=f"{tmp}/runs",
                               tracking_uri=f"sqlite:///{tmp}/mlflow.db")
        print(f"our trial on {torch.cuda.get_device_name(0)}:", flush=True)
        summary = run_sweep(options)
        history = summary["results"][0].metrics_dataframe
        speeds = list(history["train/images_per_sec"])
        trial = max(speeds[1:] or speeds)
        cpus = cluster.plan_resources(cluster.cluster_nodes(), 1, 1, 1).cpus_per_worker
        ray.shutdown()
        config = {**overrides, "task": "attributes", "loss.name": "bce", "optim.name": "adamw",
                  "data.augment": ["hflip"], "data.root": summary["data_root"]}
        bare = bare_loop(config, args.steps, args.warmup)
        workers = max(0, int(cpus + 0.05) - 1)  # as `trainables.worker.loader_workers` gives a GPU worker
        loader = loader_alone(config, workers, batches=40)
    print(f"\nour trial {trial:.0f} img/s (epochs: {', '.join(f'{s:.0f}' for s in speeds)}), bare loop {bare:.0f} img/s, "
          f"loader alone {loader:.0f} img/s with {workers} loader processes")
    print(f"gpu_ratio={trial / bare:.3f} loader_vs_step={loader / bare:.2f}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
