"""Attribute data with any attributes, in both layouts the attribute task reads, written here in the
real formats: a CelebA-layout file whose line 2 names its own attributes, and the generic image
folder + one label CSV (with and without a split column). Each is prepared and read back, every
malformed CSV is a one-line `file line N` error, and the task names its metrics, files, plot and
`predict` columns after the file's attributes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trainables import artifacts
from trainables.config import TrainConfig
from trainables.data.formats.attributes_csv import make_split, read_attributes_csv
from trainables.data.prepare import detect_format, prepare
from trainables.data.shards import load_metadata
from trainables.errors import UserError
from trainables.tasks.attributes.outputs import ATTRIBUTE_OUTPUTS
from trainables.tasks.attributes.plots import render_trial_plots

from fake_images import jpeg
from task_harness import build, evaluate, one_epoch
from task_harness import prepare as prepare_task


def read_split(out: str, split: str) -> pd.DataFrame:
    meta = load_metadata(out)
    return pa.concat_tables([pq.read_table(os.path.join(out, rel)) for rel in meta["splits"][split]]).to_pandas()


def write_images(root: Path, names) -> None:
    for k, name in enumerate(names):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(jpeg(k))


def write_csv_root(root: Path, lines: list[str], images=None, name: str = "labels.csv") -> Path:
    """An image folder with one label CSV, the lines written as given (`images` default: every `file`)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_text("\n".join(lines) + "\n")
    if images is None:
        at = [c.strip() for c in lines[0].split(",")].index("file")
        images = [line.split(",")[at] for line in lines[1:] if line]
    write_images(root, images)
    return root


def own_celeba_root(root: Path, n: int = 12) -> tuple[Path, np.ndarray]:
    """A CelebA-layout folder whose list_attr_celeba.txt names two attributes of its own."""
    rng = np.random.default_rng(1)
    values = np.where(rng.random((n, 2)) < 0.4, 1, -1)
    names = [f"{k + 1:06d}.jpg" for k in range(n)]
    (root / "img_align_celeba").mkdir(parents=True)
    write_images(root / "img_align_celeba", names)
    rows = [f"{f} {' '.join(f'{v:2d}' for v in row)}" for f, row in zip(names, values)]
    (root / "list_attr_celeba.txt").write_text(f"{n}\nFace Bright \n" + "\n".join(rows) + "\n")
    (root / "list_eval_partition.txt").write_text("".join(f"{f} {k % 3}\n" for k, f in enumerate(names)))
    (root / "identity_CelebA.txt").write_text("".join(f"{f} {k // 2}\n" for k, f in enumerate(names)))
    return root, (values + 1) // 2


