"""The CelebA attribute task end to end in one process: data, one epoch, evaluation, result files."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from trainables.config import TrainConfig
from trainables.data.demo.celeba import write_demo_celeba
from trainables.loop import InputPipe, TrainModule, train_one_epoch
from trainables.tasks.attributes.metrics import METRIC_NAMES, THRESHOLD_STRATEGIES, attribute_metrics
from trainables.models import input_normalization
from trainables.optim import build_optimizer
from trainables.tasks import EvalContext, build_task


@pytest.fixture(scope="module")
def tiny_celeba(tmp_path_factory):
    return write_demo_celeba(tmp_path_factory.mktemp("celeba"), num_images=240, seed=3)


def test_one_epoch_then_evaluation_writes_consistent_files(tiny_celeba, tmp_path):
    cfg = TrainConfig.from_dict({"data.root": str(tiny_celeba), "data.image_size": 32, "model.name": "resnet18",
                                 "optim.batch_size": 16, "optim.epochs": 1, "data.cache_dir": str(tmp_path / "cache")})
    task = build_task(cfg)  # packs the raw files into shards in the cache, then reads those
    assert list((tmp_path / "cache" / "prepared").iterdir())
    module = TrainModule(task.model, task.criterion)
    pipe = InputPipe(torch.device("cpu"), *input_normalization(task.model))
    steps = task.rows_per_rank(1) // 16
    optimizer, scheduler = build_optimizer(cfg.optim, module, steps)
    stats = train_one_epoch(module, task.loader(0, 0, 1, 16, 0, cfg.seed), optimizer, pipe, scheduler)
    assert stats.examples == steps * 16

    result = task.evaluate(task.model, EvalContext(pipe, rank=0, world=1, batch_size=32, loader_workers=0))
    for name in METRIC_NAMES:
        assert 0 <= result.metrics[f"val/{name}"] <= 1
        for strategy in THRESHOLD_STRATEGIES:
            assert f"test/{strategy}/{name}" in result.metrics
    assert np.isfinite(result.metrics["val/loss"])

    result.write_files(tmp_path)
    thresholds = json.loads((tmp_path / "thresholds.json").read_text())
    table = pd.read_csv(tmp_path / "per_attribute.csv")
    test = pd.read_parquet(tmp_path / "predictions" / "test.parquet")
    names = list(table["attribute"])
    assert len(names) == 40 and set(thresholds) == set(THRESHOLD_STRATEGIES)
    # Anyone can recompute a logged number from the files alone.
    scores = test[[f"score/{n}" for n in names]].to_numpy()
    labels = test[[f"label/{n}" for n in names]].to_numpy()
    t = np.array([thresholds["f1_opt"][n] for n in names])
    recomputed = attribute_metrics(scores, labels, t)["macro_f1"]
    assert recomputed == pytest.approx(result.metrics["test/f1_opt/macro_f1"], abs=1e-6)
