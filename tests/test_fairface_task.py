"""The FairFace task end to end in one process (no Ray): data, one epoch, evaluation, result files,
and every logged number recomputed with scikit-learn from the files alone."""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, mean_absolute_error

from trainables.config import TrainConfig
from task_harness import build, evaluate, one_epoch, pipe_for, prepare
from trainables.data.demo.fairface import write_demo_fairface
from trainables.data.formats.fairface import AGE_BINS, GENDERS, RACES
from trainables.data.loaders import eval_loader
from trainables.data.shards import ShardSplit, load_metadata
from trainables.errors import UserError
from trainables.loop import predict
from trainables.tasks.fairface import LABEL_COLUMNS, FairFaceTargets
from trainables.tasks.fairface.group_metrics import group_metrics, group_table, slug
from trainables.tasks.fairface.labels import AGE_MIDPOINTS
from trainables.tasks.fairface.outputs import describe_predictions

TASKS = ("race", "gender", "age")
COLUMNS = {"race": "race", "gender": "gender", "age": "age_bin"}


@pytest.fixture(scope="module")
def tiny_fairface(tmp_path_factory):
    return write_demo_fairface(tmp_path_factory.mktemp("fairface"), num_images=120, seed=3)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("fairface-cache")


def config(root, cache_dir, **overrides) -> TrainConfig:
    return TrainConfig.from_dict({"task": "fairface", "data.root": str(root), "data.cache_dir": str(cache_dir),
                                  "data.image_size": 32, "model.name": "resnet18", "optim.batch_size": 16,
                                  "optim.epochs": 1, **overrides})


def val_loader(cfg, rank=0, world=1, batch=32):
    """The val split as the task reads it, from the shards it trains from."""
    split = ShardSplit(prepare(cfg).root, "val", LABEL_COLUMNS)
    return eval_loader(split, cfg.data.image_size, LABEL_COLUMNS, rank, world, batch, 0, targets=FairFaceTargets(),
                       label_dtype=torch.float32)


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@pytest.mark.parametrize("formulation,mode,weighting", [("multihead", "bins", "fixed"),
                                                        ("multihead", "regression", "uncertainty"),
                                                        ("onehot18", "bins", "fixed")])
def test_one_epoch_then_evaluation_agrees_with_sklearn(tiny_fairface, cache, tmp_path, formulation, mode, weighting):
    torch.manual_seed(0)
    cfg = config(tiny_fairface, cache, **{"multitask.formulation": formulation, "age.mode": mode,
                                          "multitask.weighting": weighting})
    task = build(cfg)
    stats = one_epoch(task, cfg, 16)
    assert np.isfinite(stats.loss_sum)

    result = evaluate(task)
    m = result.metrics
    result.write_files(tmp_path)
    assert (tmp_path / "group_accuracy.png").stat().st_size > 1000
    val = pd.read_parquet(tmp_path / "predictions" / "val.parquet")
    table = pd.read_csv(tmp_path / "per_group.csv", keep_default_na=True)
    assert len(val) == 20 and val["file"].str.startswith("val/").all()

    # Every headline number, recomputed from the files with scikit-learn.
    for task_name in TASKS:
        true, pred = val[f"true_{COLUMNS[task_name]}"], val[f"pred_{COLUMNS[task_name]}"]
        assert m[f"val/{task_name}/accuracy"] == pytest.approx(accuracy_score(true, pred), abs=1e-9)
        assert m[f"val/{task_name}/balanced_accuracy"] == pytest.approx(balanced_accuracy_score(true, pred), abs=1e-9)
    assert m["val/age/mae_years"] == pytest.approx(mean_absolute_error(val["true_age_years"], val["pred_age_years"]),
                                                   abs=1e-4)
    # The official release gives bins only: a true age is its bin's midpoint.
    midpoints = AGE_MIDPOINTS[[AGE_BINS.index(b) for b in val["true_age_bin"]]]
    np.testing.assert_array_equal(val["true_age_years"], midpoints)
    assert m["val/mean_task_accuracy"] == pytest.approx(np.mean([m[f"val/{t}/accuracy"] for t in TASKS]))

    # The group table is a groupby of the predictions; worst and gap pool race and gender groups.
    for kind in ("race", "gender"):
        for group, rows in val.groupby(f"true_{kind}"):
            line = table[(table["kind"] == kind) & (table["group"] == group)].iloc[0]
            assert line["n"] == len(rows)
            for task_name in TASKS:
                acc = (rows[f"true_{COLUMNS[task_name]}"] == rows[f"pred_{COLUMNS[task_name]}"]).mean()
                assert line[f"{task_name}_accuracy"] == pytest.approx(acc)
                assert m[f"val/{task_name}/group_accuracy/{kind}/{slug(group)}"] == pytest.approx(acc)
    assert list(table["group"]) == list(RACES) + list(GENDERS)
    for task_name in TASKS:
        present = table.loc[table["n"] > 0, f"{task_name}_accuracy"]
        assert m[f"val/{task_name}/worst_group_accuracy"] == pytest.approx(present.min())
        assert m[f"val/{task_name}/group_gap"] == pytest.approx(present.max() - present.min())
        assert np.isfinite(m[f"val/{task_name}/loss"]) and m[f"train/weight/{task_name}"] > 0
    assert np.isfinite(m["val/loss"])

    # The predict helper turns raw outputs into the same labels the files hold.
    outputs, _ = predict(task.model, val_loader(cfg), pipe_for(task))
    assert outputs.shape == (20, task.num_outputs) == (20, 18 if formulation == "onehot18" or mode == "bins" else 10)
    described = describe_predictions(outputs, cfg)
    assert list(described.columns) == ["race", "gender", "age_bin", "age_years"]
    for task_name in TASKS:
        assert described[COLUMNS[task_name]].tolist() == val[f"pred_{COLUMNS[task_name]}"].tolist()
    np.testing.assert_allclose(described["age_years"], val["pred_age_years"], rtol=1e-5)


