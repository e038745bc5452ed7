"""The attributes training loader alone, in two cases of benchmarks/data_loader.py (a helper of it, not a
benchmark itself):

**The loader ceiling** (`loader_ceiling`) is what a GPU user needs: the attributes training loader alone
(a CelebA-layout demo set of `--ceiling-images`, 178x218 JPEGs, hflip), its batches thrown away, at 64,
128 and 224 px, with 0, 1 and 2 loader workers, one torch thread per process. Each case starts with a
new loader and an empty decoded cache; it prints images/s and images per CPU second ("per core") of the
first epoch, which decodes every image, and of the best later epoch, which the decoded cache (shared by
the persistent loader workers) serves. Cores to keep a GPU fed on data larger than the cache: the GPU's
images/s over the first epoch's per-core figure.

**From S3** (`s3_vs_local`): the attributes training loader over the ceiling's demo set, from its local
shards and from the same set prepared into an S3 bucket (moto's server on loopback, started here in this
process, as tests/s3_server.py does), alternating within each epoch. Each row group is one request (and
the next one is fetched while this one is decoded); once the decoded cache holds a row group's images,
its labels are kept too, so later epochs make no request.

**Evaluation** (`evaluation_epochs`): the attributes task's evaluation loaders (its val and test splits, as
each epoch's evaluation reads them) at 128 px with 0 and 2 loader workers: the first epoch decodes every
image; later ones take them from the evaluation splits' decoded caches, through the same loaders and their
persistent workers (loaders.EvalCaches).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

from data_loader_baseline import SEED, celeba_demo
from data_loader_timing import images_per_second

ROOT = Path(__file__).resolve().parents[1]

CEILING_SIZES = (64, 128, 224)
CEILING_WORKERS = (0, 1, 2)


def loader_ceiling(cache: Path, images: int, batch: int, later: int) -> tuple[dict[int, float], float]:
    """The attributes training loader alone (CelebA layout, 178x218 JPEGs, hflip), nothing done with
    its batches, at each size and loader worker count: the first epoch, which decodes every image, and
    the best of `later` epochs after it, which take them from the decoded cache. Each case starts from a
    fresh loader and an empty cache. Prints images/s and images per CPU second (this process and its
    loader workers: "per core"). Returns ({size: first-epoch images per CPU second with the most loader
    workers}, the smallest later/first ratio of images per CPU second over the cases with workers)."""
    import dataclasses

    from trainables.config import TrainConfig
    from trainables.tasks import get_task

    ceiling, ratios = {}, []
    print(f"loader ceiling: the attributes training loader alone, {images} demo images, batch {batch}, "
          f"first epoch and the best of {later} later ones, one torch thread per process", flush=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as DataLoader sets in its workers: per core means per decoding thread
    for size in CEILING_SIZES:
        cfg = TrainConfig.from_dict({"task": "attributes", "seed": SEED, "data.cache_dir": str(cache),
                                     "data.image_size": size, "data.augment": ["hflip"],
                                     "data.demo_images": images, "model.name": "resnet18"})
        setup = get_task("attributes").build(cfg)
        for workers in CEILING_WORKERS:
            stream = dataclasses.replace(setup.train_loader)  # a new stream: a new loader, an empty cache
            first = np.asarray(images_per_second(stream(0, 0, 1, batch, workers)))
            best = np.max([images_per_second(stream(epoch, 0, 1, batch, workers))
                           for epoch in range(1, later + 1)], axis=0)
            ratio = best[1] / first[1]
            if workers:
                ratios.append(ratio)
                ceiling[size] = first[1]
            print(f"  {size:3d} px, {workers} loader workers: first epoch {first[0]:6.0f} img/s, {first[1]:6.0f} per core; "
                  f"later {best[0]:6.0f} img/s, {best[1]:6.0f} per core; later/first per core {ratio:5.1f}", flush=True)
            del stream  # its loader workers end with it
    torch.set_num_threads(threads)
    return ceiling, min(ratios)


def s3_vs_local(cache: Path, images: int, batch: int, later: int) -> tuple[float, float]:
    """The attributes training loader (64 px, hflip, no loader workers, as a CPU trial loads) over the
    demo's local shards and over the same demo prepared into an S3 bucket: moto's server on loopback,
    started here as the tests start it (tests/s3_server.py), in this process. Local and S3 alternate
    within each epoch; returns the S3 images/s over the local ones for the first epoch (every row group's
    image bytes fetched and decoded) and for the best of `later` epochs (the decoded cache serves the
    images; only the label columns are fetched)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from s3_server import S3Server, apply_env, restore_env

    from trainables.config import TrainConfig
    from trainables.data.prepare import prepare
    from trainables.tasks import get_task

    server = S3Server()
    server.start()
    saved = apply_env(server)
    try:
        settings = {"task": "attributes", "seed": SEED, "data.cache_dir": str(cache), "data.image_size": 64,
                    "data.augment": ["hflip"], "data.demo_images": images, "model.name": "resnet18"}
        local = get_task("attributes").build(TrainConfig.from_dict(settings)).train_loader
        uri = f"s3://{server.create_bucket('bench-shards')}/celeba"
        t = time.perf_counter()
        prepare("celeba", celeba_demo(images)(cache), uri)
        print(f"s3: the {images}-image demo prepared into {uri} (moto on loopback) in {time.perf_counter() - t:.0f} s; "
              f"the attributes training loader, batch {batch}, first epoch and the best of {later} later ones",
              flush=True)
        remote = get_task("attributes").build(TrainConfig.from_dict({**settings, "data.root": uri})).train_loader
        rates = {"local": [], "s3": []}
        for epoch in range(later + 1):
            for name, stream in (("local", local), ("s3", remote)):
                rates[name].append(images_per_second(stream(epoch, 0, 1, batch, 0))[0])
    finally:
        restore_env(saved)
        server.stop()
    first = rates["s3"][0] / rates["local"][0]
    best = max(rates["s3"][1:]) / max(rates["local"][1:])
    print(f"  first epoch: local {rates['local'][0]:.0f} img/s, s3 {rates['s3'][0]:.0f} img/s; later: local "
          f"{max(rates['local'][1:]):.0f} img/s, s3 {max(rates['s3'][1:]):.0f} img/s", flush=True)
    print(f"s3_vs_local_first={first:.3f} s3_vs_local_later={best:.3f}", flush=True)
    return first, best


