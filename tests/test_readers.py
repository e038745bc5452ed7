"""The readers of the face formats, on fixtures written in the exact distributed layouts:
identity folders, InsightFace .rec/.idx/property, LFW pairs.txt (checked against torchvision's
LFWPairs) and InsightFace .bin pickles. Malformed input gives a one-line UserError naming the file."""

from __future__ import annotations

import pickle
import struct

import numpy as np
import pytest
from sklearn.model_selection import KFold

from trainables.data.formats.faces import read_face_folders
from trainables.data.formats.insightface_bin import read_insightface_bin
from trainables.data.formats.insightface_rec import MAGIC, read_insightface_rec, read_record_image
from trainables.data.formats.lfw_pairs import read_lfw_pairs
from trainables.errors import UserError

from insightface_writers import write_insightface_bin, write_insightface_rec

from fake_images import jpeg


def one_line_error(excinfo, *needles):
    text = str(excinfo.value)
    assert "\n" not in text
    for needle in needles:
        assert needle in text, text


# ---------------------------------------------------------------- identity folders

def test_face_folders_sorted_identities(tmp_path):
    for name, count in [("zoe", 2), ("Adam", 1), ("bob", 3)]:
        (tmp_path / name).mkdir()
        for k in range(count):
            (tmp_path / name / f"{k:02d}.jpg").write_bytes(jpeg(k))
    (tmp_path / "empty").mkdir()
    (tmp_path / "bob" / ".hidden.jpg").write_bytes(b"x")
    (tmp_path / "bob" / "notes.txt").write_text("x")
    index = read_face_folders(tmp_path)
    assert index.class_names == ["Adam", "bob", "zoe"]
    assert index.labels.dtype == np.int64
    assert index.labels.tolist() == [0, 1, 1, 1, 2, 2]
    assert [index.relative(i) for i in range(len(index.files))][:2] == ["Adam/00.jpg", "bob/00.jpg"]


def test_face_folders_errors(tmp_path):
    with pytest.raises(UserError) as e:
        read_face_folders(tmp_path / "nope")
    one_line_error(e, "nope")
    (tmp_path / "a.jpg").write_bytes(jpeg(0))
    with pytest.raises(UserError) as e:
        read_face_folders(tmp_path)
    one_line_error(e, "no identity sub-folders", "1 images")


# ---------------------------------------------------------------- InsightFace .rec

def test_rec_round_trip_and_layout(tmp_path):
    images = [jpeg(i) for i in range(7)]
    labels = [0, 0, 1, 1, 1, 2, 2]
    write_insightface_rec(tmp_path, images, labels, num_classes=3)
    rec = (tmp_path / "train.rec").read_bytes()
    # Record 0 by hand: magic, (cflag 0 << 29) | length, then header 'IfQQ' with flag 2 and labels (n+1, n+1+K).
    magic, lrec = struct.unpack_from("<II", rec, 0)
    assert magic == MAGIC and lrec >> 29 == 0 and (lrec & (2**29 - 1)) == 24 + 8
    flag, label, id1, id2 = struct.unpack_from("<IfQQ", rec, 8)
    assert flag == 2 and struct.unpack_from("<2f", rec, 32) == (8.0, 11.0)
    idx_lines = (tmp_path / "train.idx").read_text().splitlines()
    assert idx_lines[0] == "0\t0" and len(idx_lines) == 1 + 7 + 3
    assert (tmp_path / "property").read_text().strip() == "3,112,112"

    index = read_insightface_rec(tmp_path)
    assert index.keys.tolist() == list(range(1, 8))
    assert index.labels.tolist() == labels and index.num_classes == 3
    for i, img in enumerate(images):
        assert read_record_image(tmp_path / "train.rec", int(index.offsets[i])) == img
        assert index.offsets[i] + index.lengths[i] <= len(rec)
    assert (index.lengths % 4 == 0).all()