def test_evaluation_shares_count_each_example_once(tiny_fairface, cache):
    """What two ranks gather (contiguous shares, concatenated in rank order) is the whole val split."""
    cfg = config(tiny_fairface, cache)
    task = build(cfg)
    pipe = pipe_for(task)
    whole = predict(task.model, val_loader(cfg), pipe)[1]
    parts = [predict(task.model, val_loader(cfg, r, 2, 8), pipe)[1] for r in range(2)]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    assert len(whole) == 20


def test_max_train_images_slices_the_training_split(tiny_fairface, cache):
    assert build(config(tiny_fairface, cache, **{"data.max_train_images": 40})).train_rows(1) == 40


def test_prepare_reports_the_majority_baseline(tiny_fairface, cache, capsys):
    summary = prepare(config(tiny_fairface, cache))
    frame = pd.read_csv(tiny_fairface / "fairface_label_val.csv")
    majority = [frame[c].value_counts().iloc[0] / len(frame) for c in ("race", "gender", "age")]
    assert summary.baseline["val/majority_task_accuracy"] == pytest.approx(np.mean(majority))
    assert summary.baseline["val/majority/gender/accuracy"] == pytest.approx(majority[1])
    assert summary.settings["data.root"] == summary.root and summary.root.startswith(str(cache))
    assert summary.splits == {"train": 100, "val": 20}
    assert "age_years" not in load_metadata(summary.root)["label_columns"]  # no years in the official labels
    capsys.readouterr()
    assert prepare(config(summary.root, cache)).root == summary.root  # a prepared root is used as it is
    assert capsys.readouterr().out == ""


def test_prepare_builds_the_demo_set_when_no_root_is_given(tmp_path, capsys):
    cfg = TrainConfig.from_dict({"task": "fairface", "data.cache_dir": str(tmp_path), "data.demo_images": 18})
    summary = prepare(cfg)
    assert "synthetic fairface-format demo set" in capsys.readouterr().out
    assert sum(summary.splits.values()) == 18
    assert 0 < summary.baseline["val/majority_task_accuracy"] <= 1


def test_wrong_data_format_and_names_fail_before_training(tiny_fairface, cache):
    with pytest.raises(UserError, match="this task reads fairface"):
        prepare(config(tiny_fairface, cache, **{"data.format": "celeba"}))
    with pytest.raises(UserError, match="multitask.weighting"):
        prepare(config(tiny_fairface, cache, **{"multitask.weighting": "gradnorm"}))


def test_group_metrics_on_known_predictions():
    true = {"race": np.array([0, 0, 1, 1, 1, 6]), "gender": np.array([0, 1, 0, 1, 0, 1]),
            "age": np.array([3, 3, 4, 4, 4, 8])}
    pred = {"race": np.array([0, 1, 1, 1, 1, 6]), "gender": np.array([0, 1, 1, 1, 1, 1]),
            "age": np.array([3, 3, 4, 4, 4, 8])}
    table = group_table(true, pred, {"race": RACES, "gender": GENDERS})
    white, black, male = (table.iloc[i] for i in (0, 1, 7))
    assert (white["n"], white["race_accuracy"]) == (2, 0.5)
    assert black["gender_accuracy"] == male["gender_accuracy"] == pytest.approx(1 / 3)
    assert table.loc[table["group"] == "Indian", "n"].item() == 0
    metrics = group_metrics(table, TASKS)
    assert metrics["race/worst_group_accuracy"] == 0.5 and metrics["race/group_gap"] == 0.5
    assert metrics["gender/worst_group_accuracy"] == pytest.approx(1 / 3)  # the Male group
    assert metrics["gender/group_gap"] == pytest.approx(2 / 3)
    assert metrics["age/group_gap"] == 0.0
    assert "race/group_accuracy/race/Middle_Eastern" in metrics and "race/group_accuracy/race/Indian" not in metrics
