"""Is each task's shard loader faster than the raw-file loader it replaced? All three tasks, side by side;
then how fast the training loader alone can feed a GPU (the loader ceiling).

For each task, on its own synthetic demo set (built by the task's demo builder into a temporary cache):

- shards: the product's training loader, `get_task(name).build(cfg).train_loader(epoch, 0, 1, batch,
  workers)`, which streams the Parquet shards that `build` prepares (the first build packs them; that
  time is printed and not counted);
- files (the baseline): the deleted raw-file path, re-implemented in data_loader_baseline.py as
  `RawFileDataset` and `raw_file_loader` (PIL per JPEG, one DataLoader over a seeded per-epoch permutation).

Both read the same train-split images, at the same size and with the same augmentation as the demo
sweeps, with the same batch size (`--batch`, 64) and DataLoader worker count (`--workers`, one per core):

    task         demo set                          size  augment                    as in the demo sweep
    attributes   CelebA format (178x218 JPEGs)     64    hflip                      celeba_losses
    fairface     FairFace format (224x224 JPEGs)   64    hflip                      fairface_multitask
    recognition  identity folders (112x112 JPEGs)  112   hflip, cutout, half_face   face_recognition_losses

Each loader makes `--passes` full passes (one epoch each, from the one task setup a trial builds),
alternating shards / files within a task so that load from other users of a shared machine hits both
alike; the best pass counts, timed from its first batch (worker start-up excluded). The shard loader
keeps decoded images across epochs (`data.decoded_cache_mb`), as a trial's does: its first epoch,
which decodes every image, is printed beside the best. Ratios are only ever taken between loaders measured side
by side in the same run; absolute images/s on a shared machine mean little. Beside each wall-clock
ratio, the same ratio by CPU time (images per CPU second of the loader's processes, also best of
the passes) is printed: other users of the machine disturb it less, if not at all. A decode profile (one
process, per image: reading the file, the baseline's PIL decode, the product's `decode_shard_image`)
is printed beside the throughputs, to tell read cost from decode cost.

`loader_vs_train` is the attributes shard loader's images/s over resnet18 training's (the fastest of
`--steps` steps at 64 px, the same batch, AdamW, BCE on 40 outputs, torch threads = cores): above 1,
the loader keeps up.
Their summary line is

    attributes_shards_vs_files=A fairface_shards_vs_files=B recognition_shards_vs_files=C loader_vs_train=D

Then the attributes training loader alone (data_loader_ceiling.py says how): **the loader ceiling**
(`loader_ceiling`), images per CPU second at 64, 128 and 224 px with 0, 1 and 2 loader workers, first
epoch and later ones; and **from S3** (`s3_vs_local`), the same loader over S3 (moto on loopback) against
local shards. The last line is

    ceiling_img_s_per_core=64px:E/128px:F/224px:G later_vs_first_with_workers=H s3_vs_local=S

E, F, G: the first epoch's images per CPU second with 2 loader workers; H: the smallest later/first
ratio of images per CPU second over the cases with loader workers (target: at least 5); S: `s3_vs_local`
of later epochs. Before it, `s3_vs_local_first=… s3_vs_local_later=…` (target for later epochs: at least 0.8),
and `eval_later_vs_first=…`: the smallest later/first ratio per CPU second of the evaluation loaders (val
and test at 128 px, 0 and 2 loader workers; decoded once, into the evaluation splits' caches).

Run it from the repository root (about 5 minutes of CPU time on 2 cores, of which the ceiling takes about
half a minute; `--ceiling-only` took 77 s wall under other users' load):

    python benchmarks/data_loader.py [--images 2400] [--batch 64] [--workers 0] [--passes 5] [--steps 8]
                                     [--ceiling-images 720] [--ceiling-later 2] [--s3-later 3] [--eval-images 2400]
                                     [--ceiling-only]

(the trials load in the training process unless data.loader_workers is set, which is the
default `--workers 0`).

Files: this script holds the command line and the shards-vs-files case; data_loader_baseline.py the
raw-file baseline and each task's demo set; data_loader_timing.py how a pass is timed;
data_loader_ceiling.py the loader-ceiling and S3 cases.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from data_loader_baseline import SEED, RawFileDataset, benches, raw_decode, raw_file_loader  # noqa: E402
from data_loader_ceiling import evaluation_epochs, loader_ceiling, s3_vs_local  # noqa: E402
from data_loader_timing import images_per_second, per_image_us  # noqa: E402


def decode_profile(paths: list[Path], size: int, square: bool, count: int = 200) -> str:
    """Per image, in this process, one thread: read the file, the baseline's decode from the file,
    the product's decoder from the bytes."""
    from trainables.data.decode import decode_shard_image

    paths = paths[:count]
    data = [p.read_bytes() for p in paths]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker
    try:
        read = per_image_us(lambda p: p.read_bytes(), paths)
        raw = per_image_us(lambda p: raw_decode(p, size), paths)
        shard = per_image_us(lambda d: decode_shard_image(d, size, square=square), data)
    finally:
        torch.set_num_threads(threads)
    with Image.open(paths[0]) as img:
        stored = "x".join(map(str, img.size))
    kb = np.mean([len(d) for d in data]) / 1024
    return (f"decode per image ({stored} px, {kb:.0f} KiB -> {size}): read file {read:.0f} us, "
            f"files' PIL draft decode {raw:.0f} us, decode_shard_image {shard:.0f} us")


