"""An empty split that the format defines (CelebA's val and test, FairFace's val, a label CSV's split
column) is refused by `prepare` in one line naming the split and the fix, before any trial reads it;
layouts without val/test (verification pairs, identity folders) are prepared as they are."""

from __future__ import annotations

import pytest

import dataset_writers
from orchestrator.__main__ import main
from trainables.data.prepare import prepare
from trainables.errors import UserError


def refused(tmp_path, fmt, src, *words):
    with pytest.raises(UserError) as e:
        prepare(fmt, src, str(tmp_path / "out"))
    text = str(e.value)
    assert "\n" not in text and all(w in text for w in words), text
    assert not (tmp_path / "out").exists()
    return text


@pytest.mark.parametrize("split,code", [("val", 1), ("test", 2)])
def test_celeba_without_val_or_test(tmp_path, split, code):
    src = dataset_writers.celeba(tmp_path / "celeba")
    path = src / "list_eval_partition.txt"
    path.write_text(path.read_text().replace(f" {code}\n", " 0\n"))
    refused(tmp_path, "celeba", src, f"split {split!r}", "is empty", "list_eval_partition.txt",
            f"the split {code} ({split}): give some images {code}")


def test_fairface_with_an_empty_val_csv(tmp_path):
    src = dataset_writers.fairface(tmp_path / "ff")
    (src / "fairface_label_val.csv").write_text("file,age,gender,race,service_test\n")
    refused(tmp_path, "fairface", src, "split 'val'", "fairface_label_val.csv lists no usable image")


@pytest.mark.parametrize("split", ["val", "test"])
def test_a_split_column_without_val_or_test(tmp_path, split):
    src = dataset_writers.attributes_csv(tmp_path / "photos")
    path = src / "labels.csv"
    path.write_text(path.read_text().replace(f",{split}\n", ",train\n"))
    refused(tmp_path, "attributes_csv", src, f"split {split!r}", f"no row of labels.csv has `{split}`")


def test_a_split_whose_every_image_is_unreadable(tmp_path):
    src = dataset_writers.celeba(tmp_path / "celeba")
    for name in ("000003.jpg", "000006.jpg", "000009.jpg"):  # the test split: every third image
        (src / "img_align_celeba" / name).write_bytes(b"not a jpeg")
    refused(tmp_path, "celeba", src, "split 'test'", "all 3 of its images were skipped", "000003.jpg")


def test_the_cli_says_it_in_one_line(tmp_path, capsys):
    src = dataset_writers.celeba(tmp_path / "celeba")
    path = src / "list_eval_partition.txt"
    path.write_text(path.read_text().replace(" 2\n", " 1\n"))
    assert main(["prepare", "auto", "--src", str(src), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and [x for x in err.splitlines() if x.startswith("error:")] == [
        x for x in err.splitlines() if "split 'test'" in x]


@pytest.mark.parametrize("fmt", ["faces", "lfw_pairs", "insightface_bin", "insightface_rec"])
def test_layouts_without_val_or_test_are_prepared(tmp_path, fmt):
    src = dataset_writers.WRITERS[fmt](tmp_path / "src")
    info = prepare(fmt, src, str(tmp_path / "out"))
    assert all(info.counts.values()) and not {"val", "test"} & set(info.counts)
