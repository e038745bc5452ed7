"""The face-recognition task in one process: a tiny demo set, one short epoch, verification, files."""

import numpy as np
import pandas as pd
import pytest
import torch

from trainables.config import TrainConfig
from insightface_writers import write_insightface_bin
from insightface_writers import write_insightface_rec
from trainables.data.formats.lfw_pairs import read_lfw_pairs
from task_harness import build, evaluate, pipe_for, prepare
from trainables.data.demo.celeba import write_demo_celeba
from trainables.data.demo.faces import write_demo_faces
from trainables.errors import UserError
from trainables.loop import TrainModule, train_one_epoch
from trainables.optim import build_optimizer
from trainables.tasks import EvalContext
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
    (root / "cache").mkdir()
    return root


def config(root, **changes) -> TrainConfig:
    values = {"task": "recognition", "model.name": "mobilefacenet", "data.root": str(root / "train"),
              "data.cache_dir": str(root / "cache"), "data.image_size": 112,
              "eval.targets": [str(root / "lfw"), str(root / "lfw_copy.bin")],
              "optim.name": "sgd", "optim.lr": 0.05, "optim.weight_decay": 5e-4, "optim.batch_size": 8,
              "optim.epochs": 1, "data.augment": ["hflip", "cutout", "half_face"], "head.center_lambda": 0.005,
              "head.center_lr": 0.3, "head.focal_gamma": 2.0, "head.label_smoothing": 0.1}
    return TrainConfig.from_dict({**values, **changes})


