"""The face-recognition task in one process: a tiny demo set, one short epoch, verification, files."""

import numpy as np
import pandas as pd
import pytest
import torch

from trainables.config import TrainConfig
from trainables.data.formats.insightface_bin import write_insightface_bin
from trainables.data.formats.insightface_rec import write_insightface_rec
from trainables.data.formats.lfw_pairs import read_lfw_pairs
from trainables.data.decode import make_loader, train_share
from trainables.data.demo.celeba import write_demo_celeba
from trainables.data.demo.faces import write_demo_faces
from trainables.errors import UserError
from trainables.loop import InputPipe, TrainModule, train_one_epoch
from trainables.models import input_normalization
from trainables.optim import build_optimizer
from trainables.tasks import EvalContext, build_task, prepare_task_data
from trainables.tasks.recognition.verification import recompute_accuracy

TINY = dict(num_identities=8, images_per_identity=4, verify_identities=20, pairs_per_fold=2, seed=5)
KEYS = ("accuracy", "accuracy_std", "tar_at_far_1e-3")


@pytest.fixture(scope="module")
def tiny_faces(tmp_path_factory):
    root = write_demo_faces(tmp_path_factory.mktemp("faces"), **TINY)
    pairs = read_lfw_pairs(root / "lfw")
    # The same pairs as an InsightFace .bin: both targets must score identically.
    images = [p.read_bytes() for pair in zip(pairs.left, pairs.right) for p in pair]
    write_insightface_bin(root / "lfw_copy.bin", images, pairs.issame.tolist())
    return root


def config(root, **changes) -> TrainConfig:
    values = {"task": "face_recognition", "model.name": "mobilefacenet", "data.root": str(root / "train"),
              "data.format": "faces", "data.image_size": 112, "eval.targets": [str(root / "lfw"), str(root / "lfw_copy.bin")],
              "optim.name": "sgd", "optim.lr": 0.05, "optim.weight_decay": 5e-4, "optim.batch_size": 8,
              "optim.epochs": 1, "data.augment": ["hflip", "cutout", "half_face"], "head.center_lambda": 0.005,
              "head.center_lr": 0.3, "head.focal_gamma": 2.0, "head.label_smoothing": 0.1}
    return TrainConfig.from_dict({**values, **changes})


