"""The FairFace task on seed 001's labels (`fairface-labels-{train,val}.csv`, `age` in years), end to end
in one process (no Ray): prepare, one epoch, evaluation, and every age number recomputed with
scikit-learn from the CSV the test wrote and the predictions file alone."""

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, mean_absolute_error

from fake_images import jpeg
from task_harness import build, evaluate, one_epoch, prepare
from trainables.config import TrainConfig
from trainables.data.formats.fairface import GENDERS, RACES
from trainables.data.prepare import detect_format
from trainables.data.shards import ShardSplit, load_metadata
from trainables.errors import UserError

HEADER = "file,age,gender,race,service_test"
# DATA_FORMATS.md's nine bins as (name, first year, last year), and each bin's midpoint in years.
BINS = [("0-2", 0, 2), ("3-9", 3, 9), ("10-19", 10, 19), ("20-29", 20, 29), ("30-39", 30, 39), ("40-49", 40, 49),
        ("50-59", 50, 59), ("60-69", 60, 69), ("more than 70", 70, 200)]
MIDPOINT = {"0-2": 1.0, "3-9": 6.0, "10-19": 14.5, "20-29": 24.5, "30-39": 34.5, "40-49": 44.5, "50-59": 54.5,
            "60-69": 64.5, "more than 70": 75.0}
# Val ages: every bin, its edges included, and the 20s most often (so the majority bin is 20-29).
VAL_AGES = [0, 2, 3, 9, 10, 19, 20, 21, 26, 26, 29, 30, 39, 40, 49, 50, 59, 60, 69, 70, 71, 95, 23, 27]


def bin_of(years: int) -> str:
    return next(name for name, low, high in BINS if low <= years <= high)


