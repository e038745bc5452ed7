"""A dataset layout is one file: it registers its plan, its detection and its place in the order of detection
with `register_format`, and `detect_format` and `prepare` take it. Shown with a toy layout registered here, in
the test alone: a folder of JPEGs beside `scores.tsv` (`file<TAB>0|1` per line)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trainables.data.formats.rejects import Rejects
from trainables.data.plans import FORMATS, Plan, by_split, detection_order, register_format
from trainables.data.prepare import detect_format, prepare
from trainables.data.shards import ShardSplit, load_metadata

from fake_images import jpeg


def is_toy_root(root: Path) -> bool:
    return (root / "scores.tsv").is_file()


@pytest.fixture
def toy_format():
    """The toy layout, registered first in the order of detection, and removed again after the test."""

    @register_format("toy_tsv", detect=is_toy_root, order=0)
    def plan(src: Path, rejects: Rejects) -> Plan:
        rows = [line.split("\t") for line in (src / "scores.tsv").read_text().splitlines()]
        names = [name for name, _ in rows]
        paths = [src / name for name in names]
        labels = {"Smiling": np.array([int(v) for _, v in rows], dtype=np.uint8)}
        split_of = [i % 3 for i in range(len(rows))]  # train, val, test in turn
        return Plan(by_split(split_of, {"train": 0, "val": 1, "test": 2}, names, paths, labels),
                    [src / "scores.tsv"], paths, ["Smiling"])

    yield "toy_tsv"
    FORMATS._items.pop("toy_tsv")


def test_a_layout_registered_from_one_file_is_detected_and_prepared(toy_format, tmp_path):
    src = tmp_path / "toy"
    src.mkdir()
    for i in range(9):
        (src / f"{i}.jpg").write_bytes(jpeg(i))
    (src / "scores.tsv").write_text("".join(f"{i}.jpg\t{i % 2}\n" for i in range(9)))

    assert detection_order()[0][0] == "toy_tsv" and "toy_tsv" in FORMATS.names()
    assert detect_format(src) == "toy_tsv"
    info = prepare(detect_format(src), src, str(tmp_path / "out"), row_group_rows=2)
    assert info.counts == {"train": 3, "val": 3, "test": 3}
    assert load_metadata(str(tmp_path / "out"))["format"] == "toy_tsv"
    train = ShardSplit(str(tmp_path / "out"), "train").columns(["file", "Smiling"])
    assert dict(zip(train["file"], train["Smiling"].tolist())) == {"0.jpg": 0, "3.jpg": 1, "6.jpg": 0}


def test_every_shipped_layout_registers_itself_in_the_documented_order():
    assert [name for name, _ in detection_order()] == [
        "celeba", "fairface", "attributes_csv", "insightface_rec", "lfw_pairs", "insightface_bin", "faces"]