def train_images_per_second(batch: torch.Tensor, outputs: int, threads: int, steps: int) -> float:
    """Images per second of the fastest of `steps` training steps (best counts, as for the loaders)."""
    import timm

    torch.set_num_threads(threads)
    model = timm.create_model("resnet18", pretrained=False, num_classes=outputs)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    criterion = torch.nn.BCEWithLogitsLoss()
    x = (batch.float() / 255 - 0.5) / 0.25
    y = torch.randint(0, 2, (len(batch), outputs)).float()

    def step():
        optimizer.zero_grad(set_to_none=True)
        criterion(model(x), y).backward()
        optimizer.step()

    model.train()
    step()  # warm-up: allocations, kernel choice
    best = float("inf")
    for _ in range(steps):
        start = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - start)
    return len(batch) / best



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2400,
                        help="demo images of the CelebA and FairFace sets (about 5/6 are train); "
                             "the identity-folder set is the task's fixed demo (2000 train images)")
    cores = len(os.sched_getaffinity(0))
    parser.add_argument("--workers", type=int, default=0,
                        help="DataLoader workers (default 0: in the training process, as trials load)")
    parser.add_argument("--batch", type=int, default=64, help="batch size of both loaders")
    parser.add_argument("--passes", type=int, default=5, help="passes per loader and task, alternating")
    parser.add_argument("--steps", type=int, default=8, help="timed resnet18 training steps (the fastest counts)")
    parser.add_argument("--ceiling-images", type=int, default=720,
                        help="demo images of the loader-ceiling case's CelebA set (about 5/6 are train)")
    parser.add_argument("--ceiling-later", type=int, default=2, help="later epochs per loader-ceiling case")
    parser.add_argument("--eval-images", type=int, default=2400,
                        help="demo images of the evaluation case's CelebA set (val and test are 1/5 of them)")
    parser.add_argument("--ceiling-only", action="store_true", help="only the loader-ceiling and S3 cases")
    parser.add_argument("--s3-later", type=int, default=3, help="later epochs of the S3 case (the best counts)")
    args = parser.parse_args()

    from trainables.config import TrainConfig
    from trainables.data.transforms import build_augment
    from trainables.tasks import get_task

    ratios: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        cache = Path(tmp)
        for b in ([] if args.ceiling_only else benches(args.images)):
            t = time.perf_counter()
            raw_root = b.demo(cache)
            built = time.perf_counter() - t
            t = time.perf_counter()
            cfg = TrainConfig.from_dict({"task": b.task, "seed": SEED, "data.cache_dir": str(cache),
                                         "data.image_size": b.size, "data.augment": b.augment, **b.settings})
            setup = get_task(b.task).build(cfg)  # packs the demo set into shards on first use
            prepared = time.perf_counter() - t
            paths, labels = b.raw(raw_root)
            files = RawFileDataset(paths, labels, b.size, build_augment(b.augment, b.size))
            rows = setup.train_rows(1)
            if rows != len(files):
                raise SystemExit(f"{b.task}: the shards train on {rows} rows, the files on {len(files)}")
            print(f"{b.task}: {rows} train images at {b.size} px, augment {'+'.join(b.augment)}, batch {args.batch}, "
                  f"{args.workers} workers (demo built in {built:.0f} s, shards prepared in {prepared:.0f} s)",
                  flush=True)
            print(f"  {decode_profile(paths, b.size, square=b.task == 'recognition')}", flush=True)

            shard = file = np.zeros(2)  # best (images/s, images per CPU second) of the passes
            first = None  # the shards' first epoch, which decodes every image (later ones reuse them)
            for epoch in range(args.passes):
                loader = setup.train_loader(epoch, 0, 1, args.batch, args.workers)
                measured = np.asarray(images_per_second(loader))
                first = measured if first is None else first
                shard = np.maximum(shard, measured)
                loader = raw_file_loader(files, epoch, 0, 1, args.batch, args.workers)
                file = np.maximum(file, images_per_second(loader))
            ratios[b.task] = shard[0] / file[0]
            print(f"  shards {shard[0]:.0f} images/s ({shard[1]:.0f} per CPU second), files {file[0]:.0f} images/s "
                  f"({file[1]:.0f} per CPU second): shards_vs_files={ratios[b.task]:.3f} "
                  f"(by CPU time {shard[1] / file[1]:.3f}); the shards' first epoch, decoding every image: "
                  f"{first[0]:.0f} images/s, {first[0] / file[0]:.3f} of the files' best", flush=True)
            if b.task == "attributes":  # the model the attributes demo sweeps train, on a real batch
                batch = next(iter(setup.train_loader(0, 0, 1, args.batch, 0)))[0]
                train = train_images_per_second(batch, setup.num_outputs, cores, args.steps)
                loader_vs_train = shard[0] / train
                print(f"  resnet18 training: {train:.0f} images/s at {b.size} px, batch {args.batch}, "
                      f"{cores} threads: loader_vs_train={loader_vs_train:.3f}", flush=True)
        if ratios:
            print(" ".join(f"{task}_shards_vs_files={r:.3f}" for task, r in ratios.items())
                  + f" loader_vs_train={loader_vs_train:.3f}", flush=True)
        _, s3_later = s3_vs_local(cache, args.ceiling_images, args.batch, args.s3_later)
        ceiling, later_vs_first = loader_ceiling(cache, args.ceiling_images, args.batch, args.ceiling_later)
        evaluation_epochs(cache, args.eval_images, args.batch, args.ceiling_later)
    print("ceiling_img_s_per_core=" + "/".join(f"{size}px:{rate:.0f}" for size, rate in ceiling.items())
          + f" later_vs_first_with_workers={later_vs_first:.1f} s3_vs_local={s3_later:.3f}")


if __name__ == "__main__":
    main()
