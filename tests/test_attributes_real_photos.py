"""The attribute task learns on real photographs, not only on the drawn demo faces.

No dataset can be downloaded here, so the photos are the ones our dependencies ship: Grace Hopper's
portrait (matplotlib's sample data) and scikit-learn's two sample photos (a temple, a flower). A
small set in the generic layout (an image folder and one label CSV) is cut from them: random crops
at random scales, each a little brightened or darkened. `Person` (the crop is of the portrait) is
the easy attribute; `Bright` (+-6% brightness, against three scenes of different brightness) is the
harder one. Prepared and trained in one process as a worker would, five short epochs of a small
ResNet must put the easy attribute's test accuracy well above its majority baseline.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib import cbook
from PIL import Image, ImageEnhance
from sklearn.datasets import load_sample_image

from trainables import artifacts
from trainables.config import TrainConfig

from task_harness import build, evaluate, one_epoch
from task_harness import prepare as prepare_task

SPLIT_SIZES = {"train": 240, "val": 60, "test": 120}
PIXELS = 40


def photos() -> dict[str, np.ndarray]:
    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as portrait:
        person = np.asarray(portrait.convert("RGB"))
    return {"person": person, "temple": load_sample_image("china.jpg"), "flower": load_sample_image("flower.jpg")}


def write_photo_set(root: Path, seed: int = 0) -> Path:
    """images/NNNN.jpg and labels.csv (file, Person, Bright, split): a third of the crops of each photo."""
    rng = np.random.default_rng(seed)
    sources = photos()
    kinds = list(sources)
    (root / "images").mkdir(parents=True)
    splits = [s for s, n in SPLIT_SIZES.items() for _ in range(n)]
    rows = []
    for i, split in enumerate(splits):
        kind = kinds[i % len(kinds)]
        image = sources[kind]
        h, w = image.shape[:2]
        side = int(rng.uniform(0.35, 0.8) * min(h, w))
        y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        crop = Image.fromarray(image[y:y + side, x:x + side]).resize((PIXELS, PIXELS), Image.BILINEAR)
        bright = int(rng.random() < 0.5)
        name = f"images/{i:04d}.jpg"
        ImageEnhance.Brightness(crop).enhance(1.06 if bright else 0.94).save(root / name, quality=90)
        rows.append((name, int(kind == "person"), bright, split))
    with open(root / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "Person", "Bright", "split"])
        writer.writerows(rows)
    return root


def test_learns_the_easy_attribute_of_real_photos_well_above_its_majority_baseline(tmp_path):
    root = write_photo_set(tmp_path / "photos")
    cfg = TrainConfig.from_dict({"task": "attributes", "data.root": str(root), "data.image_size": 32, "model.name": "resnet10t",
                                 "optim.batch_size": 32, "optim.epochs": 5, "data.cache_dir": str(tmp_path / "cache")})
    said = []
    prepare_task(cfg, said.append)
    assert "2 attributes, named by the label file: Person, Bright." in said
    torch.manual_seed(0)
    task = build(cfg)
    for epoch in range(cfg.optim.epochs):
        one_epoch(task, cfg, cfg.optim.batch_size, epoch)
    result = evaluate(task)
    result.write_files(tmp_path / "trial")
    table = pd.read_csv(tmp_path / "trial" / artifacts.PER_ATTRIBUTE).set_index("attribute")
    assert list(table.index) == ["Person", "Bright"]

    person = table.loc["Person"]
    majority = max(person["test_positive_rate"], 1 - person["test_positive_rate"])
    assert majority == pytest.approx(2 / 3)
    assert person["fixed/accuracy"] >= majority + 0.2, table.to_string()  # 0.98-0.99 measured over 4 seeds
    assert result.metrics["test/fixed/mean_accuracy"] == pytest.approx(table["fixed/accuracy"].mean())
