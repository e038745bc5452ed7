"""`train_fn_per_worker` restarted on its own checkpoints, in one process with `ray.train` stood in
for: a run restarted mid-way trains only the missing epochs, and a run restarted after its last
epoch (a driver killed after a trial ended but before Tune saved that) reports its final result
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
