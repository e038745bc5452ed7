"""The CelebA reader takes the files exactly as distributed, agrees with torchvision label by label,
and rejects every malformed input with a one-line UserError naming the file, the line and the fix."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from trainables.data.formats.celeba import ATTRIBUTE_NAMES, SPLITS, is_celeba_root, read_celeba
from trainables.data.demo.celeba import write_demo_celeba
from trainables.errors import UserError

# Rows in the distributed layout: one space after the name, then values right-aligned to width 3.
ROW_1 = "000001.jpg -1  1  1 -1 -1 -1 -1 -1 -1 -1 -1  1 -1 -1 -1 -1 -1 -1  1  1 -1  1 -1 -1  1 -1 -1  1 -1 -1 -1  1  1 -1  1 -1  1 -1 -1  1"
ROW_2 = "000002.jpg -1 -1 -1  1 -1 -1 -1  1 -1 -1 -1  1 -1 -1 -1 -1 -1 -1 -1  1 -1  1 -1 -1  1 -1 -1 -1 -1 -1 -1  1 -1 -1 -1 -1 -1 -1 -1  1"
ROW_7 = "000007.jpg 1 -1  1  1 -1 -1  1  1  1 -1 -1 -1  1 -1 -1 -1 -1 -1 -1 -1  1 -1 -1 -1  1 -1 -1  1 -1 -1  1 -1  1 -1 -1 -1 -1 -1 -1  1"
LANDMARK_HEADER = "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y"


def values(row: str) -> list[int]:
    return [int(v) for v in row.split()[1:]]


def write_root(root: Path, *, newline: str = "\n", trailing_blank: bool = False, landmarks: bool = True,
               attr_rows=(ROW_1, ROW_2, ROW_7), count=None, header=None, partition=None, identity=None) -> Path:
    """A CelebA root of hand-written label files in the distributed layout (and no images)."""
    (root / "img_align_celeba").mkdir(parents=True, exist_ok=True)
    names = [r.split()[0] for r in attr_rows]
    header = " ".join(ATTRIBUTE_NAMES) + " " if header is None else header
    files = {
        "list_attr_celeba.txt": [str(len(attr_rows) if count is None else count), header, *attr_rows],
        "list_eval_partition.txt": partition or [f"{n} {k % 3}" for k, n in enumerate(names)],
        "identity_CelebA.txt": identity or [f"{n} {2880 + k}" for k, n in enumerate(names)],
        "list_bbox_celeba.txt": [str(len(names)), "image_id x_1 y_1 width height "]
        + [f"{n}    95   71  226  313" for n in names],
    }
    if landmarks:
        files["list_landmarks_align_celeba.txt"] = [str(len(names)), LANDMARK_HEADER] + [
            f"{n}    69  109  106  {113 + k:3d}   77  142   73  152  108  154" for k, n in enumerate(names)]
    for name, lines in files.items():
        text = newline.join(lines) + newline + (newline * 2 if trailing_blank else "")
        (root / name).write_bytes(text.encode())
    return root


def test_reads_the_distributed_layout(tmp_path):
    index = read_celeba(write_root(tmp_path))
    assert index.files == ["000001.jpg", "000002.jpg", "000007.jpg"]
    assert index.attribute_names == list(ATTRIBUTE_NAMES)
    assert index.attributes.dtype == np.uint8 and index.attributes.shape == (3, 40)
    for k, row in enumerate((ROW_1, ROW_2, ROW_7)):
        assert index.attributes[k].tolist() == [(v + 1) // 2 for v in values(row)]
    assert index.split.dtype == np.int8 and index.split.tolist() == [0, 1, 2]
    assert index.identity.tolist() == [2880, 2881, 2882]
    assert index.landmarks.dtype == np.int32
    assert index.landmarks[2].tolist() == [69, 109, 106, 115, 77, 142, 73, 152, 108, 154]
    assert index.image_path(1) == tmp_path / "img_align_celeba" / "000002.jpg"
    assert [index.indices(s).tolist() for s in SPLITS] == [[0], [1], [2]]
    assert is_celeba_root(tmp_path) and not is_celeba_root(tmp_path / "img_align_celeba")


def test_windows_line_endings_and_trailing_blank_lines(tmp_path):
    plain = read_celeba(write_root(tmp_path / "unix"))
    windows = read_celeba(write_root(tmp_path / "windows", newline="\r\n", trailing_blank=True))
    assert windows.files == plain.files
    for field in ("attributes", "split", "identity", "landmarks"):
        np.testing.assert_array_equal(getattr(windows, field), getattr(plain, field))


def test_optional_files_and_header_order(tmp_path):
    order = list(reversed(ATTRIBUTE_NAMES))
    rows = [r.split()[0] + " " + " ".join(reversed(r.split()[1:])) for r in (ROW_1, ROW_2, ROW_7)]
    root = write_root(tmp_path, landmarks=False, attr_rows=rows, header=" ".join(order) + " ")
    (root / "identity_CelebA.txt").unlink()
    index = read_celeba(root)
    assert index.identity is None and index.landmarks is None
    assert index.attribute_names == order  # columns follow the file's header
    column = order.index("Smiling")
    assert index.attributes[:, column].tolist() == [1, 1, 0]


OWN_ROWS = ("000001.jpg  1 -1", "000002.jpg -1 -1", "000007.jpg 1  1")  # two attributes, the same layout


@pytest.mark.parametrize("header,rows", [("Face Bright ", OWN_ROWS), ("Face", [r.rsplit(" ", 1)[0] for r in OWN_ROWS])])
def test_attribute_names_come_from_line_2(tmp_path, header, rows):
    index = read_celeba(write_root(tmp_path, attr_rows=rows, header=header))
    names = header.split()
    assert index.attribute_names == names and index.attributes.shape == (3, len(names))
    assert index.attributes[:, 0].tolist() == [1, 0, 1]
    if len(names) == 2:
        assert index.attributes[:, 1].tolist() == [0, 0, 1]
    assert index.split.tolist() == [0, 1, 2] and index.identity.tolist() == [2880, 2881, 2882]


def test_own_attribute_names_with_a_wrong_row_length_name_the_line(tmp_path):
    rows = (OWN_ROWS[0], OWN_ROWS[1] + "  1", OWN_ROWS[2])
    with pytest.raises(UserError) as caught:
        read_celeba(write_root(tmp_path, attr_rows=rows, header="Face Bright "))
    message = str(caught.value)
    assert "\n" not in message
    assert f"{tmp_path / 'list_attr_celeba.txt'} line 4: expected 3 columns (file name, 2 values of 1 or -1, one per " \
           "name on line 2), found 4; give every row one value per attribute named on line 2" in message


def test_own_attribute_names_agree_with_torchvision(tmp_path, monkeypatch):
    from torchvision.datasets import CelebA

    root = write_root(tmp_path / "celeba", attr_rows=OWN_ROWS, header="Face Bright ")
    monkeypatch.setattr(CelebA, "_check_integrity", lambda self: True)
    index = read_celeba(root)
    dataset = CelebA(str(tmp_path), split="all", target_type=["attr", "identity"], download=False)
    assert dataset.filename == index.files
    assert [n for n in dataset.attr_names if n] == index.attribute_names == ["Face", "Bright"]
    np.testing.assert_array_equal(dataset.attr.numpy(), index.attributes)


def test_partition_rows_are_matched_by_file_name(tmp_path):
    root = write_root(tmp_path, partition=["000007.jpg 2", "000001.jpg 1", "000002.jpg 0", "999999.jpg 0"])
    assert read_celeba(root).split.tolist() == [1, 0, 2]


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_agrees_with_torchvision_label_by_label(tmp_path, monkeypatch, newline):
    from torchvision.datasets import CelebA

    root = write_demo_celeba(tmp_path / "demo", 90, seed=5)
    tv_base = tmp_path / "tv" / "celeba"  # torchvision wants root/celeba/
    tv_base.mkdir(parents=True)
    (tv_base / "img_align_celeba").symlink_to(root / "img_align_celeba")
    for path in root.glob("*.txt"):
        (tv_base / path.name).write_bytes(path.read_bytes().replace(b"\n", newline.encode()))
    names = [line.split()[0] for line in (root / "list_eval_partition.txt").read_text().splitlines()]
    (tv_base / "list_bbox_celeba.txt").write_text(
        f"{len(names)}\nimage_id x_1 y_1 width height \n" + "".join(f"{n}    95   71  226  313\n" for n in names))
    monkeypatch.setattr(CelebA, "_check_integrity", lambda self: True)  # our files have no official md5

    index = read_celeba(tv_base)
    for tv_split, ours in (("all", None), ("train", "train"), ("valid", "val"), ("test", "test")):
        dataset = CelebA(str(tv_base.parent), split=tv_split, target_type=["attr", "identity"], download=False)
        rows = np.arange(len(index.files)) if ours is None else index.indices(ours)
        assert len(rows) == len(dataset) > 0
        assert dataset.filename == [index.files[r] for r in rows]
        assert dataset.attr_names[:40] == index.attribute_names
        np.testing.assert_array_equal(dataset.attr.numpy(), index.attributes[rows])
        np.testing.assert_array_equal(dataset.identity.numpy()[:, 0], index.identity[rows])
        np.testing.assert_array_equal(dataset.landmarks_align.numpy(), index.landmarks[rows])


def test_full_size_attribute_file_parses_quickly(tmp_path):
    n = 202_599
    rng = np.random.default_rng(0)
    signs = np.where(rng.random((n, 40)) < 0.3, "  1", " -1")
    rest = np.ascontiguousarray(signs[:, 1:]).view("U117")[:, 0].tolist()  # 39 padded values per row
    names = [f"{i + 1:06d}.jpg" for i in range(n)]
    body = "".join(f"{name} {s0.strip()}{r}\n" for name, s0, r in zip(names, signs[:, 0].tolist(), rest))
    write_root(tmp_path, attr_rows=(ROW_1,))
    (tmp_path / "list_attr_celeba.txt").write_text(f"{n}\n{' '.join(ATTRIBUTE_NAMES)} \n{body}")
    (tmp_path / "list_eval_partition.txt").write_text("".join(f"{m} 0\n" for m in names))
    (tmp_path / "identity_CelebA.txt").unlink()
    (tmp_path / "list_landmarks_align_celeba.txt").unlink()
    start = time.perf_counter()
    index = read_celeba(tmp_path)
    elapsed = time.perf_counter() - start
    assert index.attributes.shape == (n, 40) and index.files[-1] == "202599.jpg"
    np.testing.assert_array_equal(index.attributes, (signs == "  1").astype(np.uint8))
    assert elapsed < 10, f"reading {n} rows took {elapsed:.1f}s"  # about 0.5 s here; a loose guard


def _corrupt(root: Path, name: str, old: str, new: str) -> None:
    path = root / name
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


# (what to break, the file and line the message must name, words it must contain)
MALFORMED = {
    "count_not_int": (lambda r: _corrupt(r, "list_attr_celeba.txt", "3\n", "three\n"),
                      "list_attr_celeba.txt line 1", "count"),
    "count_mismatch": (lambda r: _corrupt(r, "list_attr_celeba.txt", "3\n", "4\n"),
                       "list_attr_celeba.txt line 1", "4"),
    "header_short": (lambda r: _corrupt(r, "list_attr_celeba.txt", "5_o_Clock_Shadow ", ""),
                     "list_attr_celeba.txt line 3", "expected 40 columns (file name, 39 values of 1 or -1, one per "
                     "name on line 2), found 41; give every row one value per attribute named on line 2"),
    "header_empty": (lambda r: _corrupt(r, "list_attr_celeba.txt", " ".join(ATTRIBUTE_NAMES), ""),
                     "list_attr_celeba.txt line 2", "no attribute names"),
    "header_twice": (lambda r: _corrupt(r, "list_attr_celeba.txt", "Smiling", "Young"),
                     "list_attr_celeba.txt line 2", "'Young' is named twice"),
    "header_reserved": (lambda r: _corrupt(r, "list_attr_celeba.txt", "Smiling", "split"),
                        "list_attr_celeba.txt line 2", "'split' cannot name an attribute"),
    "row_missing_value": (lambda r: _corrupt(r, "list_attr_celeba.txt", ROW_2, ROW_2[:-3]),
                          "list_attr_celeba.txt line 4", "expected 41 columns (file name, 40 values of 1 or -1, one "
                          "per name on line 2), found 40"),
    "row_extra_value": (lambda r: _corrupt(r, "list_attr_celeba.txt", ROW_7, ROW_7 + "  1"),
                        "list_attr_celeba.txt line 5", "found 42"),
    "value_zero": (lambda r: _corrupt(r, "list_attr_celeba.txt", ROW_7, ROW_7[:-3] + "  0"),
                   "list_attr_celeba.txt line 5", "value 0 is not 1 or -1 (attribute Young)"),
    "value_not_int": (lambda r: _corrupt(r, "list_attr_celeba.txt", ROW_1, ROW_1[:-3] + " y1"),
                      "list_attr_celeba.txt line 3", "'y1' is not an integer"),
    "partition_missing_file": (lambda r: _corrupt(r, "list_eval_partition.txt", "000002.jpg 1\n", ""),
                               "list_eval_partition.txt has no row for 000002.jpg", "line 4"),
    "partition_bad_split": (lambda r: _corrupt(r, "list_eval_partition.txt", "000002.jpg 1", "000002.jpg 3"),
                            "list_eval_partition.txt line 2", "split 3 is not 0, 1 or 2"),
    "partition_columns": (lambda r: _corrupt(r, "list_eval_partition.txt", "000007.jpg 2", "000007.jpg"),
                          "list_eval_partition.txt line 3", "expected 2 columns"),
    "identity_missing_file": (lambda r: _corrupt(r, "identity_CelebA.txt", "000007.jpg 2882\n", ""),
                              "identity_CelebA.txt has no row for 000007.jpg", "line 5"),
    "identity_not_int": (lambda r: _corrupt(r, "identity_CelebA.txt", "000001.jpg 2880", "000001.jpg x"),
                         "identity_CelebA.txt line 1", "'x' is not an integer"),
    "landmarks_columns": (lambda r: _corrupt(r, "list_landmarks_align_celeba.txt", "  154\n", "\n"),
                          "list_landmarks_align_celeba.txt line 3", "expected 11 columns"),
    "missing_attr_file": (lambda r: (r / "list_attr_celeba.txt").unlink(), "list_attr_celeba.txt not found", "root"),
    "missing_partition_file": (lambda r: (r / "list_eval_partition.txt").unlink(),
                               "list_eval_partition.txt not found", "root"),
    "missing_image_folder": (lambda r: (r / "img_align_celeba").rmdir(), "img_align_celeba not found", "root"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_input_raises_one_line_user_error(tmp_path, case):
    breaks, where, words = MALFORMED[case]
    root = write_root(tmp_path / "celeba")
    breaks(root)
    with pytest.raises(UserError) as caught:
        read_celeba(root)
    message = str(caught.value)
    assert "\n" not in message and "\r" not in message
    assert where in message and words in message, message
    assert str(root) in message  # names the file with its folder, so the user can find it


def test_missing_root_and_nested_image_folder(tmp_path):
    with pytest.raises(UserError, match="does not exist") as caught:
        read_celeba(tmp_path / "nowhere")
    assert "\n" not in str(caught.value)
    root = write_root(tmp_path / "celeba")
    (root / "img_align_celeba" / "img_align_celeba").mkdir()  # as some downloads unpack
    with pytest.raises(UserError, match="move its images up one level"):
        read_celeba(root)


def test_unknown_split_name_lists_the_known_ones(tmp_path):
    with pytest.raises(UserError, match="train, val, test"):
        read_celeba(write_root(tmp_path)).indices("valid")  # torchvision's name, not ours
