"""Is each task's shard loader faster than the raw-file loader it replaced? All three tasks, side by side;
then how fast the training loader alone can feed a GPU (the loader ceiling).

For each task, on its own synthetic demo set (built by the task's demo builder into a temporary cache):

- shards: the product's training loader, `get_task(name).build(cfg).train_loader(epoch, 0, 1, batch,
  workers)`, which streams the Parquet shards that `build` prepares (the first build packs them; that
  time is printed and not counted);
- files (the baseline): the deleted raw-file path, re-implemented below as `RawFileDataset` and
  `raw_file_loader`: a map-style Dataset that opens each JPEG with PIL, `draft("RGB", (size, size))`,
  converts to RGB, resizes BILINEAR with reducing_gap=2.0 to a uint8 CHW tensor, then a DataLoader
  over this rank's share of a seeded per-epoch permutation, drop_last.

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

**The loader ceiling** (`loader_ceiling`) is what a GPU user needs: the attributes training loader alone
(a CelebA-layout demo set of `--ceiling-images`, 178x218 JPEGs, hflip), its batches thrown away, at 64,
128 and 224 px, with 0, 1 and 2 loader workers, one torch thread per process. Each case starts with a
new loader and an empty decoded cache; it prints images/s and images per CPU second ("per core") of the
first epoch, which decodes every image, and of the best later epoch, which the decoded cache (shared by
the persistent loader workers) serves. Cores to keep a GPU fed on data larger than the cache: the GPU's
images/s over the first epoch's per-core figure. The last line is

    ceiling_img_s_per_core=64px:E/128px:F/224px:G later_vs_first_with_workers=H s3_vs_local=S

E, F, G: the first epoch's images per CPU second with 2 loader workers; H: the smallest later/first
ratio of images per CPU second over the cases with loader workers (target: at least 5); S: `s3_vs_local`
of later epochs, below.

**From S3** (`s3_vs_local`): the attributes training loader over the ceiling's demo set, from its local
shards and from the same set prepared into an S3 bucket (moto's server on loopback, started here in this
process, as tests/s3_server.py does), alternating within each epoch. Each row group is one request (and
the next one is fetched while this one is decoded); once the decoded cache holds a row group's images,
its labels are kept too, so later epochs make no request. The line before the last is
`s3_vs_local_first=… s3_vs_local_later=…` (target for later epochs: at least 0.8).

Run it from the repository root (about 5 minutes of CPU time on 2 cores, of which the ceiling takes about
half a minute; `--ceiling-only` took 77 s wall under other users' load):

    python benchmarks/data_loader.py [--images 2400] [--batch 64] [--workers 0] [--passes 5] [--steps 8]
                                     [--ceiling-images 720] [--ceiling-later 2] [--s3-later 3] [--ceiling-only]

(the trials load in the training process unless data.loader_workers is set, which is the
default `--workers 0`).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

SEED = 0


# ---- the baseline: the deleted raw-file training path (git show 7560a9b:trainables/data/loading.py) ----

def raw_decode(path: Path, size: int) -> torch.Tensor:
    """The old `decode_image`: PIL with JPEG draft mode, RGB, BILINEAR resize, uint8 CHW."""
    with Image.open(path) as img:
        img.draft("RGB", (size, size))
        img = img.convert("RGB").resize((size, size), Image.BILINEAR, reducing_gap=2.0)
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)


class RawFileDataset(Dataset):
    """The old `ImageLabelDataset` over image files: one JPEG opened per item."""

    def __init__(self, paths: list[Path], labels: np.ndarray, size: int, augment: Callable | None):
        self.paths, self.labels, self.size, self.augment = paths, labels, size, augment

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        img = raw_decode(self.paths[i], self.size)
        if self.augment is not None:
            img = self.augment(img)
        return img, torch.from_numpy(np.asarray(self.labels[i]))


class Subset(Dataset):
    def __init__(self, dataset: Dataset, indices: np.ndarray):
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.dataset[int(self.indices[i])]


def raw_file_loader(dataset: RawFileDataset, epoch: int, rank: int, world: int, batch: int,
                    workers: int) -> DataLoader:
    """The old `train_share` + `make_loader(train=True)`: this rank's n // world rows of a seeded
    per-epoch permutation, in that order, drop_last."""
    per_rank = len(dataset) // world
    share = np.random.default_rng([SEED, epoch]).permutation(len(dataset))[rank * per_rank:(rank + 1) * per_rank]
    return DataLoader(Subset(dataset, share), batch_size=batch, shuffle=False, drop_last=True,
                      num_workers=workers, pin_memory=torch.cuda.is_available())


# ---- the three tasks ---------------------------------------------------------------------------------

@dataclass
class Bench:
    task: str
    size: int
    augment: list[str]
    demo: Callable[[Path], Path]                              # cache -> the raw demo root
    raw: Callable[[Path], tuple[list[Path], np.ndarray]]      # raw root -> train paths, labels
    settings: dict                                            # extra config keys


def celeba_demo(images: int) -> Callable[[Path], Path]:
    from trainables.data.demo.celeba import ensure_demo_celeba
    from trainables.tasks.attributes import DEMO_SEED

    return lambda cache: ensure_demo_celeba(cache, num_images=images, seed=DEMO_SEED)[0]


def celeba_train(root: Path) -> tuple[list[Path], np.ndarray]:
    from trainables.data.formats.celeba import read_celeba

    index = read_celeba(root)
    rows = index.indices("train")
    return [index.image_path(int(i)) for i in rows], index.attributes[rows].astype(np.float32)


def fairface_demo(images: int) -> Callable[[Path], Path]:
    from trainables.data.demo.fairface import ensure_demo_fairface
    from trainables.tasks.fairface import DEMO_SEED

    return lambda cache: ensure_demo_fairface(cache, num_images=images, seed=DEMO_SEED)[0]


def fairface_train(root: Path) -> tuple[list[Path], np.ndarray]:
    from trainables.data.formats.fairface import read_fairface
    from trainables.tasks.fairface.labels import AGE_MIDPOINTS, class_indices

    index = read_fairface(root)
    rows = index.indices("train")
    race, gender, age = (class_indices([getattr(index, t)[i] for i in rows], t) for t in ("race", "gender", "age"))
    labels = np.column_stack([race, gender, age, AGE_MIDPOINTS[age]]).astype(np.float32)
    return [index.image_path(int(i)) for i in rows], labels


def faces_demo(images: int) -> Callable[[Path], Path]:
    from trainables.data.demo.faces import ensure_demo_faces
    from trainables.tasks.recognition import DEMO_SEED

    return lambda cache: ensure_demo_faces(cache, seed=DEMO_SEED)[0] / "train"  # as the task builds it


def faces_train(root: Path) -> tuple[list[Path], np.ndarray]:
    from trainables.data.formats.faces import read_face_folders

    index = read_face_folders(root)
    return list(index.files), index.labels.astype(np.int64)


def benches(images: int) -> list[Bench]:
    return [
        Bench("attributes", 64, ["hflip"], celeba_demo(images), celeba_train,
              {"data.demo_images": images, "model.name": "resnet18"}),
        Bench("fairface", 64, ["hflip"], fairface_demo(images), fairface_train,
              {"data.demo_images": images, "model.name": "resnet18"}),
        Bench("recognition", 112, ["hflip", "cutout", "half_face"], faces_demo(images), faces_train,
              {"model.name": "mobilefacenet"}),
    ]


# ---- measuring ---------------------------------------------------------------------------------------

def _worker_cpu(it) -> float:
    """CPU seconds the iterator's live loader workers have used so far (Linux /proc; 0 elsewhere)."""
    total = 0.0
    for worker in getattr(it, "_workers", []):
        try:
            with open(f"/proc/{worker.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
        except (OSError, ValueError, IndexError):
            pass
    return total


def _children_cpu() -> float:
    t = os.times()
    return t.children_user + t.children_system


def _cpu(it) -> float:
    """CPU seconds of this process, its reaped children and the iterator's live loader workers."""
    return time.process_time() + _children_cpu() + _worker_cpu(it)


def images_per_second(loader) -> tuple[float, float]:
    """One full pass, timed from its first batch (so worker start-up is excluded): (images per
    wall-clock second, images per CPU second of this process and its loader workers). The second is
    what a loaded, shared machine disturbs least. A worker reaped within the pass moves its time from
    the live workers' to this process's children's, so both are counted at both ends; persistent
    workers stay live."""
    it = iter(loader)
    next(it)
    cpu = _cpu(it)
    start, n = time.perf_counter(), 0
    for batch in it:
        n += len(batch[0])
    wall = time.perf_counter() - start
    cpu = _cpu(it) - cpu
    del it  # shuts non-persistent workers down, if the pass did not
    return n / wall, n / max(cpu, 1e-9)


def per_image_us(fn, items, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, time.perf_counter() - start)
    return best / len(items) * 1e6


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
    print("ceiling_img_s_per_core=" + "/".join(f"{size}px:{rate:.0f}" for size, rate in ceiling.items())
          + f" later_vs_first_with_workers={later_vs_first:.1f} s3_vs_local={s3_later:.3f}")


if __name__ == "__main__":
    main()
