"""Each malformed real file that used to end in a traceback: now one line naming `file:line` (or the
record) and the fix, and without --strict the one bad record is skipped and reported in
metadata.json while the rest is packed. Fixtures are the real layouts, broken in one place."""

from __future__ import annotations

import pickle
import struct
import subprocess
import sys
from pathlib import Path

import pytest

import dataset_writers
from trainables.data.decode import decode_image, decode_shard_image
from trainables.data.formats.insightface_bin import read_insightface_bin
from trainables.data.prepare import prepare
from trainables.data.shards import load_metadata
from trainables.errors import UserError

from fake_images import jpeg, jpeg_claiming, png_claiming


def skipped_and_refused(tmp_path, fmt, src, where: str, count: dict):
    """Non-strict: packed `count`, one skip naming `where`; strict: one line naming `where`."""
    info = prepare(fmt, src, str(tmp_path / "out"))
    assert info.counts == count
    assert len(info.skipped) == 1 and where in info.skipped[0]["reason"], info.skipped
    assert load_metadata(str(tmp_path / "out"))["skipped"] == info.skipped
    with pytest.raises(UserError) as e:
        prepare(fmt, src, str(tmp_path / "strict"), strict=True)
    assert "\n" not in str(e.value) and where in str(e.value), str(e.value)
    return info.skipped[0]["reason"]


def test_pairs_txt_with_a_superscript_digit(tmp_path):
    src = dataset_writers.lfw(tmp_path / "lfw")
    (src / "pairs.txt").write_text((src / "pairs.txt").read_text().replace("Ann_A\t1\t2", "Ann_A\t1\t²"))
    reason = skipped_and_refused(tmp_path, "lfw_pairs", src, f"{src / 'pairs.txt'} line 2:", {"lfw": 3})
    assert "'²' is not an image number" in reason


def test_fairface_csv_with_a_latin1_byte(tmp_path):
    src = dataset_writers.fairface(tmp_path / "ff")
    path = src / "fairface_label_train.csv"
    path.write_bytes(path.read_bytes().replace(b"train/2.jpg,20-29,Male,White", b"train/2.jpg,20-29,Male,Wh\xe9te"))
    reason = skipped_and_refused(tmp_path, "fairface", src, f"{path} line 3", {"train": 3, "val": 4})
    assert "not UTF-8" in reason and "save the CSV as UTF-8" in reason


def test_fairface_csv_with_a_field_over_128_kib(tmp_path):
    src = dataset_writers.fairface(tmp_path / "ff")
    path = src / "fairface_label_train.csv"
    path.write_text(path.read_text().replace("train/3.jpg,20-29,Female,White,True",
                                             "train/3.jpg,20-29,Female,White," + "T" * (130 << 10)))
    reason = skipped_and_refused(tmp_path, "fairface", src, f"{path} line 4", {"train": 3, "val": 4})
    assert "field larger than field limit" in reason


def test_attributes_csv_with_a_latin1_byte_in_a_file_name(tmp_path):
    src = dataset_writers.attributes_csv(tmp_path / "photos")
    path = src / "labels.csv"
    path.write_bytes(path.read_bytes().replace(b"images/4.jpg", b"images/\xe94.jpg"))
    skipped_and_refused(tmp_path, "attributes_csv", src, f"{path} line 6", {"train": 3, "val": 2, "test": 3})


