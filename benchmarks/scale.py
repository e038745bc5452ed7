"""Does the data path scale to real sizes? CelebA-format sets of 10,000 and 100,000 images, side by side.

Each set is written in CelebA's real layout (img_align_celeba/ of 178x218 JPEGs, list_attr_celeba.txt,
list_eval_partition.txt, identity_CelebA.txt, list_landmarks_align_celeba.txt) by the demo's own writer,
`write_demo_celeba(..., distinct=K)`: K faces are drawn and encoded, and every other file is one of them
with its index in a JPEG comment, so files differ and writing 100,000 costs little more than the writes
(the images do not show their labels: this measures cost, not learning). Then, for each set, each step
in a process of its own, so that each peak RSS (the process's VmHWM, `ru_maxrss`) is its own:

- prepare: `prepare("celeba", src, out)`, the path `--data DIR` and `orchestrator prepare` take;
- epoch: the attributes task's training stream over the prepared shards (`get_task("attributes").build`
  with `data.root` set to them), one full epoch at `--image-size` (64, the demo sweeps'), batch 64, no
  loader workers, as a CPU trial loads; its decoded cache at the trial's default budget
  (`data.decoded_cache_mb`);
- sweep start (with `--sweep-start`): `python -m orchestrator sweep celeba_backbones --data PREPARED --smoke`
  with one worker, timed from the command's start to its first `start  trial` line, then killed.

It prints each figure per size, then per-image cost ratios of the largest size against the smallest
(1 means the per-image cost does not grow with the set) and the peak RSS ratio. The last line is

    prepare_cost_ratio=P epoch_cost_ratio=E rss_ratio=R

P, E: seconds per image of the largest set over those of the smallest (targets: at most 1.2); R: the
larger of the two steps' peak-RSS ratios (target: at most 1.5). Only ratios measured in the same run
mean anything on a shared machine.

    python benchmarks/scale.py [--sizes 10000,100000] [--image-size 64] [--distinct 16] [--sweep-start]
                              [--work DIR]

100,000 images take about 1.3 GB of disk for the JPEGs and as much again for the shards.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BATCH = 64
SEED = 0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def phase_prepare(src: str, out: str) -> dict:
    from trainables.data.prepare import prepare

    start = time.perf_counter()
    info = prepare("celeba", src, out)
    return {"seconds": time.perf_counter() - start, "images": sum(info.counts.values())}


def phase_epoch(prepared: str, image_size: int) -> dict:
    import torch

    from trainables.config import TrainConfig
    from trainables.tasks import get_task

    torch.set_num_threads(1)
    start = time.perf_counter()
    cfg = TrainConfig.from_dict({"task": "attributes", "seed": SEED, "data.root": prepared,
                                 "data.image_size": image_size, "data.augment": ["hflip"], "model.name": "resnet18"})
    stream = get_task("attributes").build(cfg).train_loader
    opened = time.perf_counter() - start
    start, images = time.perf_counter(), 0
    for batch in stream(0, 0, 1, BATCH, 0):
        images += len(batch[0])
    return {"seconds": time.perf_counter() - start, "images": images, "open_s": opened}


def in_child(phase: str, *args: str) -> dict:
    """Run one phase in a fresh Python process; its figures, with its peak RSS."""
    done = subprocess.run([sys.executable, __file__, "--phase", phase, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{phase} {args} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def sweep_start_s(prepared: str, work: Path) -> float:
    """Seconds from `sweep` to the first `start  trial` line of a one-worker smoke sweep on `prepared`."""
    sys.path.insert(0, str(ROOT / "tests"))
    from crash_story import SWEEP, CliRun

    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))

    runs = Path(tempfile.mkdtemp(prefix="sweep-", dir=work))
    start = time.perf_counter()
    run = CliRun(["sweep", SWEEP, "--data", prepared, "--smoke", "--num-workers", "1", "--max-concurrent", "1",
                  "--storage", str(runs / "runs"), "--tracking-uri", f"sqlite:///{runs}/mlflow.db"], runs)
    try:
        run.wait_for("start  trial", timeout=1800)
        return time.perf_counter() - start
    finally:
        run.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="set sizes, comma-separated; ratios: last over first")
    parser.add_argument("--image-size", type=int, default=64, help="the training stream's image size")
    parser.add_argument("--distinct", type=int, default=16, help="distinct faces drawn and encoded per set")
    parser.add_argument("--sweep-start", action="store_true", help="also time a smoke sweep's start on each set")
    parser.add_argument("--work", default="", help="folder for the sets (default: a temporary one, removed after)")
    parser.add_argument("--phase", choices=["prepare", "epoch"], help=argparse.SUPPRESS)
    parser.add_argument("args", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:  # a child: one step, its figures as the last line
        figures = phase_prepare(*args.args) if args.phase == "prepare" else phase_epoch(args.args[0], int(args.args[1]))
        print(json.dumps({**figures, "peak_rss_mb": peak_rss_mb()}))
        return

    from trainables.data.demo.celeba import write_demo_celeba

    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict[int, dict] = {}
    try:
        for n in sizes:
            start = time.perf_counter()
            write_demo_celeba(work / f"celeba-{n}", n, seed=SEED, distinct=args.distinct)
            print(f"{n}: CelebA layout written in {time.perf_counter() - start:.0f} s "
                  f"({args.distinct} distinct faces)", flush=True)
        for n in sizes:  # each step for every size before the next step: both meet the same load
            results[n] = {"prepare": in_child("prepare", str(work / f"celeba-{n}"), str(work / f"shards-{n}"))}
            print(f"{n}: prepare {results[n]['prepare']}", flush=True)
        for n in sizes:
            results[n]["epoch"] = in_child("epoch", str(work / f"shards-{n}"), str(args.image_size))
            print(f"{n}: epoch {results[n]['epoch']}", flush=True)
        if args.sweep_start:
            for n in sizes:
                try:
                    results[n]["sweep_start_s"] = sweep_start_s(str(work / f"shards-{n}"), work)
                except AssertionError as err:  # e.g. a local Ray that could not start on a busy machine
                    print(f"{n}: sweep start not measured: {str(err).splitlines()[-1][:300]}", flush=True)
                    continue
                print(f"{n}: sweep start {results[n]['sweep_start_s']:.1f} s", flush=True)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)

    small, large = results[sizes[0]], results[sizes[-1]]
    ratios = {}
    for step in ("prepare", "epoch"):
        per_image = {n: r[step]["seconds"] / r[step]["images"] * 1e3 for n, r in results.items()}
        ratios[step] = per_image[sizes[-1]] / per_image[sizes[0]]
        ratios[f"{step}_rss"] = large[step]["peak_rss_mb"] / small[step]["peak_rss_mb"]
        print(f"{step}: " + ", ".join(f"{n} images {per_image[n]:.3f} ms/image, peak RSS "
                                      f"{results[n][step]['peak_rss_mb']:.0f} MiB" for n in sizes)
              + f"; cost ratio {ratios[step]:.3f}, RSS ratio {ratios[f'{step}_rss']:.3f}", flush=True)
    if args.sweep_start and all("sweep_start_s" in r for r in results.values()):
        print("sweep start: " + ", ".join(f"{n} images {results[n]['sweep_start_s']:.1f} s" for n in sizes)
              + f"; sweep_start_ratio={large['sweep_start_s'] / small['sweep_start_s']:.3f}", flush=True)
    print(f"prepare_cost_ratio={ratios['prepare']:.3f} epoch_cost_ratio={ratios['epoch']:.3f} "
          f"rss_ratio={max(ratios['prepare_rss'], ratios['epoch_rss']):.3f}")


if __name__ == "__main__":
    main()