def test_celeba_layout_with_its_own_attribute_names_prepares_them(tmp_path):
    root, values = own_celeba_root(tmp_path / "mine")
    assert detect_format(root) == "celeba"
    out = str(tmp_path / "out")
    prepare("celeba", root, out)
    meta = load_metadata(out)
    assert meta["label_columns"] == ["Face", "Bright", "identity"]
    assert meta["split_source"] == {"file": "list_eval_partition.txt"}
    for split, code in (("train", 0), ("val", 1), ("test", 2)):
        frame = read_split(out, split)
        rows = [int(f[:6]) - 1 for f in frame.file]
        assert rows and all(r % 3 == code for r in rows)
        np.testing.assert_array_equal(frame[["Face", "Bright"]].to_numpy(), values[rows])
        assert frame.identity.tolist() == [r // 2 for r in rows]


def test_csv_with_a_split_column_round_trip(tmp_path):
    lines = ["file,Smiling,Hat,split", "a/1.jpg,1,-1,train", "a/2.jpg,-1,-1,0", "b/3.jpg,-1,1,val",
             "b/4.jpg,1,1,1", "5.jpg,1,-1,test", "6.jpg,-1,1,2", "7.jpg,1,1,train"]
    root = write_csv_root(tmp_path / "photos", lines)
    assert detect_format(root) == "attributes_csv" and detect_format(root / "labels.csv") == "attributes_csv"
    out = str(tmp_path / "out")
    info = prepare(detect_format(root), root, out, row_group_rows=2)
    assert info.counts == {"train": 3, "val": 2, "test": 2} and not info.skipped
    meta = load_metadata(out)
    assert meta["format"] == "attributes_csv" and meta["label_columns"] == ["Smiling", "Hat"]
    assert meta["split_source"]["column"] == "split"
    expected = {line.split(",")[0]: line.split(",")[1:3] for line in lines[1:]}
    for split in ("train", "val", "test"):
        frame = read_split(out, split)
        assert (frame.split == split).all() and (frame.source == "attributes_csv").all()
        for row in frame.itertuples():
            assert [row.Smiling, row.Hat] == [int(v == "1") for v in expected[row.file]]
            assert row.image == (root / row.file).read_bytes()
    assert sorted(read_split(out, "val").file) == ["b/3.jpg", "b/4.jpg"]


def test_csv_without_a_split_column_gets_a_seeded_split_recorded_with_the_shards(tmp_path):
    files = [f"img/{k:03d}.jpg" for k in range(40)]
    lines = ["file,Bright"] + [f"{f},{k % 2}" for k, f in enumerate(files)]
    root = write_csv_root(tmp_path / "photos", lines)
    out = str(tmp_path / "out")
    info = prepare("attributes_csv", root, out)
    assert info.counts == {"train": 32, "val": 4, "test": 4}
    meta = load_metadata(out)
    assert meta["split_source"]["seed"] == 0 and meta["split_source"]["fractions"] == [0.8, 0.1, 0.1]
    assert meta["split_source"]["counts"] == info.counts
    made = dict(zip(files, make_split(files)))
    for split, code in (("train", 0), ("val", 1), ("test", 2)):
        assert sorted(read_split(out, split).file) == sorted(f for f in files if made[f] == code)

    shuffled = write_csv_root(tmp_path / "shuffled", [lines[0], *reversed(lines[1:])])
    index = read_attributes_csv(shuffled)
    assert dict(zip(index.files, index.split.tolist())) == {f: int(c) for f, c in made.items()}
    assert make_split(files, seed=1).tolist() != make_split(files).tolist()


def test_missing_image_is_skipped_and_reported_unless_strict(tmp_path):
    lines = ["file,Face,split", "1.jpg,1,train", "2.jpg,0,train", "3.jpg,1,val", "4.jpg,0,test"]
    root = write_csv_root(tmp_path / "photos", lines, images=["1.jpg", "3.jpg", "4.jpg"])
    info = prepare("attributes_csv", root, str(tmp_path / "out"))
    assert info.counts == {"train": 1, "val": 1, "test": 1}
    assert [s["file"] for s in info.skipped] == ["2.jpg"]
    with pytest.raises(UserError, match="2.jpg"):
        prepare("attributes_csv", root, str(tmp_path / "strict"), strict=True)


def test_a_folder_with_two_csvs_needs_the_csv_named(tmp_path):
    root = write_csv_root(tmp_path / "photos", ["file,Face", "1.jpg,1", "2.jpg,0", "3.jpg,1"])
    (root / "notes.csv").write_text("when,what\nmonday,shot\n")
    with pytest.raises(UserError) as caught:
        detect_format(root)
    assert "\n" not in str(caught.value)
    with pytest.raises(UserError, match=r"holds 2 \.csv files \(labels\.csv, notes\.csv\); .*pass the label CSV"):
        read_attributes_csv(root)
    assert read_attributes_csv(root / "labels.csv").attribute_names == ["Face"]


HEADER = "file,Face,Bright"
# (CSV lines, the line the message must name, words it must contain)
MALFORMED = {
    "escapes_with_dotdot": ([HEADER, "1.jpg,1,0", "../x.jpg,1,0"], 3, "points outside"),
    "escapes_inside_out": ([HEADER, "1.jpg,1,0", "a/../../x.jpg,0,0"], 3, "without '..'"),
    "escapes_backslash": ([HEADER, "1.jpg,1,0", "a\\..\\..\\x.jpg,0,0"], 3, "points outside"),
    "absolute_path": ([HEADER, "1.jpg,1,0", "/etc/passwd,1,1"], 3, "points outside"),
    "drive_path": ([HEADER, "1.jpg,1,0", "C:/x.jpg,1,1"], 3, "points outside"),
    "value_two": ([HEADER, "1.jpg,1,0", "2.jpg,2,0"], 3, "Face is '2'; Face must be 0 or 1"),
    "value_float": ([HEADER, "1.jpg,1,0", "2.jpg,1,1.0"], 3, "Bright is '1.0'"),
    "value_empty": ([HEADER, "1.jpg,1,0", "2.jpg,,0"], 3, "Face is empty"),
    "file_empty": ([HEADER, "1.jpg,1,0", ",1,0"], 3, "file` cell is empty"),
    "duplicate_file": ([HEADER, "1.jpg,1,0", "2.jpg,0,0", "./1.jpg,1,1"], 4, "1.jpg is listed twice (first on line 2)"),
    "mixed_encodings": ([HEADER, "1.jpg,1,0", "2.jpg,1,1", "3.jpg,-1,1"], 4, "line 2 writes 0"),
    "bad_split": (["file,Face,split", "1.jpg,1,train", "2.jpg,0,validation"], 3, "split is 'validation'"),
    "split_empty": (["file,Face,split", "1.jpg,1,train", "2.jpg,0,"], 3, "split is empty"),
    "field_count": ([HEADER, "1.jpg,1,0", "2.jpg,1"], 3, "2 fields, expected 3"),
    "no_file_column": (["path,Face", "1.jpg,1"], 1, "no `file` column"),
    "pandas_index": ([",file,Face", "0,1.jpg,1"], 1, "column 1 has no name (pandas writes its index"),
    "duplicate_column": (["file,Face,Face", "1.jpg,1,0"], 1, "'Face' appears twice"),
    "reserved_column": (["file,identity", "1.jpg,1"], 1, "'identity' cannot name an attribute"),
    "no_attributes": (["file,split", "1.jpg,train"], 1, "no attribute columns"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_csv_is_a_one_line_error_naming_file_and_line(tmp_path, case):
    lines, line, words = MALFORMED[case]
    root = write_csv_root(tmp_path / "photos", lines, images=["1.jpg"])
    # A path leaving the folder is one bad row: refused under strict, skipped and reported otherwise
    # (tests/test_dataset_paths.py); every other case here says the file is wrong, and is refused.
    strict = case.startswith(("escapes", "absolute", "drive"))
    with pytest.raises(UserError) as caught:
        prepare("attributes_csv", root, str(tmp_path / "out"), strict=strict)
    message = str(caught.value)
    assert "\n" not in message and "\r" not in message
    assert f"{root / 'labels.csv'} line {line}:" in message and words in message, message
    assert not (tmp_path / "out").exists()  # refused before a byte was written


@pytest.mark.parametrize("lines,images,words", [
    (["file,Face"], [], "header but no rows"),
    (["file,Face", "1.jpg,1", "2.jpg,0"], ["1.jpg", "2.jpg"], "2 images cannot be split"),
    (["file,Face", "x/1.jpg,1", "x/2.jpg,0", "x/3.jpg,1"], ["1.jpg"], "relative to the folder holding the CSV"),
])
def test_unusable_csv_sets_say_why(tmp_path, lines, images, words):
    root = write_csv_root(tmp_path / "photos", lines, images=images)
    with pytest.raises(UserError, match=words) as caught:
        read_attributes_csv(root)
    assert "\n" not in str(caught.value) and "labels.csv" in str(caught.value)


def test_a_folder_without_a_csv_or_missing_says_what_to_pass(tmp_path):
    with pytest.raises(UserError, match="no .csv label file in .*put one CSV at the folder's root"):
        read_attributes_csv(tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        read_attributes_csv(tmp_path / "nowhere")


def test_task_names_everything_after_the_file_and_draws_one_panel(tmp_path):
    """A one-attribute CSV set (named `NA`, which pandas would read as missing) through the task:
    metrics, per-attribute table, thresholds, predictions, the PR plot and `predict`'s columns."""
    files = [f"{k:03d}.jpg" for k in range(40)]
    lines = ["file,NA"] + [f"{f},{int(k % 3 == 0)}" for k, f in enumerate(files)]
    root = write_csv_root(tmp_path / "photos", lines)
    cfg = TrainConfig.from_dict({"task": "attributes", "data.root": str(root), "data.image_size": 32, "model.name": "resnet10t",
                                 "optim.batch_size": 8, "data.cache_dir": str(tmp_path / "cache")})
    said = []
    summary = prepare_task(cfg, said.append)
    assert said[-1] == "1 attribute, named by the label file: NA."
    assert 0.5 <= summary.baseline["val/majority_accuracy"] <= 1
    task = build(cfg)
    assert task.num_outputs == 1
    one_epoch(task, cfg, 8)
    result = evaluate(task, batch=8)
    assert 0 <= result.metrics["test/f1_opt/mean_accuracy"] <= 1
    trial = tmp_path / "trial"
    result.write_files(trial)
    assert pd.read_csv(trial / artifacts.PER_ATTRIBUTE, keep_default_na=False)["attribute"].tolist() == ["NA"]
    assert {k: list(v) for k, v in json.loads((trial / artifacts.THRESHOLDS).read_text()).items()}["f1_opt"] == ["NA"]
    assert list(pd.read_parquet(trial / artifacts.predictions_file("test")).columns) == ["score/NA", "label/NA"]
    plots = tmp_path / "plots"
    plots.mkdir()
    assert render_trial_plots(trial, plots) == [artifacts.PR_PLOT] and (plots / artifacts.PR_PLOT).stat().st_size

    names = ATTRIBUTE_OUTPUTS.output_names(cfg, lambda name: (trial / name).read_bytes())["outputs"]
    assert names == ["NA"]
    thresholds = json.loads((trial / artifacts.THRESHOLDS).read_text())
    exported = SimpleNamespace(output_names=names, rules=thresholds, folder=trial)
    shown = ATTRIBUTE_OUTPUTS.describe(np.array([[3.0], [-3.0]]), exported, "fixed")
    assert list(shown.columns) == ["score/NA", "label/NA"] and shown["label/NA"].tolist() == [1, 0]
    assert ATTRIBUTE_OUTPUTS.captions(shown.iloc[0]) == ["NA"]


@pytest.mark.parametrize("count,grid", [(1, (1, 1)), (2, (1, 2)), (9, (2, 8))])
def test_pr_plot_has_one_panel_per_attribute_of_any_set(tmp_path, count, grid):
    from PIL import Image

    from trainables.tasks.attributes.plots import plot_pr_curves

    rng = np.random.default_rng(0)
    names = ["Face", "Bright", *[f"A{k}" for k in range(count - 2)]][:count]
    labels = rng.random((50, count)) < 0.4
    frame = pd.DataFrame({**{f"score/{n}": rng.random(50) for n in names},
                          **{f"label/{n}": labels[:, k].astype(np.uint8) for k, n in enumerate(names)}})
    plot_pr_curves(frame, tmp_path / "pr.png")
    with Image.open(tmp_path / "pr.png") as image:
        assert image.size == (grid[1] * 180, grid[0] * 180)  # 2 inches a panel at 90 dpi


def test_pr_plot_draws_each_attributes_curve_in_its_own_panel_and_none_for_a_one_class_attribute(tmp_path):
    """The curves land inside their panels (the canvas is laid out in inches, not by matplotlib's Axes): each
    panel holds the curve's blue, except the panel of an attribute whose test labels are all one class."""
    from PIL import Image

    from trainables.tasks.attributes.plots import PANEL_IN, panel_boxes, plot_pr_curves

    rng = np.random.default_rng(1)
    names = [f"A{k}" for k in range(9)]
    labels = rng.random((80, 9)) < 0.4
    labels[:, 4] = False  # one class only: no curve
    frame = pd.DataFrame({**{f"score/{n}": labels[:, k] + rng.normal(0, 0.5, 80) for k, n in enumerate(names)},
                          **{f"label/{n}": labels[:, k].astype(np.uint8) for k, n in enumerate(names)}})
    plot_pr_curves(frame, tmp_path / "pr.png")
    dpi, (cols, rows) = 90, (8, 2)
    pixels = np.asarray(Image.open(tmp_path / "pr.png").convert("RGB")).astype(int)
    blue = (abs(pixels - [31, 119, 180]).sum(axis=2) < 60)  # matplotlib's C0
    for k, (x0, y0, w, h) in enumerate(panel_boxes(9, cols, rows, cols * PANEL_IN, rows * PANEL_IN)):
        top = int((rows * PANEL_IN - y0 - h) * dpi)
        inside = blue[top + 2:top + int(h * dpi) - 2, int(x0 * dpi) + 2:int((x0 + w) * dpi) - 2]
        assert (inside.sum() == 0) == (k == 4), (k, inside.sum())
    assert blue.sum() == sum(  # no blue outside the panels
        blue[int((rows * PANEL_IN - y0 - h) * dpi) - 1:int((rows * PANEL_IN - y0) * dpi) + 2,
             int(x0 * dpi) - 1:int((x0 + w) * dpi) + 2].sum()
        for x0, y0, w, h in panel_boxes(9, cols, rows, cols * PANEL_IN, rows * PANEL_IN))


def test_average_precision_from_the_curve_is_sklearns():
    from sklearn.metrics import average_precision_score, precision_recall_curve

    from trainables.tasks.attributes.plots import average_precision

    rng = np.random.default_rng(2)
    for _ in range(20):
        y = rng.random(200) < rng.uniform(0.05, 0.9)
        s = np.round(y + rng.normal(0, 1, 200), 1)  # ties, as a small model's rounded scores give
        precision, recall, _ = precision_recall_curve(y, s)
        assert average_precision(precision, recall) == pytest.approx(average_precision_score(y, s), abs=1e-12)
