"""The FairFace task end to end in one process (no Ray): data, one epoch, evaluation, result files,
and every logged number recomputed with scikit-learn from the files alone."""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, mean_absolute_error

from trainables.config import TrainConfig
from trainables.data.formats.fairface import GENDERS, RACES, read_fairface
from trainables.data.decode import eval_share, make_loader, train_share
from trainables.data.demo.fairface import write_demo_fairface
from trainables.errors import UserError
from trainables.tasks.fairface.group_metrics import group_metrics, group_table, slug
from trainables.loop import InputPipe, TrainModule, predict, train_one_epoch
from trainables.models import input_normalization
from trainables.optim import build_optimizer
from trainables.tasks import EvalContext, build_task, prepare_task_data
from trainables.tasks.fairface import describe_predictions

TASKS = ("race", "gender", "age")
COLUMNS = {"race": "race", "gender": "gender", "age": "age_bin"}


@pytest.fixture(scope="module")
def tiny_fairface(tmp_path_factory):
    return write_demo_fairface(tmp_path_factory.mktemp("fairface"), num_images=120, seed=3)


def config(root, **overrides) -> TrainConfig:
    return TrainConfig.from_dict({"task": "fairface", "data.format": "fairface", "data.root": str(root),
                                  "data.image_size": 32, "model.name": "resnet18", "optim.batch_size": 16,
                                  "optim.epochs": 1, **overrides})


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@pytest.mark.parametrize("formulation,mode,weighting", [("multihead", "bins", "fixed"),
                                                        ("multihead", "regression", "uncertainty"),
                                                        ("onehot18", "bins", "fixed")])
def test_one_epoch_then_evaluation_agrees_with_sklearn(tiny_fairface, tmp_path, formulation, mode, weighting):
    torch.manual_seed(0)
    cfg = config(tiny_fairface, **{"multitask.formulation": formulation, "age.mode": mode,
                                   "multitask.weighting": weighting})
    task = build_task(cfg)
    module = TrainModule(task.model, task.criterion)
    pipe = InputPipe(torch.device("cpu"), *input_normalization(task.model))
    steps = len(task.train_set) // 16
    optimizer, scheduler = build_optimizer(cfg.optim, module, steps)
    loader = make_loader(task.train_set, train_share(len(task.train_set), 0, 1, 0, 0), 16, 0, train=True)
    stats = train_one_epoch(module, loader, optimizer, pipe, scheduler)
    assert stats.examples == steps * 16 and np.isfinite(stats.loss_sum)

    result = task.evaluate(task.model, EvalContext(pipe, rank=0, world=1, batch_size=32, loader_workers=0))
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
    outputs, _ = predict(task.model, make_loader(_val_set(cfg), np.arange(20), 32, 0, train=False), pipe)
    assert outputs.shape == (20, task.num_outputs) == (20, 18 if formulation == "onehot18" or mode == "bins" else 10)
    described = describe_predictions(outputs, cfg)
    assert list(described.columns) == ["race", "gender", "age_bin", "age_years"]
    for task_name in TASKS:
        assert described[COLUMNS[task_name]].tolist() == val[f"pred_{COLUMNS[task_name]}"].tolist()
    np.testing.assert_allclose(described["age_years"], val["pred_age_years"], rtol=1e-5)


def _val_set(cfg):
    """The val dataset, rebuilt the way the task builds it (the task keeps its own private)."""
    from trainables.data.decode import ImageLabelDataset
    from trainables.tasks.fairface.labels import encode_multihead

    index = read_fairface(cfg.data.root)
    rows = index.indices("val")
    paths = [index.image_path(int(i)) for i in rows]
    return ImageLabelDataset(paths.__getitem__, encode_multihead(index)[rows], cfg.data.image_size)


def test_evaluation_shares_count_each_example_once(tiny_fairface):
    """What two ranks gather (contiguous shares, concatenated in rank order) is the whole val split."""
    cfg = config(tiny_fairface)
    task = build_task(cfg)
    pipe = InputPipe(torch.device("cpu"), *input_normalization(task.model))
    whole = _val_set(cfg)
    parts = [predict(task.model, make_loader(whole, eval_share(len(whole), r, 2), 8, 0, train=False), pipe)
             for r in range(2)]
    labels = np.concatenate([p[1] for p in parts])
    np.testing.assert_array_equal(labels, whole.labels)


def test_max_train_images_slices_the_training_split(tiny_fairface):
    assert len(build_task(config(tiny_fairface, **{"data.max_train_images": 40})).train_set) == 40


def test_prepare_reports_the_majority_baseline(tiny_fairface, capsys):
    summary = prepare_task_data(config(tiny_fairface))
    frame = pd.read_csv(tiny_fairface / "fairface_label_val.csv")
    majority = [frame[c].value_counts().iloc[0] / len(frame) for c in ("race", "gender", "age")]
    assert summary.baseline["val/majority_task_accuracy"] == pytest.approx(np.mean(majority))
    assert summary.baseline["val/majority/gender/accuracy"] == pytest.approx(majority[1])
    assert summary.root == str(tiny_fairface)
    assert capsys.readouterr().out == ""  # real data: nothing to say


def test_prepare_builds_the_demo_set_when_no_root_is_given(tmp_path, capsys):
    cfg = TrainConfig.from_dict({"task": "fairface", "data.format": "fairface", "data.cache_dir": str(tmp_path),
                                 "data.demo_images": 18})
    summary = prepare_task_data(cfg)
    assert "synthetic FairFace-format demo set" in capsys.readouterr().out
    assert len(read_fairface(summary.root).files) == 18
    assert 0 < summary.baseline["val/majority_task_accuracy"] <= 1


def test_wrong_data_format_and_names_fail_before_training(tiny_fairface):
    with pytest.raises(UserError, match="data.format"):
        build_task(config(tiny_fairface, **{"data.format": "celeba"}))
    with pytest.raises(UserError, match="multitask.weighting"):
        prepare_task_data(config(tiny_fairface, **{"multitask.weighting": "gradnorm"}))


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
