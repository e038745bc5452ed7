"""Is the shard loader fast enough? Shards vs a folder of JPEGs vs one training step, in one run.

All three see the same CelebA-sized images (178x218 JPEGs from the demo generator, resized to 112)
and the same horizontal-flip augmentation, with the same DataLoader worker count:
- shards: `prepare("celeba")` output read by `ShardDataset` (uint8 tensors; the trainer normalises
  on the device);
- folder: a map-style Dataset over the JPEG paths doing what the seeds do (PIL open, convert RGB,
  resize to 112, ToTensor), no draft mode;
- training: timm resnet18 at 112, batch 64, AdamW, BCE on 40 outputs, torch threads = cores.
Each loader makes `--passes` full passes over the train split, alternating with the other; the
best pass counts, timed from its first batch (worker start-up excluded). The last line is
`shard_vs_folder=X loader_vs_train=Y`.

    python benchmarks/data_loader.py [--images 3000] [--workers N] [--passes 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

BATCH, SIZE = 64, 112


class FolderDataset(Dataset):
    """The seeds' loader: one JPEG file per item, decoded at full size by PIL."""

    def __init__(self, paths, labels):
        import torchvision.transforms as T

        self.paths, self.labels = paths, labels
        self.transform = T.Compose([T.Resize((SIZE, SIZE)), T.RandomHorizontalFlip(), T.ToTensor()])

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        from PIL import Image

        with Image.open(self.paths[i]) as img:
            img = img.convert("RGB")
        return self.transform(img), torch.from_numpy(self.labels[i].astype(np.float32))


def images_per_second(make_loader) -> float:
    """One full pass, timed from its first batch (so worker start-up is excluded)."""
    it = iter(make_loader())
    next(it)
    start, n = time.perf_counter(), 0
    for images, _ in it:
        n += len(images)
    return n / (time.perf_counter() - start)


def train_images_per_second(batch: torch.Tensor, threads: int, steps: int) -> float:
    import timm

    torch.set_num_threads(threads)
    model = timm.create_model("resnet18", pretrained=False, num_classes=40)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    criterion = torch.nn.BCEWithLogitsLoss()
    x = (batch.float() / 255 - 0.5) / 0.25
    y = torch.randint(0, 2, (len(batch), 40)).float()

    def step():
        optimizer.zero_grad(set_to_none=True)
        criterion(model(x), y).backward()
        optimizer.step()

    model.train()
    step()  # warm-up: allocations, kernel choice
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * len(batch) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000)
    cores = len(os.sched_getaffinity(0))
    parser.add_argument("--workers", type=int, default=cores, help=f"DataLoader workers (default: cores = {cores})")
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8, help="timed training steps")
    parser.add_argument("--row-group-rows", type=int, default=1000)
    args = parser.parse_args()

    from trainables.data.formats.celeba import ATTRIBUTE_NAMES, read_celeba
    from trainables.data.prepare import prepare
    from trainables.data.shards import ShardDataset, ShardSplit
    from trainables.data.demo.celeba import write_demo_celeba
    from trainables.data.transforms import build_augment

    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        t = time.perf_counter()
        src = write_demo_celeba(Path(tmp) / "celeba", args.images, seed=0)
        print(f"demo images: {args.images} in {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        info = prepare("celeba", src, str(Path(tmp) / "shards"), row_group_rows=args.row_group_rows)
        print(f"prepare: {info.counts} in {time.perf_counter() - t:.1f} s")

        split = ShardSplit(str(Path(tmp) / "shards"), "train", label_columns=list(ATTRIBUTE_NAMES))
        augment = build_augment(["hflip"], SIZE)
        epoch = iter(range(10**6))

        def shard_loader():
            e = next(epoch)
            ds = ShardDataset(split, split.train_row_groups(0, 1, e, seed=0), SIZE, augment=augment,
                              shuffle_seed=(0, e), label_dtype=torch.float32)
            return DataLoader(ds, batch_size=BATCH, num_workers=args.workers)

        index = read_celeba(src)
        rows = index.indices("train")
        folder = FolderDataset([index.image_path(i) for i in rows], index.attributes[rows])

        def folder_loader():
            return DataLoader(folder, batch_size=BATCH, shuffle=True, num_workers=args.workers)

        # Passes alternate between the loaders, so that load from other users of a shared machine
        # hits both alike; the best pass of each counts.
        shard = files = 0.0
        for _ in range(args.passes):
            shard = max(shard, images_per_second(shard_loader))
            files = max(files, images_per_second(folder_loader))
        print(f"shard loader: {shard:.0f} images/s ({args.workers} workers)")
        print(f"folder loader: {files:.0f} images/s ({args.workers} workers)")
        batch, _ = next(iter(shard_loader()))
        train = train_images_per_second(batch, cores, args.steps)
        print(f"resnet18 training: {train:.0f} images/s at {SIZE}x{SIZE}, batch {BATCH}, {cores} threads")
    print(f"shard_vs_folder={shard / files:.2f} loader_vs_train={shard / train:.2f}")


if __name__ == "__main__":
    main()