def test_rec_payload_with_embedded_magic_is_split_like_dmlc(tmp_path):
    magic = struct.pack("<I", MAGIC)
    # Payload = 24-byte header + image; image offsets 8 and 16 are 4-aligned in the payload.
    tricky = b"\xff\xd8abcdef" + magic + b"12345678" + magic + b"tail\xff\xd9x"
    write_insightface_rec(tmp_path, [jpeg(1), tricky], [0, 1], num_classes=2)
    index = read_insightface_rec(tmp_path)
    rec = (tmp_path / "train.rec").read_bytes()
    cflags = []
    at = int(index.offsets[1])
    while True:
        m, lrec = struct.unpack_from("<II", rec, at)
        assert m == MAGIC
        cflags.append(lrec >> 29)
        at += 8 + ((lrec & (2**29 - 1)) + 3) // 4 * 4
        if cflags[-1] in (0, 3):
            break
    assert cflags == [1, 2, 3]
    assert read_record_image(tmp_path / "train.rec", int(index.offsets[1])) == tricky
    assert index.labels.tolist() == [0, 1] and int(index.offsets[1] + index.lengths[1]) == at


def test_rec_malformed_inputs(tmp_path):
    write_insightface_rec(tmp_path, [jpeg(i) for i in range(3)], [0, 1, 1], num_classes=2)
    idx = (tmp_path / "train.idx").read_text().splitlines()
    (tmp_path / "train.idx").write_text("\n".join(idx[:2] + ["2 oops"] + idx[3:]) + "\n")
    with pytest.raises(UserError) as e:
        read_insightface_rec(tmp_path)
    one_line_error(e, "train.idx line 3")
    shifted = [line if i != 2 else f"2\t{int(line.split()[1]) + 4}" for i, line in enumerate(idx)]
    (tmp_path / "train.idx").write_text("\n".join(shifted) + "\n")
    with pytest.raises(UserError) as e:
        read_insightface_rec(tmp_path)
    one_line_error(e, "train.rec", "key 2")
    (tmp_path / "train.idx").write_text("\n".join(idx) + "\n")
    (tmp_path / "property").write_text("two,112,112\n")
    with pytest.raises(UserError) as e:
        read_insightface_rec(tmp_path)
    one_line_error(e, "property line 1")
    (tmp_path / "property").write_text("1,112,112\n")  # labels go up to 1: property must say >= 2
    with pytest.raises(UserError) as e:
        read_insightface_rec(tmp_path)
    one_line_error(e, "label 1")


# ---------------------------------------------------------------- LFW pairs.txt

def write_lfw(tree, pairs_file, folds=2, per_fold=3):
    """A pairs.txt in LFW's exact format, and the images it names under `tree`."""
    people = {f"Person_{chr(65 + k)}": 3 for k in range(6)}
    lines = [f"{folds}\t{per_fold}"]
    rng = np.random.default_rng(0)
    names = list(people)
    for _ in range(folds):
        for _ in range(per_fold):
            p = names[rng.integers(len(names))]
            lines.append(f"{p}\t1\t{rng.integers(2, 4)}")
        for _ in range(per_fold):
            a, b = rng.choice(len(names), 2, replace=False)
            lines.append(f"{names[a]}\t{rng.integers(1, 4)}\t{names[b]}\t{rng.integers(1, 4)}")
    pairs_file.parent.mkdir(parents=True, exist_ok=True)
    pairs_file.write_text("\n".join(lines) + "\n")
    for k, (p, n) in enumerate(people.items()):
        (tree / p).mkdir(parents=True, exist_ok=True)
        for i in range(1, n + 1):
            (tree / p / f"{p}_{i:04d}.jpg").write_bytes(jpeg(10 * k + i))
    return lines


def test_lfw_pairs_agree_with_torchvision(tmp_path, monkeypatch):
    from torchvision.datasets import LFWPairs

    base = tmp_path / "lfw-py"
    write_lfw(base / "lfw_funneled", base / "pairs.txt")
    # No archive or md5-matching pairs.txt here: bypass torchvision's integrity check only.
    monkeypatch.setattr(LFWPairs, "_check_integrity", lambda self: True)
    tv = LFWPairs(str(tmp_path), split="10fold", image_set="funneled")
    for root in (tmp_path, base):  # torchvision's layout, and the folder holding pairs.txt
        ours = read_lfw_pairs(root)
        assert [(str(a), str(b)) for a, b in zip(ours.left, ours.right)] == [tuple(map(str, d)) for d in tv.data]
        assert ours.issame.astype(int).tolist() == tv.targets
    assert ours.fold.tolist() == [0] * 6 + [1] * 6
    assert ours.left_names[0].startswith("Person_") and ours.left_names[0].endswith("_0001.jpg")
    assert all(p.is_file() for p in ours.left + ours.right)


