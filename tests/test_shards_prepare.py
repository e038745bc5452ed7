"""prepare() then read back: every image byte-identical, every label kept, for each format; bad
images skipped (or fatal under strict); re-runs skipped by fingerprint; URIs; and the rank shares
of ShardSplit/ShardDataset (disjoint, complete, reshuffled per epoch, equal for training)."""

from __future__ import annotations

import argparse
import io
import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from trainables.data.formats.celeba import ATTRIBUTE_NAMES, read_celeba
from insightface_writers import write_insightface_bin
from insightface_writers import write_insightface_rec
from trainables.data.prepare import detect_format, is_prepared, prepare
from trainables.data.shards import PairShardDataset, ShardDataset, ShardSplit, load_metadata
from trainables.data.demo.celeba import write_demo_celeba
from trainables.errors import UserError

from fake_images import jpeg


def read_split(out: str, split: str):
    meta = load_metadata(out)
    tables = [pq.read_table(os.path.join(out, rel)) for rel in meta["splits"][split]]
    import pyarrow as pa

    return pa.concat_tables(tables).to_pandas()


@pytest.fixture(scope="module")
def celeba_src(tmp_path_factory):
    return write_demo_celeba(tmp_path_factory.mktemp("celeba"), 40, seed=3)


def test_celeba_round_trip_and_rerun(celeba_src, tmp_path):
    out = str(tmp_path / "out")
    info = prepare("celeba", celeba_src, out, row_group_rows=8)
    assert not info.already_prepared and not info.skipped and is_prepared(out)
    meta = load_metadata(out)
    assert meta["label_columns"] == [*ATTRIBUTE_NAMES, "identity"] and meta["version"] == 1
    assert meta["source"] == str(celeba_src.resolve()) and meta["format"] == "celeba"
    index = read_celeba(celeba_src)
    row_of = {f: i for i, f in enumerate(index.files)}
    for split, code in (("train", 0), ("val", 1), ("test", 2)):
        df = read_split(out, split)
        assert sorted(df.file) == [f for f, s in zip(index.files, index.split) if s == code]
        assert meta["counts"][split] == len(df) and (df.split == split).all() and (df.source == "celeba").all()
        rows = [row_of[f] for f in df.file]
        for f, data in zip(df.file, df.image):
            assert data == (celeba_src / "img_align_celeba" / f).read_bytes()
        assert (df[list(ATTRIBUTE_NAMES)].to_numpy() == index.attributes[rows]).all()
        assert (df.identity.to_numpy() == index.identity[rows]).all()
        assert ShardSplit(out, split).labels().equals(df[meta["label_columns"]])
    schema = pq.read_schema(os.path.join(out, meta["splits"]["train"][0]))
    assert str(schema.field("Male").type) == "uint8" and str(schema.field("identity").type) == "int32"
    assert [g[2] for g in meta["row_groups"]["train"]][:-1] == [8] * (len(meta["row_groups"]["train"]) - 1)

    assert prepare("celeba", celeba_src, out, row_group_rows=8).already_prepared
    assert not prepare("celeba", celeba_src, out, row_group_rows=16).already_prepared  # settings count
    assert [p for p in os.listdir(tmp_path) if p != "out"] == []  # no temp folders left behind