def rec_images(n=4):
    return [dataset_writers.image_payload(float(k // 2), jpeg(k), k + 1) for k in range(n)]


def test_idx_offset_too_large_for_an_integer(tmp_path):
    src = dataset_writers.rec_from_payloads(tmp_path / "rec", rec_images(), 2, offsets={3: "9" * 30})
    reason = skipped_and_refused(tmp_path, "insightface_rec", src, f"{src / 'train.idx'} line 4: key 3", {"train": 3})
    assert "too large for an integer" in reason


@pytest.mark.parametrize("payload,words", [
    pytest.param(struct.pack("<IfQQ", 0, float("nan"), 3, 0) + jpeg(2), "label nan", id="nan label"),
    pytest.param(b"\x00" * 10, "shorter than its 24-byte header", id="payload under 24 bytes"),
    pytest.param(struct.pack("<IfQQ", 10 ** 6, 1.0, 3, 0) + jpeg(2), "more labels than its payload",
                 id="flag larger than the buffer"),
    pytest.param(struct.pack("<IfQQ", 0, -1.0, 3, 0) + jpeg(2), "label -1", id="negative label"),
])
def test_a_damaged_rec_record_is_skipped(tmp_path, payload, words):
    payloads = rec_images()
    payloads[2] = payload
    src = dataset_writers.rec_from_payloads(tmp_path / "rec", payloads, 2)
    reason = skipped_and_refused(tmp_path, "insightface_rec", src, f"{src / 'train.idx'} line 4: key 3", {"train": 3})
    assert words in reason, reason


def test_a_rec_header_too_short_is_one_line(tmp_path):
    src = dataset_writers.rec(tmp_path / "rec")
    data = bytearray((src / "train.rec").read_bytes())
    data[4:8] = struct.pack("<I", 12)  # record 0 now claims a 12-byte payload
    (src / "train.rec").write_bytes(bytes(data))
    with pytest.raises(UserError) as e:
        prepare("insightface_rec", src, str(tmp_path / "out"))
    assert "\n" not in str(e.value) and "header record (key 0)" in str(e.value)


def deep_issame(depth: int) -> bytes:
    """(bins, [[[...]]]) as a protocol-2 pickle: `depth` EMPTY_LISTs, each APPENDed into the one below."""
    bins = pickle.dumps([jpeg(0), jpeg(1)], protocol=2)[2:-1]
    return b"\x80\x02" + bins + b"]" + b"]" * depth + b"a" * depth + b"\x86."


def test_an_issame_entry_nested_200000_deep(tmp_path):
    path = tmp_path / "bins" / "lfw.bin"
    path.parent.mkdir()
    path.write_bytes(deep_issame(200_000))
    with pytest.raises(UserError) as e:
        read_insightface_bin(path)
    assert str(e.value) == f"{path}: issame_list[0] is a list, not a bool; the file is damaged, re-copy it"
    with pytest.raises(UserError) as e:
        prepare("insightface_bin", path.parent, str(tmp_path / "out"))
    assert "issame_list[0] is a list" in str(e.value)
    # Beside a .rec, that one verification file is skipped; the training set is not held up by it.
    src = dataset_writers.rec(tmp_path / "rec")
    (src / "agedb_30.bin").write_bytes(path.read_bytes())
    info = prepare("insightface_rec", src, str(tmp_path / "out2"))
    assert info.counts == {"train": 6} and [s["file"] for s in info.skipped] == ["agedb_30.bin"]




def test_a_png_bomb_and_a_truncated_png_do_not_crash_the_shard_decoder(tmp_path):
    """torchvision's PNG decoder kills the process on such data; run it in a child to see it live."""
    script = ("import sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]\n"
              "from trainables.data.decode import decode_shard_image\n"
              "from trainables.errors import UserError\n"
              "from fake_images import png_claiming\n"
              "for w in (20000, 64):\n"
              "    try:\n"
              "        decode_shard_image(png_claiming(w, w), 64, 'bomb.png')\n"
              "    except UserError as err:\n"
              "        print('one line:', err)\n")
    import trainables

    repo, tests = Path(trainables.__file__).parents[1], Path(__file__).parent
    done = subprocess.run([sys.executable, "-c", script, str(repo), str(tests)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, (done.returncode, done.stderr[-500:])
    lines = done.stdout.splitlines()
    assert len(lines) == 2 and all(line.startswith("one line: cannot decode image bomb.png") for line in lines)
    assert "20000x20000" in lines[0] or "exceeds limit" in lines[0]


@pytest.mark.parametrize("data", [jpeg_claiming(10_000, 10_000), jpeg_claiming(20_000, 20_000),
                                  png_claiming(10_000, 10_000), png_claiming(20_000, 20_000)],
                         ids=["jpeg-100M", "jpeg-400M", "png-100M", "png-400M"])
def test_an_image_claiming_too_many_pixels_is_one_line_in_every_decoder(data):
    for decode in (decode_shard_image, decode_image):
        with pytest.raises(UserError) as e:
            decode(data, 64, "x.img")
        assert "\n" not in str(e.value) and str(e.value).startswith("cannot decode image x.img:")


def test_prepare_skips_an_image_claiming_too_many_pixels(tmp_path):
    src = dataset_writers.faces(tmp_path / "faces")
    (src / "id1" / "1.jpg").write_bytes(jpeg_claiming(10_000, 10_000))
    (src / "id2" / "bomb.png").write_bytes(png_claiming(20_000, 20_000))
    info = prepare("faces", src, str(tmp_path / "out"))
    assert info.counts == {"train": 5} and sorted(s["file"] for s in info.skipped) == ["id1/1.jpg", "id2/bomb.png"]
    assert all("pixels" in s["reason"] for s in info.skipped)


def test_an_unreadable_label_file_or_folder_is_one_line(tmp_path, monkeypatch):
    """Permissions cannot be taken away from root, who runs these tests: the reads are made to fail."""
    import errno
    import pathlib

    src = dataset_writers.celeba(tmp_path / "celeba")
    real = pathlib.Path.read_bytes

    def denied(self):
        if self.name == "list_attr_celeba.txt":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(pathlib.Path, "read_bytes", denied)
    with pytest.raises(UserError) as e:
        prepare("celeba", src, str(tmp_path / "out"))
    assert str(e.value) == (f"cannot read {src / 'list_attr_celeba.txt'}: Permission denied; make the dataset "
                            f"readable (nothing was changed)")
    monkeypatch.undo()

    from trainables.data.formats import faces

    src = dataset_writers.faces(tmp_path / "faces")
    real_images = faces._images

    def images(folder):
        if folder.endswith("id1"):
            raise PermissionError(errno.EACCES, "Permission denied", folder)
        return real_images(folder)

    monkeypatch.setattr(faces, "_images", images)
    reason = skipped_and_refused(tmp_path, "faces", src, f"{src / 'id1'}: cannot list it (Permission denied)",
                                 {"train": 4})
    assert "make it readable" in reason
