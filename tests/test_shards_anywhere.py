"""Where the shards live changes nothing a trial sees: the smoke sweep's first trial, with the settings the
sweep gives it, trained in one process (no Ray) from the demo set's local shards (no --data) and from the
same demo prepared into a bucket (s3://, moto's server on loopback), gives identical metrics; prepared into
a local folder, it gets the same settings too.

Seen before: the bucket's copy was taken for real data, so its trials got the real-data settings (128 px,
every image, another learning rate) and trained three times slower, to another accuracy."""

from __future__ import annotations

import pytest
import torch

from task_harness import build, evaluate, one_epoch
from orchestrator.preflight import Preflight
from orchestrator.space import is_domain
from orchestrator.sweep import SweepOptions
from trainables.config import TrainConfig
from trainables.data.demo.celeba import ensure_demo_celeba
from trainables.data.prepare import prepare
from trainables.data.sources import cache_dir

SWEEP = "celeba_backbones"
FEWER = ["data.max_train_images=256"]  # the same --set on every copy: it keeps the test short


@pytest.fixture(scope="module")
def demo_copies(s3_server, demo_cache, tmp_path_factory):
    """--data values of the demo set: none, its shards in a bucket, its shards in a folder."""
    raw, _ = ensure_demo_celeba(cache_dir())  # what a sweep without --data builds and trains from
    bucket = s3_server.create_bucket("demo-copy")
    prepare("celeba", raw, f"s3://{bucket}/celeba")
    local = tmp_path_factory.mktemp("demo-copy") / "celeba"
    prepare("celeba", raw, str(local))
    return {"demo": None, "s3": f"s3://{bucket}/celeba", "local": str(local)}


def first_trial_config(data: str | None) -> dict:
    """The config the sweep gives its first trial (the first backbone of its grid) for this --data."""
    pre = Preflight(SweepOptions(name=SWEEP, smoke=True, data=data, overrides=FEWER))
    pre.check_sweep()
    config = {k: v for k, v in pre.space.items() if not is_domain(v)}
    config["model.name"] = pre.sweep.param_space["model.name"]["grid_search"][0]
    return config


def one_trial_epoch(config: dict) -> dict:
    cfg = TrainConfig.from_dict(config)
    torch.manual_seed(cfg.seed)  # as the worker does before it builds the task
    task = build(cfg)
    stats = one_epoch(task, cfg, cfg.optim.batch_size)
    return {"train/loss_sum": stats.loss_sum, **evaluate(task, batch=cfg.optim.batch_size).metrics}


def test_the_demo_trains_identically_from_a_bucket_from_a_folder_and_from_the_cache(demo_copies):
    configs = {name: first_trial_config(data) for name, data in demo_copies.items()}
    settings = {name: {k: v for k, v in config.items() if k != "data.root"} for name, config in configs.items()}
    assert settings["s3"] == settings["demo"] and settings["local"] == settings["demo"], settings
    # Trained from the cache's shards (local) and from the bucket's; the folder's copy has the same settings.
    metrics = {name: one_trial_epoch(configs[name]) for name in ("demo", "s3")}
    assert metrics["demo"]["val/mean_accuracy"] > 0
    assert metrics["s3"] == metrics["demo"]
