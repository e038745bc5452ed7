"""The CelebA attribute task end to end in one process: data, one epoch, evaluation, result files."""

import json

import numpy as np
import pandas as pd
import pytest

from trainables.config import TrainConfig
from trainables.data.demo.celeba import write_demo_celeba
from trainables.tasks.attributes.metrics import METRIC_NAMES, THRESHOLD_STRATEGIES, attribute_metrics
from task_harness import build, evaluate, one_epoch


@pytest.fixture(scope="module")
def tiny_celeba(tmp_path_factory):
    return write_demo_celeba(tmp_path_factory.mktemp("celeba"), num_images=240, seed=3)


def test_one_epoch_then_evaluation_writes_consistent_files(tiny_celeba, tmp_path):
    cfg = TrainConfig.from_dict({"task": "attributes", "data.root": str(tiny_celeba), "data.image_size": 32, "model.name": "resnet18",
                                 "optim.batch_size": 16, "optim.epochs": 1, "data.cache_dir": str(tmp_path / "cache")})
    task = build(cfg)  # packs the raw files into shards in the cache, then reads those
    assert list((tmp_path / "cache" / "prepared").iterdir())
    one_epoch(task, cfg, 16)
    result = evaluate(task)
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
