"""`eval.every_steps`: the worker's own training function (`trainables/worker.py`), run in this process with
Ray Train's calls replaced by a recorder, evaluates, reports and checkpoints every N optimizer steps; a trial
resumed from a checkpoint taken mid-epoch trains on each of that epoch's rows exactly once, and ends where
the uninterrupted trial ended."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest
import ray.train.torch
from torch import nn

from fake_train_session import FakeSession
from task_harness import prepare
from trainables.artifacts import RESUMED
from trainables.config import TrainConfig
from trainables.worker import _train

EVERY = 5
BATCH = 16
ROWS = 96            # 6 batches an epoch: evaluations at steps 5, 10 and the end of training, 12
CONFIG = {"task": "attributes", "model.name": "resnet18", "data.image_size": 32, "data.augment": [],
          "data.max_train_images": ROWS, "optim.batch_size": BATCH, "optim.epochs": 2, "optim.warmup_epochs": 0,
          "eval.every_steps": EVERY, "data.decoded_cache_mb": 0, "data.demo_images": 400}  # a small val and test set


class _RowRecorder(nn.Module):
    """What `prepare_model` returns here: the TrainModule, noting each row it trains on (by its pixels)."""

    def __init__(self, module: nn.Module, seen: list):
        super().__init__()
        self.module, self.seen = module, seen

    def forward(self, images, targets):
        self.seen.extend(hash(row.numpy().tobytes()) for row in images.detach())
        return self.module(images, targets)


class _Trial(FakeSession):
    """One attempt of a trial: its reports, their checkpoints, and the rows it trained on."""

    def __init__(self, monkeypatch, folder: Path, resume_from: Path | None = None):
        super().__init__(folder, resume_from)
        self.rows = []
        self.install(monkeypatch)
        monkeypatch.setattr(ray.train.torch, "prepare_model", lambda module: _RowRecorder(module, self.rows))

    @property
    def checkpoints(self) -> list[Path]:
        return [kept for _, kept in self.reports if kept is not None]

    def evaluations(self) -> list[dict]:
        return [metrics for metrics, _ in self.reports if not metrics.get(RESUMED)]


@pytest.fixture(scope="module")
def config(demo_cache):
    cfg = TrainConfig.from_dict(CONFIG)
    return {**CONFIG, **prepare(cfg, say=lambda *_: None).settings}


def _run(monkeypatch, folder: Path, config: dict, resume_from: Path | None = None) -> _Trial:
    folder.mkdir()
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the worker's threads, as Ray would set them for its 2 CPUs
    trial = _Trial(monkeypatch, folder, resume_from)
    _train(dict(config), {"metric": "val/mean_accuracy", "mode": "max"})
    return trial


def test_reports_come_every_n_steps_and_a_mid_epoch_resume_trains_each_row_once(monkeypatch, tmp_path, config):
    whole = _run(monkeypatch, tmp_path / "whole", config)
    reported = whole.evaluations()
    assert [r["step"] for r in reported] == [EVERY, 2 * EVERY, 12]  # N, 2N, and the end of training
    assert [r["evaluation"] for r in reported] == [1, 2, 3]
    assert [r["epoch"] for r in reported] == pytest.approx([5 / 6, 1 + 4 / 6, 2.0], abs=1e-4)
    assert all("val/mean_accuracy" in r for r in reported)
    assert {r["best/step"] for r in reported if "best/step" in r} <= {EVERY, 2 * EVERY, 12}  # MLflow steps
    assert len(whole.rows) == 2 * ROWS

    # Resume from the checkpoint at step 10: epoch 2, after 4 of its 6 batches.
    resumed = _run(monkeypatch, tmp_path / "resumed", config, resume_from=whole.checkpoints[1])
    assert [r["step"] for r in resumed.evaluations()] == [12]
    assert resumed.reports[0][0].get(RESUMED) == 1  # the checkpoint's own result is handed to Tune again first
    second_epoch = whole.rows[ROWS:]
    before_the_checkpoint = second_epoch[:4 * BATCH]
    seen = collections.Counter(before_the_checkpoint + resumed.rows)
    assert seen == collections.Counter(second_epoch) and max(seen.values()) == 1
    assert resumed.rows == second_epoch[4 * BATCH:]  # in the same order as uninterrupted
    # Nothing was repeated or skipped, so the resumed trial ends where the uninterrupted one did.
    final, again = reported[-1], resumed.evaluations()[-1]
    assert again["val/mean_accuracy"] == pytest.approx(final["val/mean_accuracy"], abs=1e-6)
    assert again["train/loss"] == pytest.approx(final["train/loss"], rel=1e-4)


def test_without_every_steps_a_trial_reports_once_per_epoch(monkeypatch, tmp_path, config):
    trial = _run(monkeypatch, tmp_path / "trial", {**config, "eval.every_steps": 0})
    reported = trial.evaluations()
    assert [r["epoch"] for r in reported] == [1, 2]
    assert not any("step" in r or "evaluation" in r for r in reported)


def test_asha_counts_evaluations_of_one_length_only():
    from ray import tune

    from orchestrator.space import evaluation_interval
    from trainables.errors import UserError

    assert evaluation_interval({"eval.every_steps": 5000}, early_stopping=True) == 5000
    assert evaluation_interval({}, early_stopping=True) == 0
    varied = {"eval.every_steps": tune.grid_search([0, 100])}
    assert evaluation_interval(varied, early_stopping=False) == 0
    with pytest.raises(UserError, match="eval.every_steps varies between trials.*--no-early-stopping"):
        evaluation_interval(varied, early_stopping=True)