def test_one_epoch_then_verification_writes_recomputable_files(tiny_faces, tmp_path):
    cfg = config(tiny_faces)
    task = build_task(cfg)
    assert len(task.train_set) == 32 and task.train_set[0][0].shape == (3, 112, 112)
    assert task.train_set[0][1].dtype == torch.int64
    module = TrainModule(task.model, task.criterion)
    pipe = InputPipe(torch.device("cpu"), *input_normalization(task.model))
    optimizer, scheduler = build_optimizer(cfg.optim, module, len(task.train_set) // 8, task.param_groups)

    centers = task.criterion.criterion.center_loss.centers
    center_groups = [g for g in optimizer.param_groups if any(p is centers for p in g["params"])]
    assert len(center_groups) == 1 and center_groups[0]["lr"] == pytest.approx(0.3)
    assert center_groups[0]["weight_decay"] == 0.0 and len(center_groups[0]["params"]) == 1
    assert all(g["lr"] == pytest.approx(0.05) for g in optimizer.param_groups if g is not center_groups[0])

    before = centers.detach().clone()
    loader = make_loader(task.train_set, train_share(len(task.train_set), 0, 1, 0, 0), 8, 0, train=True)
    stats = train_one_epoch(module, loader, optimizer, pipe, scheduler)
    assert stats.examples == 32 and np.isfinite(stats.loss_sum)
    assert not torch.equal(before, centers.detach())  # the centers trained in their own group

    result = task.evaluate(task.model, EvalContext(pipe, rank=0, world=1, batch_size=16, loader_workers=0))
    for target in ("lfw", "lfw_copy"):
        for key in KEYS:
            assert 0.0 <= result.metrics[f"val/{target}/{key}"] <= 1.0
    assert result.metrics["val/lfw/accuracy"] == pytest.approx(result.metrics["val/lfw_copy/accuracy"])
    assert result.metrics["val/mean_verification_accuracy"] == pytest.approx(result.metrics["val/lfw/accuracy"])
    assert "val/loss" not in result.metrics  # verification identities are no training classes

    result.write_files(tmp_path)
    assert (tmp_path / "verification" / "roc.png").stat().st_size > 0
    for target in ("lfw", "lfw_copy"):
        table = pd.read_parquet(tmp_path / "verification" / f"{target}.parquet")
        assert list(table.columns) == ["distance", "issame", "fold"] and len(table) == 40
        assert recompute_accuracy(table) == pytest.approx(result.metrics[f"val/{target}/accuracy"], abs=1e-12)


def test_split_over_ranks_counts_each_pair_once(tiny_faces):
    """Shares of a 3-rank evaluation, concatenated, are the one-rank distances (the gather is a concat)."""
    from trainables.tasks.recognition import pair_distances_gathered, read_targets

    cfg = config(tiny_faces, **{"eval.targets": [str(tiny_faces / "lfw")]})
    task = build_task(cfg)
    pipe = InputPipe(torch.device("cpu"), *input_normalization(task.model))
    pairs = read_targets(cfg)["lfw"]
    whole = pair_distances_gathered(task.model, pairs, 112, EvalContext(pipe, 0, 1, 16, 0))
    parts = [pair_distances_gathered(task.model, pairs, 112, EvalContext(pipe, r, 3, 16, 0)) for r in range(3)]
    assert len(whole) == len(pairs) == 40
    np.testing.assert_allclose(np.concatenate(parts), whole, rtol=1e-5, atol=1e-6)


def test_no_center_loss_means_no_extra_group(tiny_faces):
    task = build_task(config(tiny_faces, **{"head.center_lambda": 0.0}))
    assert task.param_groups == [] and task.criterion.criterion.center_loss is None


def test_mobilefacenet_at_another_size_is_a_user_error(tiny_faces):
    with pytest.raises(UserError, match=r"data\.image_size=112"):
        build_task(config(tiny_faces, **{"data.image_size": 64}))
    with pytest.raises(UserError, match=r"data\.image_size=112"):
        prepare_task_data(config(tiny_faces, **{"data.image_size": 96}))


def test_any_timm_backbone_gets_the_embedding_head(tiny_faces):
    task = build_task(config(tiny_faces, **{"model.name": "resnet18", "data.image_size": 32}))
    task.model.eval()
    assert task.model(torch.zeros(2, 3, 32, 32)).shape == (2, 128)


def test_prepare_checks_the_data_and_every_target(tiny_faces, tmp_path):
    summary = prepare_task_data(config(tiny_faces))
    assert summary.baseline == {"val/chance_accuracy": 0.5} and summary.root == str(tiny_faces / "train")
    with pytest.raises(UserError, match="missing.bin"):
        prepare_task_data(config(tiny_faces, **{"eval.targets": [str(tmp_path / "missing.bin")]}))
    with pytest.raises(UserError, match="data.format"):
        prepare_task_data(config(tiny_faces, **{"data.format": "celeba"}))
    with pytest.raises(UserError, match="does not exist|not found"):
        prepare_task_data(config(tiny_faces, **{"data.root": str(tmp_path / "nowhere")}))


def test_insightface_rec_training_data(tiny_faces, tmp_path):
    files = sorted((tiny_faces / "train").glob("*/*.jpg"))
    labels = [int(p.parent.name[2:]) for p in files]
    write_insightface_rec(tmp_path / "rec", [p.read_bytes() for p in files], labels, num_classes=8)
    task = build_task(config(tiny_faces, **{"data.root": str(tmp_path / "rec"), "data.format": "insightface_rec",
                                            "head.center_lambda": 0.0}))
    assert len(task.train_set) == 32 and task.criterion.criterion.head.weight.shape == (8, 128)
    assert task.train_set[0][0].shape == (3, 112, 112)


def test_celeba_identities_use_the_train_split_and_a_square_crop(tiny_faces, tmp_path):
    from trainables.data.formats.celeba import read_celeba

    root = write_demo_celeba(tmp_path / "celeba", num_images=60, seed=1)
    index = read_celeba(root)
    train = index.indices("train")
    task = build_task(config(tiny_faces, **{"data.root": str(root), "data.format": "celeba_identities",
                                            "data.max_train_images": 10, "data.augment": []}))
    assert len(task.train_set) == 10 and task.train_set[0][0].shape == (3, 112, 112)
    classes = len(np.unique(index.identity[train][:10]))
    assert task.criterion.criterion.head.weight.shape[0] == classes
    assert set(task.train_set.labels.tolist()) == set(range(classes))