def test_bad_images_are_skipped_or_fatal_under_strict(tmp_path):
    src = write_demo_celeba(tmp_path / "src", 12, seed=1)
    images = src / "img_align_celeba"
    data = (images / "000002.jpg").read_bytes()
    (images / "000002.jpg").write_bytes(data[: len(data) // 2])  # truncated: verify() alone passes it
    (images / "000005.jpg").unlink()
    info = prepare("celeba", src, str(tmp_path / "out"))
    assert {s["file"] for s in info.skipped} == {"000002.jpg", "000005.jpg"}
    assert sum(info.counts.values()) == 10
    reasons = {s["file"]: s["reason"] for s in load_metadata(str(tmp_path / "out"))["skipped"]}
    assert "decode" in reasons["000002.jpg"] and "missing" in reasons["000005.jpg"]
    with pytest.raises(UserError) as e:
        prepare("celeba", src, str(tmp_path / "strict"), strict=True)
    assert ("000002.jpg" in str(e.value) or "000005.jpg" in str(e.value)) and "\n" not in str(e.value)
    assert os.listdir(tmp_path) and not (tmp_path / "strict").exists()
    assert sorted(os.listdir(tmp_path)) == ["out", "src"]  # nothing half-written


def test_out_that_is_not_ours_is_left_alone(tmp_path):
    src = make_faces(tmp_path / "faces", identities=2, per=1)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.txt").write_text("precious")
    with pytest.raises(UserError) as e:
        prepare("faces", src, str(tmp_path / "mine"))
    assert "not a prepared dataset" in str(e.value)
    assert (tmp_path / "mine" / "thesis.txt").read_text() == "precious"
    (tmp_path / "empty").mkdir()
    assert prepare("faces", src, str(tmp_path / "empty")).counts == {"train": 2}


def make_faces(root, identities=53, per=1):
    for k in range(identities):
        (root / f"id{k:03d}").mkdir(parents=True)
        for j in range(per):
            (root / f"id{k:03d}" / f"{j}.jpg").write_bytes(jpeg(100 * k + j))
    return root


def test_faces_and_file_uri(tmp_path):
    src = make_faces(tmp_path / "faces", identities=6, per=3)
    uri = (tmp_path / "out").as_uri()
    assert uri.startswith("file://") and detect_format(src) == "faces"
    info = prepare("faces", src, uri, row_group_rows=4)
    assert info.counts == {"train": 18} and detect_format(uri) == "prepared"
    meta = load_metadata(uri)
    assert meta["class_names"]["identity"] == [f"id{k:03d}" for k in range(6)]
    df = read_split(str(tmp_path / "out"), "train")
    for f, data, ident in zip(df.file, df.image, df.identity):
        assert data == (src / f).read_bytes() and f.startswith(f"id{ident:03d}/")
    split = ShardSplit(uri, "train")
    rows = list(ShardDataset(split, split.eval_row_groups(0, 1), size=16))
    assert len(rows) == 18 and rows[0][0].shape == (3, 16, 16) and rows[0][0].dtype == torch.uint8
    assert sorted(int(r[1][0]) for r in rows) == sorted(df.identity.tolist())
    assert prepare("faces", src, uri, row_group_rows=4).already_prepared


def test_object_store_path_writes_in_place(tmp_path, monkeypatch):
    """A filesystem that is not local (here fsspec's memory one) gets metadata.json written last."""
    import fsspec
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    from trainables.data import prepared_output, shards

    memory = PyFileSystem(FSSpecHandler(fsspec.filesystem("memory")))
    monkeypatch.setattr(shards, "resolve", lambda root: (memory, "/bucket/" + str(root).split("://")[-1]))
    monkeypatch.setattr(prepared_output, "resolve", shards.resolve)
    src = make_faces(tmp_path / "faces", identities=4, per=2)
    info = prepare("faces", src, "mock://ds", row_group_rows=3)
    assert info.counts == {"train": 8} and is_prepared("mock://ds")
    split = ShardSplit("mock://ds", "train")
    assert split.num_rows == 8 and len(split.labels()) == 8
    assert len(list(ShardDataset(split, split.eval_row_groups(0, 1), size=8))) == 8


def test_insightface_rec_with_bins_beside_it(tmp_path):
    images = [jpeg(i) for i in range(9)]
    labels = [0, 0, 0, 1, 1, 2, 2, 2, 2]
    write_insightface_rec(tmp_path / "rec", images, labels, num_classes=3)
    bins = [jpeg(50 + i) for i in range(8)]
    write_insightface_bin(tmp_path / "rec" / "agedb_30.bin", bins, [True, False, True, False], protocol=2)
    assert detect_format(tmp_path / "rec") == "insightface_rec"
    out = str(tmp_path / "out")
    info = prepare("insightface_rec", tmp_path / "rec", out, row_group_rows=4)
    assert info.counts == {"train": 9, "agedb_30": 4}
    df = read_split(out, "train")
    by_key = {int(f.split("#")[1]): (img, ident) for f, img, ident in zip(df.file, df.image, df.identity)}
    assert by_key == {k + 1: (images[k], labels[k]) for k in range(9)}
    assert load_metadata(out)["num_classes"] == {"identity": 3}
    pairs = read_split(out, "agedb_30")
    assert pairs.image.tolist() == bins[0::2] and pairs.image_b.tolist() == bins[1::2]
    assert pairs.issame.tolist() == [True, False, True, False] and pairs.fold.tolist() == [0, 1, 2, 3]
    split = ShardSplit(out, "agedb_30")
    left, right, same = next(iter(PairShardDataset(split, split.eval_row_groups(0, 1), size=12)))
    assert left.shape == right.shape == (3, 12, 12) and same.dtype == torch.bool and bool(same)


def test_lfw_pairs_and_bins(tmp_path):
    lfw = tmp_path / "lfw_src"
    people = ["Ann_A", "Bob_B", "Cid_C"]
    for k, p in enumerate(people):
        (lfw / "lfw" / p).mkdir(parents=True)
        for n in (1, 2):
            (lfw / "lfw" / p / f"{p}_{n:04d}.jpg").write_bytes(jpeg(10 * k + n))
    lines = ["2\t2", "Ann_A\t1\t2", "Bob_B\t1\t2", "Ann_A\t1\tBob_B\t2", "Cid_C\t1\tAnn_A\t2",
             "Cid_C\t1\t2", "Ann_A\t2\t1", "Bob_B\t2\tCid_C\t1", "Ann_A\t1\tCid_C\t1"]
    (lfw / "pairs.txt").write_text("\n".join(lines) + "\n")
    assert detect_format(lfw) == "lfw_pairs"
    info = prepare("lfw_pairs", lfw, str(tmp_path / "out"))
    assert info.counts == {"lfw": 8}
    df = read_split(str(tmp_path / "out"), "lfw")
    assert df.issame.tolist() == [True, True, False, False] * 2 and df.fold.tolist() == [0] * 4 + [1] * 4
    for f, fb, a, b in zip(df.file, df.file_b, df.image, df.image_b):
        assert a == (lfw / "lfw" / f).read_bytes() and b == (lfw / "lfw" / fb).read_bytes()
    assert df.file_b[2] == "Bob_B/Bob_B_0002.jpg"

    for name in ("lfw", "cfp_fp"):
        write_insightface_bin(tmp_path / "bins" / f"{name}.bin", [jpeg(i) for i in range(40)],
                              [i % 2 == 0 for i in range(20)])
    assert detect_format(tmp_path / "bins") == "insightface_bin"
    info = prepare("insightface_bin", tmp_path / "bins", str(tmp_path / "out2"))
    assert info.counts == {"cfp_fp": 20, "lfw": 20}
    df = read_split(str(tmp_path / "out2"), "cfp_fp")
    assert df.image.tolist() == [jpeg(i) for i in range(0, 40, 2)]
    assert df.fold.tolist() == np.repeat(np.arange(10), 2).tolist()
    assert ShardSplit(str(tmp_path / "out2"), "lfw").label_columns == ["issame", "fold"]


def test_fairface(tmp_path):
    pytest.importorskip("trainables.data.formats.fairface")
    rows = {"train": [("train/1.jpg", "50-59", "Male", "East Asian", "True"),
                      ("train/2.jpg", "0-2", "Female", "Latino_Hispanic", "False"),
                      ("train/3.jpg", "more than 70", "Female", "Middle Eastern", "False")],
            "val": [("val/1.jpg", "20-29", "Male", "White", "True")]}
    for split, items in rows.items():
        (tmp_path / "ff" / split).mkdir(parents=True)
        lines = ["file,age,gender,race,service_test"] + [",".join(r) for r in items]
        (tmp_path / "ff" / f"fairface_label_{split}.csv").write_text("\n".join(lines) + "\n")
        for k, r in enumerate(items):
            (tmp_path / "ff" / r[0]).write_bytes(jpeg(k, size=(32, 32)))
    assert detect_format(tmp_path / "ff") == "fairface"
    info = prepare("fairface", tmp_path / "ff", str(tmp_path / "out"))
    assert info.counts == {"train": 3, "val": 1}
    meta = load_metadata(str(tmp_path / "out"))
    df = read_split(str(tmp_path / "out"), "train").set_index("file")
    assert df.loc["train/3.jpg", "image"] == (tmp_path / "ff" / "train/3.jpg").read_bytes()
    assert meta["class_names"]["age"][df.loc["train/3.jpg", "age"]] == "more than 70"
    assert meta["class_names"]["race"][df.loc["train/2.jpg", "race"]] == "Latino_Hispanic"
    assert bool(df.loc["train/1.jpg", "service_test"]) and not bool(df.loc["train/2.jpg", "service_test"])


@pytest.fixture(scope="module")
def unique_rows(tmp_path_factory):
    """53 rows whose identity is their row id, in row groups of 5 (the last one of 3)."""
    tmp = tmp_path_factory.mktemp("unique")
    prepare("faces", make_faces(tmp / "src"), str(tmp / "out"), row_group_rows=5)
    return ShardSplit(str(tmp / "out"), "train", label_columns=["identity"])


def ids_of(split, slices):
    table = split.labels().identity.to_numpy()
    offsets = np.cumsum([0] + [rows for *_, rows in split.row_groups])
    start = {(rel, g): s for (rel, g, _), s in zip(split.row_groups, offsets)}
    return [int(table[start[(s.path, s.group)] + k]) for s in slices for k in range(s.start, s.stop)]


@pytest.mark.parametrize("world", [2, 3])
def test_rank_shares(unique_rows, world):
    split = unique_rows
    assert split.num_rows == 53 and len(split.row_groups) == 11
    everything = set(range(53))
    per_epoch = []
    for epoch in (0, 1):
        shares = [ids_of(split, split.train_row_groups(r, world, epoch, seed=7)) for r in range(world)]
        assert all(len(s) == 53 // world for s in shares)
        assert len(set().union(*shares)) == sum(map(len, shares)) and set().union(*shares) <= everything
        per_epoch.append(shares)
    assert per_epoch[0] != per_epoch[1]  # reshuffled every epoch
    assert per_epoch[0] == [ids_of(split, split.train_row_groups(r, world, 0, seed=7)) for r in range(world)]
    evals = [ids_of(split, split.eval_row_groups(r, world)) for r in range(world)]
    assert sorted(sum(evals, [])) == sorted(everything) and sum(map(len, evals)) == 53


def test_dataset_through_workers_takes_exactly_limit(unique_rows):
    split = unique_rows
    slices = split.train_row_groups(1, 2, epoch=3, seed=0)
    share = ids_of(split, slices)
    ds = ShardDataset(split, slices, size=8, shuffle_seed=(0, 3), limit=20, shuffle_buffer=6)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2)
    seen = [int(v) for _, labels in loader for v in labels[:, 0]]
    assert len(seen) == 20 == len(set(seen)) and set(seen) == set(share[:20])
    assert seen != share[:20]  # shuffled within the buffer
    images, labels = next(iter(loader))
    assert images.shape == (4, 3, 8, 8) and images.dtype == torch.uint8 and labels.dtype == torch.int64


def test_cli(tmp_path, capsys):
    from orchestrator.commands.prepare import add_prepare_parser, cmd_prepare

    parser = argparse.ArgumentParser()
    add_prepare_parser(parser.add_subparsers(dest="command"))
    src = make_faces(tmp_path / "faces", identities=3, per=2)
    args = parser.parse_args(["prepare", "auto", "--src", str(src), "--out", str(tmp_path / "out")])
    assert cmd_prepare(args) == 0
    out, err = capsys.readouterr()
    assert out.startswith("prepared faces into") and "train 6 rows" in out and "6/6 images (100%)" in err
    assert cmd_prepare(args) == 0
    assert "already prepared" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "metadata.json").read_text())["counts"] == {"train": 6}


def test_shard_decoder_matches_pil_decoder(celeba_src):
    from trainables.data.decode import decode_image
    from trainables.data.shards import decode_shard_image

    data = (celeba_src / "img_align_celeba" / "000001.jpg").read_bytes()
    for size in (112, 64):
        fast, pil = decode_shard_image(data, size), decode_image(data, size)
        assert fast.shape == pil.shape == (3, size, size) and fast.dtype == torch.uint8
        assert (fast.int() - pil.int()).abs().float().mean() < 1.5
    buf = io.BytesIO()
    Image.fromarray(np.full((30, 20), 200, np.uint8), mode="L").save(buf, format="PNG")  # grey PNG: 3 channels out
    assert decode_shard_image(buf.getvalue(), 16).shape == (3, 16, 16)
    with pytest.raises(UserError):
        decode_shard_image(b"not an image", 16, "x.jpg")