def evaluation_epochs(cache: Path, images: int, batch: int, later: int, size: int = 128) -> float:
    """The attributes evaluation loaders (val, then test, the whole split as one rank's share, no augmentation)
    of a demo set of `images`, as each epoch's evaluation gets them, with 0 and 2 loader workers and the
    caches of one trial (fresh per case): images/s and per CPU second of the first epoch and of the best of
    `later` epochs. Returns the smallest later/first ratio per CPU second."""
    from trainables.config import TrainConfig
    from trainables.data.loaders import EvalCaches, eval_loader, open_split
    from trainables.tasks import get_task

    cfg = TrainConfig.from_dict({"task": "attributes", "seed": SEED, "data.cache_dir": str(cache),
                                 "data.image_size": size, "data.augment": ["hflip"], "data.demo_images": images,
                                 "model.name": "resnet18"})
    setup = get_task("attributes").build(cfg)  # prepares the shards, as a trial does
    root = setup.train_loader.split.root
    splits = [open_split(root, name) for name in ("val", "test")]
    columns = splits[0].label_columns
    print(f"evaluation: the attributes val and test loaders at {size} px ({sum(s.num_rows for s in splits)} images), "
          f"batch {batch}, first epoch and the best of {later} later ones", flush=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    ratios = []
    for workers in (0, 2):
        caches = EvalCaches(setup.train_loader.cache_left)

        def epoch() -> np.ndarray:
            rates = [np.asarray(images_per_second(eval_loader(split, size, columns, 0, 1, batch, workers,
                                                              caches=caches))) for split in splits]
            rows = [split.num_rows for split in splits]  # both splits' images over both splits' seconds
            return np.array([sum(rows) / sum(n / r[0] for n, r in zip(rows, rates)),
                             sum(rows) / sum(n / r[1] for n, r in zip(rows, rates))])

        first = epoch()
        best = np.max([epoch() for _ in range(later)], axis=0)
        ratios.append(best[1] / first[1])
        print(f"  {workers} loader workers: first epoch {first[0]:6.0f} img/s, {first[1]:6.0f} per core; later "
              f"{best[0]:6.0f} img/s, {best[1]:6.0f} per core; later/first per core {ratios[-1]:5.1f}", flush=True)
    torch.set_num_threads(threads)
    print(f"eval_later_vs_first={min(ratios):.1f}", flush=True)
    return min(ratios)
