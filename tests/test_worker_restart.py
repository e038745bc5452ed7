"""`train_fn_per_worker` restarted on its own checkpoints, in one process with `ray.train` stood in
for: a run restarted mid-way trains only the missing epochs, and reports for them exactly what the run
that never stopped reported (its random streams come back with the checkpoint); a run restarted after
its last epoch (a driver killed after a trial ended but before Tune saved that) reports its final result
again instead of ending with no result, which Tune rejects."""

from __future__ import annotations

import json

import pytest

from fake_train_session import FakeSession
from trainables import worker as train
from trainables.data.demo.celeba import write_demo_celeba


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    root = write_demo_celeba(tmp_path_factory.mktemp("celeba"), num_images=160, seed=5)
    return {"task": "attributes", "data.root": str(root), "data.image_size": 32, "model.name": "resnet18",
            "optim.batch_size": 16, "optim.epochs": 2, "data.max_train_images": 64,
            "data.cache_dir": str(tmp_path_factory.mktemp("cache"))}


def _run(monkeypatch, config, keep, checkpoint=None) -> FakeSession:
    session = FakeSession(keep, checkpoint)
    with monkeypatch.context() as patch:
        session.install(patch)
        train.train_fn_per_worker(config)
    return session


def test_restart_mid_run_trains_only_the_missing_epochs(monkeypatch, config, tmp_path):
    first = _run(monkeypatch, config, tmp_path / "a")
    assert [m["epoch"] for m, _ in first.reports] == [1, 2]
    resumed = _run(monkeypatch, config, tmp_path / "b", checkpoint=first.reports[0][1])
    # First the checkpoint's own result again (it may never have reached Tune), marked, with no checkpoint;
    # then only epoch 2 is trained.
    assert [(m["epoch"], m.get(train.RESUMED, 0)) for m, _ in resumed.reports] == [(1, 1), (2, 0)]
    replayed, checkpoint = resumed.reports[0]
    assert checkpoint is None and replayed["val/mean_accuracy"] == first.reports[0][0]["val/mean_accuracy"]
    assert not [k for k in replayed if k.endswith("_unix")]  # absolute times of the first attempt are not replayed


# What depends on the clock or the machine, not on the training: the rest must match to the last bit.
UNTIMED = ("train/images_per_sec", "train/threads_per_worker")


@pytest.mark.parametrize("loader_workers", [0, 1])
def test_a_run_resumed_at_an_epochs_end_reports_exactly_what_the_run_never_stopped_did(
        monkeypatch, config, tmp_path, loader_workers):
    """With no loader workers the main process flips the images; with one, the flips are drawn in a loader
    process seeded from the main process's stream at each epoch, and the evaluation's loader, kept from epoch 1
    on in the whole run and made anew in the resumed one, draws from that stream once per evaluation in both.
    Either way epochs 2 and 3 of the resumed run draw what those of the whole run drew: same loss, same
    metrics, same weights."""
    config = {**config, "data.loader_workers": loader_workers, "optim.epochs": 3}
    whole = _run(monkeypatch, config, tmp_path / "whole")
    resumed = _run(monkeypatch, config, tmp_path / "resumed", checkpoint=whole.reports[0][1])
    (expected, whole_last), (got, resumed_last) = whole.reports[2], resumed.reports[2]
    numbers = {k: v for k, v in expected.items()
               if isinstance(v, float) and not k.startswith("timing/") and k not in UNTIMED}
    assert "train/loss" in numbers and "val/mean_accuracy" in numbers
    assert {k: got[k] for k in numbers} == numbers
    import torch

    weights = [torch.load(folder / train.MODEL_WEIGHTS, weights_only=True) for folder in (whole_last, resumed_last)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_streams_are_restored_only_from_a_checkpoint_of_as_many_workers():
    import torch

    from trainables import rng

    saved = rng.capture()
    drawn = torch.rand(3)
    assert not rng.restore_rank([saved, saved], rank=0, world=1)  # written by two workers: left as it was
    assert not rng.restore_rank(None, rank=0, world=1)  # a checkpoint from before streams were kept
    assert not torch.equal(torch.rand(3), drawn)  # neither call rewound the stream
    assert rng.restore_rank([saved], rank=0, world=1)
    assert torch.equal(torch.rand(3), drawn)


def test_restart_after_the_last_epoch_reports_the_final_result_again(monkeypatch, config, tmp_path):
    first = _run(monkeypatch, config, tmp_path / "a")
    final_metrics, final_checkpoint = first.reports[-1]
    again = _run(monkeypatch, config, tmp_path / "b", checkpoint=final_checkpoint)
    assert len(again.reports) == 1
    metrics, checkpoint = again.reports[0]
    numbers = {k: v for k, v in final_metrics.items() if not isinstance(v, str)}
    assert {k: metrics[k] for k in numbers} == pytest.approx(numbers) and metrics["epoch"] == 2
    assert first.reports[0][0]["tag/worker_nodes"] == "local"  # outside Ray, the one rank's node has no Ray id
    assert "val/mean_accuracy" in metrics  # the sweep's metric: Tune fails a trial whose last result lacks it
    assert checkpoint is not None and (checkpoint / train.MODEL_WEIGHTS).is_file()
    assert json.loads((checkpoint / train.CHECKPOINT_META).read_text())["epoch"] == 2
