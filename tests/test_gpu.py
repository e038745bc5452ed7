"""The CUDA path: bf16 autocast, channels_last, NCCL, and fractional GPUs packing trials onto one GPU.

Every test here is marked `gpu` and skipped where torch sees no CUDA device (conftest.py), so CI,
which has none, skips them cleanly; run them on a GPU machine with `pytest -m gpu`.
"""

from __future__ import annotations

import pytest
import torch

from trainables.config import TrainConfig
from trainables.data.demo.celeba import write_demo_celeba
from trainables.loop import InputPipe, TrainModule, train_one_epoch
from trainables.models import input_normalization
from trainables.optim import build_optimizer
from trainables.tasks import get_task

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def tiny_celeba(tmp_path_factory):
    return write_demo_celeba(tmp_path_factory.mktemp("celeba"), num_images=240, seed=3)


def test_an_epoch_on_the_gpu_runs_in_bf16_and_channels_last(tiny_celeba, tmp_path):
    cfg = TrainConfig.from_dict({"task": "attributes", "data.root": str(tiny_celeba), "data.image_size": 64, "model.name": "resnet18",
                                 "optim.batch_size": 16, "data.cache_dir": str(tmp_path / "cache")})
    task = get_task(cfg.task).build(cfg)
    device = torch.device("cuda")
    model = task.model.to(device).to(memory_format=torch.channels_last)
    module = TrainModule(model, task.criterion.to(device))
    pipe = InputPipe(device, *input_normalization(model), channels_last=True)
    seen = {}

    def record(layer, inputs, output):
        seen.setdefault("dtype", output.dtype)
        seen.setdefault("channels_last", inputs[0].is_contiguous(memory_format=torch.channels_last))

    model.conv1.register_forward_hook(record)
    optimizer, scheduler = build_optimizer(cfg.optim, module, task.train_rows(1) // 16, task.param_groups)
    stats = train_one_epoch(module, task.train_loader(0, 0, 1, 16, 2), optimizer, pipe, scheduler)
    assert stats.examples > 0 and torch.isfinite(torch.tensor(stats.loss_sum))
    assert seen == {"dtype": torch.bfloat16, "channels_last": True}
    assert model.conv1.weight.is_contiguous(memory_format=torch.channels_last)


def test_pinned_batches_from_loader_workers_are_the_pooled_ones_and_free_their_slots(tmp_path):
    """With CUDA, the loader pins: the pin thread copies each pooled batch (trainables/data/batch_pool.py) into
    pinned memory and frees its slot at once."""
    import gc

    from trainables.data.loaders import TrainStream
    from trainables.data.prepare import prepare
    from trainables.data.shards import ShardSplit

    prepare("celeba", write_demo_celeba(tmp_path / "raw", num_images=120, seed=5), str(tmp_path / "shards"))
    split = ShardSplit(str(tmp_path / "shards"), "train", label_columns=["Smiling"])
    runs = []
    for pooled in (True, False):
        loader = TrainStream(split, 32, ["Smiling"], None, seed=0, cache_mb=64)(0, 0, 1, 8, 2)
        loader.collate_fn.shared = pooled  # before the workers start
        runs.append(list(loader))
        assert all(images.is_pinned() and labels.is_pinned() for images, labels in runs[-1])
        gc.collect()
        assert not loader.collate_fn.flags.any()
    for (a, la), (b, lb) in zip(*runs):
        assert torch.equal(a, b) and torch.equal(la, lb)


@pytest.mark.ray
def test_quarter_gpus_plan_both_smoke_trials_at_once_on_one_gpu(local_ray, tmp_path):
    from mlflow import MlflowClient

    from orchestrator.sweep import SweepOptions, run_sweep

    if not local_ray.cluster_resources().get("GPU"):
        pytest.skip("the session's local Ray was started without GPUs")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run_sweep(SweepOptions("celeba_backbones", smoke=True, gpus_per_worker=0.25, storage=str(tmp_path / "runs"),
                           tracking_uri=uri, overrides=["optim.epochs=1", "data.max_train_images=320"]))
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("celeba_backbones")
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    plan = parent.data.params["resources"]
    assert "0.25 GPU" in plan and "up to 2 trials at once" in plan and "4 trials' workers share each GPU" in plan
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 2 and all(r.info.status == "FINISHED" for r in children)
    assert all(r.data.tags["device"] != "cpu" for r in children)
