"""What benchmarks/data_loader.py compares the product's shard loaders against, and on which data.

- The baseline: the deleted raw-file training path (git show 7560a9b:trainables/data/loading.py),
  re-implemented here as `RawFileDataset` and `raw_file_loader`: a map-style Dataset that opens each JPEG
  with PIL, `draft("RGB", (size, size))`, converts to RGB, resizes BILINEAR with reducing_gap=2.0 to a
  uint8 CHW tensor, then a DataLoader over this rank's share of a seeded per-epoch permutation, drop_last.
- Each task's synthetic demo set (built by the task's demo builder) and the train-split files and labels
  the baseline reads from it (`benches`), at the size and augmentation of the task's demo sweep.

A helper of data_loader.py, not a benchmark itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

SEED = 0


# ---- the baseline: the deleted raw-file training path ------------------------------------------------

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