def write_seed001(folder: Path, n_train: int = 48) -> Path:
    """Seed 001's layout: fairface-labels-{train,val}.csv beside train/ and val/ (224x224 JPEGs)."""
    rng = np.random.default_rng(1)
    ages = {"train": rng.integers(0, 90, n_train).tolist(), "val": VAL_AGES}
    for split, years in ages.items():
        (folder / split).mkdir(parents=True)
        lines = [HEADER]
        for n, age in enumerate(years, start=1):
            name = f"{split}/{n}.jpg"
            (folder / name).write_bytes(jpeg(len(lines) + 1000 * (split == "val"), size=(224, 224)))
            lines.append(f"{name},{age},{GENDERS[rng.integers(2)]},{RACES[rng.integers(7)]},{rng.random() < 0.5}")
        (folder / f"fairface-labels-{split}.csv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="module")
def seed001(tmp_path_factory):
    return write_seed001(tmp_path_factory.mktemp("seed001"))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("seed001-cache")


def config(root, cache_dir, **overrides) -> TrainConfig:
    return TrainConfig.from_dict({"task": "fairface", "data.root": str(root), "data.cache_dir": str(cache_dir),
                                  "data.image_size": 32, "model.name": "resnet18", "optim.batch_size": 16,
                                  "optim.epochs": 1, **overrides})


def val_csv(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "fairface-labels-val.csv").set_index("file")


def test_prepare_stores_the_years_beside_the_bins(seed001, cache):
    assert detect_format(seed001) == "fairface"
    summary = prepare(config(seed001, cache))
    assert summary.splits == {"train": 48, "val": 24}
    assert "age_years" in load_metadata(summary.root)["label_columns"]
    split = ShardSplit(summary.root, "val", ["age", "age_years"])
    assert split.schema().field("age_years").type == pa.float32()
    shard = split.columns(["file", "age", "age_years"]).set_index("file")
    truth = val_csv(seed001)
    np.testing.assert_array_equal(shard.loc[truth.index, "age_years"], truth["age"].astype(np.float32))
    classes = load_metadata(summary.root)["class_names"]["age"]
    assert [classes[k] for k in shard.loc[truth.index, "age"]] == [bin_of(a) for a in truth["age"]]


def test_the_baseline_uses_the_true_years(seed001, cache):
    baseline = prepare(config(seed001, cache)).baseline
    truth = val_csv(seed001)
    bins = truth["age"].map(bin_of)
    assert bins.value_counts().index[0] == "20-29"
    majority = [truth[c].value_counts().iloc[0] / len(truth) for c in ("race", "gender")] + \
        [bins.value_counts().iloc[0] / len(truth)]
    assert baseline["val/majority/age/accuracy"] == pytest.approx(majority[2])
    assert baseline["val/majority_task_accuracy"] == pytest.approx(np.mean(majority))
    expected_mae = mean_absolute_error(truth["age"], np.full(len(truth), MIDPOINT["20-29"]))
    assert baseline["val/majority/age/mae_years"] == pytest.approx(expected_mae, abs=1e-5)
    # Against the bins' midpoints (what the official release allows) it would differ.
    assert expected_mae != pytest.approx(np.abs(bins.map(MIDPOINT) - MIDPOINT["20-29"]).mean(), abs=1e-3)


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@pytest.mark.parametrize("mode,scale", [("regression", 80.0), ("regression", 40.0), ("bins", 80.0)])
def test_mae_is_against_the_true_years_and_age_groups_come_from_them(seed001, cache, tmp_path, mode, scale):
    torch.manual_seed(0)
    cfg = config(seed001, cache, **{"age.mode": mode, "age.scale": scale})
    task = build(cfg)
    assert np.isfinite(one_epoch(task, cfg, 16).loss_sum)
    result = evaluate(task)
    m = result.metrics
    result.write_files(tmp_path)
    val = pd.read_parquet(tmp_path / "predictions" / "val.parquet").set_index("file")
    truth = val_csv(seed001).loc[val.index]
    assert len(val) == 24

    # The true years are the CSV's, and the true age groups are DATA_FORMATS.md's bins of them.
    np.testing.assert_array_equal(val["true_age_years"], truth["age"].astype(np.float32))
    assert val["true_age_bin"].tolist() == [bin_of(a) for a in truth["age"]]
    assert m["val/age/mae_years"] == pytest.approx(mean_absolute_error(truth["age"], val["pred_age_years"]),
                                                   abs=1e-4)
    if mode == "regression":
        # Regression learns years / age.scale: its L1 loss is the MAE in years over the scale.
        assert m["val/age/loss"] == pytest.approx(m["val/age/mae_years"] / scale, rel=1e-4)
        assert val["pred_age_bin"].tolist() == [bin_of(min(int(np.floor(y)), 120)) if y >= 0 else "0-2"
                                                for y in val["pred_age_years"]]
    else:
        assert val["pred_age_years"].tolist() == val["pred_age_bin"].map(MIDPOINT).tolist()

    # Gender, race and age accuracies, and the groups, as with the official release.
    for task_name, column in (("race", "race"), ("gender", "gender"), ("age", "age_bin")):
        true, pred = val[f"true_{column}"], val[f"pred_{column}"]
        assert m[f"val/{task_name}/accuracy"] == pytest.approx(accuracy_score(true, pred))
        assert m[f"val/{task_name}/balanced_accuracy"] == pytest.approx(balanced_accuracy_score(true, pred))
    assert (val["true_gender"] == truth["gender"]).all() and (val["true_race"] == truth["race"]).all()
    for kind in ("race", "gender"):
        for group, rows in val.groupby(f"true_{kind}"):
            acc = (rows["true_gender"] == rows["pred_gender"]).mean()
            assert m[f"val/gender/group_accuracy/{kind}/{group.replace(' ', '_')}"] == pytest.approx(acc)


def test_the_seed_layout_with_the_image_folder_one_level_down(tmp_path, cache):
    """The CSVs left beside the unpacked image folder: `--data` the image folder finds them."""
    write_seed001(tmp_path / "release", n_train=6)
    images = tmp_path / "release" / "fairface-img-margin025-trainval"
    images.mkdir()
    for split in ("train", "val"):
        (tmp_path / "release" / split).rename(images / split)
    summary = prepare(config(images, cache))
    assert summary.splits == {"train": 6, "val": 24}
    assert "age_years" in load_metadata(summary.root)["label_columns"]


def test_a_malformed_age_stops_prepare_in_one_line(tmp_path, cache):
    folder = write_seed001(tmp_path / "bad", n_train=4)
    csv = folder / "fairface-labels-train.csv"
    csv.write_text(csv.read_text() + "train/5.jpg,-3,Male,White,True\n")
    with pytest.raises(UserError) as err:
        prepare(config(folder, cache))
    assert "fairface-labels-train.csv, line 6: age '-3' is negative" in str(err.value)
    assert "\n" not in str(err.value)