def test_one_epoch_then_verification_writes_recomputable_files(tiny_faces, tmp_path):
    cfg = config(tiny_faces)
    task = build(cfg)
    images, labels = next(iter(task.train_loader(0, 0, 1, 8, 0)))
    assert task.train_rows(1) == 32 and images.shape == (8, 3, 112, 112)
    assert labels.dtype == torch.int64 and labels.shape == (8,)
    module = TrainModule(task.model, task.criterion)
    pipe = pipe_for(task)
    optimizer, scheduler = build_optimizer(cfg.optim, module, task.train_rows(1) // 8, task.param_groups)

    centers = task.criterion.criterion.center_loss.centers
    center_groups = [g for g in optimizer.param_groups if any(p is centers for p in g["params"])]
    assert len(center_groups) == 1 and center_groups[0]["lr"] == pytest.approx(0.3)
    assert center_groups[0]["weight_decay"] == 0.0 and len(center_groups[0]["params"]) == 1
    assert all(g["lr"] == pytest.approx(0.05) for g in optimizer.param_groups if g is not center_groups[0])

    before = centers.detach().clone()
    stats = train_one_epoch(module, task.train_loader(0, 0, 1, 8, 0), optimizer, pipe, scheduler)
    assert stats.examples == 32 and np.isfinite(stats.loss_sum)
    assert not torch.equal(before, centers.detach())  # the centers trained in their own group

    result = evaluate(task, batch=16)
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


def test_split_over_ranks_embeds_each_image_once(tiny_faces):
    """Three ranks share the distinct images (LFW names a photo in several pairs); the gathered
    embeddings give every rank the one-rank distances."""
    from trainables.tasks.recognition import read_targets, target_roots, training_root
    from trainables.tasks.recognition.pairs import distances

    cfg = config(tiny_faces, **{"eval.targets": [str(tiny_faces / "lfw")]})
    task = build(cfg)
    pipe = pipe_for(task)
    pairs = read_targets(target_roots(cfg, training_root(cfg)))["lfw"]
    named = set(pairs.split.columns(["file"])["file"]) | set(pairs.split.columns(["file_b"])["file_b"])
    assert pairs.num_images == len(named) < 2 * len(pairs)  # each distinct photo once
    whole = distances(task.model, pairs, 112, EvalContext(pipe, 0, 1, 16, 0))
    assert len(whole) == len(pairs) == 40
    for r in range(3):  # without a process group, each rank embeds only its share: what it gathers is that share
        share = np.array_split(np.arange(pairs.num_images), 3)[r]
        assert len(list(pairs.images(share))) == len(share)


def test_no_center_loss_means_no_extra_group(tiny_faces):
    task = build(config(tiny_faces, **{"head.center_lambda": 0.0}))
    assert task.param_groups == [] and task.criterion.criterion.center_loss is None


def test_mobilefacenet_at_another_size_is_a_user_error(tiny_faces):
    with pytest.raises(UserError, match=r"data\.image_size=112"):
        build(config(tiny_faces, **{"data.image_size": 64}))
    with pytest.raises(UserError, match=r"data\.image_size=112"):
        prepare(config(tiny_faces, **{"data.image_size": 96}))


def test_any_timm_backbone_gets_the_embedding_head(tiny_faces):
    task = build(config(tiny_faces, **{"model.name": "resnet18", "data.image_size": 32}))
    task.model.eval()
    assert task.model(torch.zeros(2, 3, 32, 32)).shape == (2, 128)


def test_prepare_checks_the_data_and_every_target(tiny_faces, tmp_path):
    summary = prepare(config(tiny_faces))
    same = read_lfw_pairs(tiny_faces / "lfw").issame.mean()
    assert summary.baseline == {"val/chance_accuracy": pytest.approx(max(same, 1 - same))}
    assert summary.settings["data.root"] == summary.root and len(summary.settings["eval.targets"]) == 2
    assert summary.splits == {"train": 32, "lfw": 40, "lfw_copy": 40}
    with pytest.raises(UserError, match="missing.bin"):
        prepare(config(tiny_faces, **{"eval.targets": [str(tmp_path / "missing.bin")]}))
    with pytest.raises(UserError, match="this task reads faces"):
        prepare(config(tiny_faces, **{"data.format": "fairface"}))
    with pytest.raises(UserError, match="does not exist|not found"):
        prepare(config(tiny_faces, **{"data.root": str(tmp_path / "nowhere")}))


def test_insightface_rec_training_data(tiny_faces, tmp_path):
    files = sorted((tiny_faces / "train").glob("*/*.jpg"))
    labels = [int(p.parent.name[2:]) for p in files]
    write_insightface_rec(tmp_path / "rec", [p.read_bytes() for p in files], labels, num_classes=8)
    task = build(config(tiny_faces, **{"data.root": str(tmp_path / "rec"), "head.center_lambda": 0.0}))
    assert task.train_rows(1) == 32 and task.criterion.criterion.head.weight.shape == (8, 128)
    assert next(iter(task.train_loader(0, 0, 1, 4, 0)))[0].shape == (4, 3, 112, 112)


def test_celeba_identities_use_the_train_split_and_a_square_crop(tiny_faces, tmp_path):
    from trainables.data.formats.celeba import read_celeba

    root = write_demo_celeba(tmp_path / "celeba", num_images=60, seed=1)
    index = read_celeba(root)
    train = index.indices("train")
    task = build(config(tiny_faces, **{"data.root": str(root), "data.max_train_images": 10, "data.augment": []}))
    images, labels = next(iter(task.train_loader(0, 0, 1, 10, 0)))
    assert task.train_rows(1) == 10 and images.shape == (10, 3, 112, 112)
    classes = len(np.unique(index.identity[train]))
    assert task.criterion.criterion.head.weight.shape[0] == classes
    assert set(labels.tolist()) <= set(range(classes))


def test_chance_accuracy_is_the_more_common_answer_of_each_sets_own_pairs():
    from types import SimpleNamespace

    from trainables.tasks.recognition import chance_accuracy

    balanced = SimpleNamespace(issame=np.array([True, False] * 10))
    mostly_same = SimpleNamespace(issame=np.array([True, True, True, False] * 5))
    mostly_different = SimpleNamespace(issame=np.array([False] * 9 + [True]))
    assert chance_accuracy([balanced]) == 0.5
    assert chance_accuracy([mostly_same]) == 0.75
    assert chance_accuracy([balanced, mostly_same, mostly_different]) == pytest.approx((0.5 + 0.75 + 0.9) / 3)


def test_a_verification_after_the_first_decodes_no_image_and_gives_the_same_distances(tiny_faces, monkeypatch):
    """Its distinct images are kept decoded within what the training cache leaves of the budget; past it,
    they are read and decoded each time."""
    from trainables.data.loaders import EvalCaches
    from trainables.tasks.recognition import pairs as pairs_module
    from trainables.tasks.recognition import read_targets, target_roots, training_root

    cfg = config(tiny_faces, **{"eval.targets": [str(tiny_faces / "lfw")]})
    task = build(cfg)
    pairs = read_targets(target_roots(cfg, training_root(cfg)))["lfw"]
    ctx = EvalContext(pipe_for(task), 0, 1, 16, 0)
    calls = []
    real = pairs_module.decode_shard_image
    monkeypatch.setattr(pairs_module, "decode_shard_image", lambda *a, **k: calls.append(1) or real(*a, **k))
    plain = pairs_module.distances(task.model, pairs, 112, ctx)
    caches = EvalCaches(1 << 30)
    runs = [pairs_module.distances(task.model, pairs, 112, ctx, caches) for _ in range(3)]
    assert len(calls) == 2 * pairs.num_images  # plain once, then kept once
    assert all(np.array_equal(run, plain) for run in runs)
    calls.clear()
    some = EvalCaches(5 * 3 * 112 * 112)  # room for five faces
    runs = [pairs_module.distances(task.model, pairs, 112, ctx, some) for _ in range(2)]
    assert some.left == 0 and len(calls) == 2 * pairs.num_images - 5
    assert all(np.array_equal(run, plain) for run in runs)
    calls.clear()  # the task's own evaluation keeps its faces, in what the training cache leaves of the budget
    first = evaluate(task, batch=16).metrics
    assert len(calls) == pairs.num_images and evaluate(task, batch=16).metrics == first and len(calls) == pairs.num_images