def test_lfw_tree_is_root_or_single_subfolder(tmp_path):
    write_lfw(tmp_path / "a", tmp_path / "a" / "pairs.txt")  # images beside pairs.txt
    assert read_lfw_pairs(tmp_path / "a").left[0].parent.parent == tmp_path / "a"
    write_lfw(tmp_path / "b" / "lfw-deepfunneled", tmp_path / "b" / "pairs.txt")
    assert read_lfw_pairs(tmp_path / "b").left[0].parents[1].name == "lfw-deepfunneled"
    write_lfw(tmp_path / "b" / "lfw", tmp_path / "b" / "pairs.txt")
    with pytest.raises(UserError) as e:
        read_lfw_pairs(tmp_path / "b")
    one_line_error(e, "several LFW image trees", "lfw/", "lfw-deepfunneled/")
    assert read_lfw_pairs(tmp_path / "b", images="lfw").left[0].parents[1].name == "lfw"


def test_lfw_malformed_lines(tmp_path):
    lines = write_lfw(tmp_path, tmp_path / "pairs.txt")
    bad = lines.copy()
    bad[5] = "Person_A\t1\tPerson_B"  # a mismatched line with 3 fields
    (tmp_path / "pairs.txt").write_text("\n".join(bad) + "\n")
    with pytest.raises(UserError) as e:
        read_lfw_pairs(tmp_path)
    one_line_error(e, "pairs.txt line 6", "mismatched")
    (tmp_path / "pairs.txt").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(UserError) as e:
        read_lfw_pairs(tmp_path)
    one_line_error(e, "pairs.txt", "truncated")
    (tmp_path / "pairs.txt").write_text("ten\t300\n")
    with pytest.raises(UserError) as e:
        read_lfw_pairs(tmp_path)
    one_line_error(e, "pairs.txt line 1")


# ---------------------------------------------------------------- InsightFace .bin

def py2_pickle(bins: list[bytes], issame: list[bool]) -> bytes:
    """What Python 2's pickle.dump(..., protocol=2) writes: str as SHORT_BINSTRING/BINSTRING."""
    out = bytearray(b"\x80\x02]q\x00(")
    for b in bins:
        out += (b"U" + bytes([len(b)]) if len(b) < 256 else b"T" + struct.pack("<i", len(b))) + b
    out += b"e]q\x01(" + b"".join(b"\x88" if s else b"\x89" for s in issame) + b"e\x86q\x02."
    return bytes(out)


@pytest.mark.parametrize("protocol", ["py2", 0, 1, 2, 3, 4, 5])
def test_bin_reads_every_protocol(tmp_path, protocol):
    n = 23
    bins = [jpeg(i) for i in range(2 * n)] if protocol in ("py2", 4) else [jpeg(i % 4) for i in range(2 * n)]
    bins[3] = b""  # bytes() under protocols 0-2
    issame = [bool(i % 3) for i in range(n)]
    path = tmp_path / "cfp_fp.bin"
    if protocol == "py2":
        path.write_bytes(py2_pickle(bins, issame))
    else:
        write_insightface_bin(path, bins, issame, protocol=protocol)
    pairs = read_insightface_bin(path)
    assert pairs.name == "cfp_fp" and len(pairs) == n
    assert pairs.left == bins[0::2] and pairs.right == bins[1::2]
    assert pairs.issame.dtype == bool and pairs.issame.tolist() == issame
    folds = np.empty(n, int)
    for k, (_, test) in enumerate(KFold(10, shuffle=False).split(np.arange(n))):
        folds[test] = k
    assert pairs.fold.tolist() == folds.tolist()
    assert pairs.left_names[1] == "cfp_fp.bin#2" and pairs.right_names[1] == "cfp_fp.bin#3"


def test_bin_malformed(tmp_path):
    path = tmp_path / "lfw.bin"
    path.write_bytes(pickle.dumps(([b"a", b"b", b"c"], [True])))
    with pytest.raises(UserError) as e:
        read_insightface_bin(path)
    one_line_error(e, "lfw.bin", "3 images for 1 pairs")
    path.write_bytes(pickle.dumps(([b"a", "b"], [True])))
    with pytest.raises(UserError) as e:
        read_insightface_bin(path)
    one_line_error(e, "lfw.bin", "image 1 is a str")
    path.write_bytes(pickle.dumps(([b"a", b"b"], [True]))[:-5])
    with pytest.raises(UserError) as e:
        read_insightface_bin(path)
    one_line_error(e, "lfw.bin", "re-copy")
