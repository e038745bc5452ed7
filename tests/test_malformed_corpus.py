"""A generated corpus of malformed records, swept through every reader by `prepare` and by the CLI.

Each case is a small valid dataset in its real layout (tests/dataset_writers.py) with one record
damaged: one field of one label line replaced by each kind of bad text, one image replaced by each
kind of bad image, one .rec record or .idx line or .bin pickle broken. For every case, `prepare`
must end in one of two ways, and never in a traceback: a one-line UserError, or a pack that reports
the bad record in metadata.json's `skipped`. The CLI must agree (exit 2 with one `error:` line, or
exit 0 with the skip listed), and --strict must refuse whatever was skipped.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path

import pytest

import dataset_writers
from orchestrator.__main__ import main
from trainables.data.prepare import prepare
from trainables.errors import UserError

from fake_images import jpeg
from test_malformed_records import deep_issame, jpeg_claiming, png_claiming

# What a damaged field may become: bytes, from the field as it was.
FIELD_DAMAGE = {
    "latin1_byte": lambda f: f + b"\xe9",
    "superscript_digit": lambda f: "²".encode(),
    "nul_byte": lambda f: f + b"\x00",
    "over_128_kib": lambda f: b"7" * (130 << 10),
    "huge_integer": lambda f: b"9" * 40,
    "nan": lambda f: b"nan",
    "empty": lambda f: b"",
    "plus_sign": lambda f: b"+1",
    "fraction": lambda f: b"1.5",
    "dotdot_path": lambda f: b"../../outside/private_photo.jpg",
    "absolute_path": lambda f: b"/etc/hostname",
    "extra_word": lambda f: f + b" x",
    "open_quote": lambda f: b'"' + f,
}

# (label file, 1-based line, separator, {field index: what it holds}) of each text layout's damaged lines
TEXT_FIELDS = {
    "celeba": [("list_attr_celeba.txt", 6, b" ", {0: "name", 1: "value"}),
               ("list_eval_partition.txt", 4, b" ", {1: "split"}),
               ("identity_CelebA.txt", 4, b" ", {1: "identity"})],
    "attributes_csv": [("labels.csv", 5, b",", {0: "file", 1: "value", 3: "split"})],
    "fairface": [("fairface_label_train.csv", 3, b",", {0: "file", 1: "age", 2: "gender", 4: "service_test"})],
    "lfw_pairs": [("pairs.txt", 2, b"\t", {0: "person", 1: "number"}), ("pairs.txt", 1, b"\t", {0: "folds"})],
}
# Damage that leaves a valid file: `1<TAB>2` without its `1` is the one-fold header of LFW's DevTrain files.
HARMLESS = {("pairs.txt", 1, 0, "empty")}

# What a damaged image may become.
IMAGE_DAMAGE = {
    "truncated_jpeg": lambda data: data[: len(data) // 2],
    "zero_bytes": lambda data: b"",
    "text_not_image": lambda data: b"hello, I am not a JPEG\n",
    "png_bomb_20000x20000": lambda data: png_claiming(20_000, 20_000),
    "truncated_png": lambda data: png_claiming(64, 64),
    "jpeg_claiming_10000x10000": lambda data: jpeg_claiming(10_000, 10_000),
}
IMAGE_OF = {"celeba": "img_align_celeba/000005.jpg", "attributes_csv": "images/4.jpg", "fairface": "train/2.jpg",
            "faces": "id1/0.jpg", "lfw_pairs": "lfw/Bob_B/Bob_B_0002.jpg"}


def _damage_field(src: Path, label: str, line: int, sep: bytes, field: int, damage) -> None:
    path = src / label
    lines = path.read_bytes().split(b"\n")
    parts = lines[line - 1].split(sep)
    if sep == b" ":  # CelebA pads with runs of spaces: damage the k-th token, keep the padding
        tokens = [i for i, p in enumerate(parts) if p]
        parts[tokens[field]] = damage(parts[tokens[field]])
    else:
        parts[field] = damage(parts[field])
    lines[line - 1] = sep.join(parts)
    path.write_bytes(b"\n".join(lines))


def _rec_payloads():
    return [dataset_writers.image_payload(float(k // 2), jpeg(k), k + 1) for k in range(6)]


def _rec_case(payload=None, offsets=None, edit=None):
    def make(src: Path) -> None:
        payloads = _rec_payloads()
        if payload is not None:
            payloads[2] = payload
        dataset_writers.rec_from_payloads(src, payloads, num_classes=3, offsets=offsets)
        if edit is not None:
            edit(src)
    return make


def _edit(name, change):
    def apply(src: Path) -> None:
        (src / name).write_bytes(change((src / name).read_bytes()))
    return apply


HEADER = struct.Struct("<IfQQ")
REC_DAMAGE = {
    "nan_label": _rec_case(HEADER.pack(0, float("nan"), 3, 0) + jpeg(2)),
    "infinite_label": _rec_case(HEADER.pack(0, float("inf"), 3, 0) + jpeg(2)),
    "negative_label": _rec_case(HEADER.pack(0, -3.0, 3, 0) + jpeg(2)),
    "fractional_label": _rec_case(HEADER.pack(0, 0.5, 3, 0) + jpeg(2)),
    "label_past_property": _rec_case(HEADER.pack(0, 7.0, 3, 0) + jpeg(2)),
    "payload_under_24_bytes": _rec_case(b"\x01" * 10),
    "empty_payload": _rec_case(b""),
    "flag_larger_than_buffer": _rec_case(HEADER.pack(1 << 30, 1.0, 3, 0) + jpeg(2)),
    "flagged_labels_nan": _rec_case(HEADER.pack(1, 0.0, 3, 0) + struct.pack("<f", float("nan")) + jpeg(2)),
    "image_not_a_jpeg": _rec_case(HEADER.pack(0, 1.0, 3, 0) + b"garbage"),
    "image_png_bomb": _rec_case(HEADER.pack(0, 1.0, 3, 0) + png_claiming(20_000, 20_000)),
    "idx_offset_too_large_for_int": _rec_case(offsets={3: "9" * 30}),
    "idx_offset_past_the_end": _rec_case(offsets={3: str(10 ** 9)}),
    "idx_offset_misaligned": _rec_case(offsets={3: "6"}),
    "idx_offset_not_a_number": _rec_case(offsets={3: "12x"}),
    "idx_offset_superscript": _rec_case(offsets={3: "²"}),
    "idx_key_missing": _rec_case(edit=_edit("train.idx", lambda b: b.replace(b"\n3\t", b"\n33\t"))),
    "idx_empty": _rec_case(edit=_edit("train.idx", lambda b: b"")),
    "rec_truncated": _rec_case(edit=_edit("train.rec", lambda b: b[: len(b) // 2])),
    "rec_empty": _rec_case(edit=_edit("train.rec", lambda b: b"")),
    "header_record_too_short": _rec_case(edit=_edit("train.rec", lambda b: b[:4] + struct.pack("<I", 8) + b[8:])),
    "header_says_nan_images": _rec_case(edit=_edit("train.rec", lambda b: b[:32] + struct.pack("<f", float("nan"))
                                                   + b[36:])),
    "header_says_a_billion_images": _rec_case(edit=_edit("train.rec", lambda b: b[:32] + struct.pack("<f", 1e9)
                                                         + b[36:])),
    "property_not_numbers": _rec_case(edit=_edit("property", lambda b: b"lots,112,112\n")),
    "property_latin1": _rec_case(edit=_edit("property", lambda b: b"\xe9\xe9,112,112\n")),
}


def _pickle_case(data):
    def make(src: Path) -> None:
        src.mkdir(parents=True)
        (src / "lfw.bin").write_bytes(data() if callable(data) else data)
    return make


BIN_DAMAGE = {
    "issame_nested_200000_deep": _pickle_case(lambda: deep_issame(200_000)),
    "issame_not_bools": _pickle_case(pickle.dumps(([jpeg(0), jpeg(1)], ["yes"]))),
    "issame_a_float_nan": _pickle_case(pickle.dumps(([jpeg(0), jpeg(1)], [float("nan")]))),
    "bins_not_bytes": _pickle_case(pickle.dumps(([jpeg(0), 7], [True]))),
    "counts_disagree": _pickle_case(pickle.dumps(([jpeg(0)], [True, False]))),
    "not_a_pair": _pickle_case(pickle.dumps({"bins": []})),
    "truncated_pickle": _pickle_case(pickle.dumps(([jpeg(0), jpeg(1)], [True]))[:-20]),
    "empty_file": _pickle_case(b""),
    "not_a_pickle": _pickle_case(b"\xff\xd8 this is a JPEG, not a pickle"),
    "runs_code": _pickle_case(b"cos\nsystem\n(S'touch /tmp/pwned-by-corpus'\ntR."),
    "huge_declared_length": _pickle_case(b"\x80\x04\x95" + struct.pack("<Q", 1 << 60) + b"]."),
    "image_png_bomb": _pickle_case(pickle.dumps(([png_claiming(20_000, 20_000), jpeg(1), jpeg(2), jpeg(3)],
                                                 [True, False]))),
    "image_truncated": _pickle_case(pickle.dumps(([jpeg(0)[:50], jpeg(1), jpeg(2), jpeg(3)], [True, False]))),
}


def _text_case(fmt, label, line, sep, field, damage):
    def make(src: Path) -> None:
        dataset_writers.WRITERS[fmt](src)
        _damage_field(src, label, line, sep, field, damage)
    return make


def _image_case(fmt, damage):
    def make(src: Path) -> None:
        dataset_writers.WRITERS[fmt](src)
        path = src / IMAGE_OF[fmt]
        path.write_bytes(damage(path.read_bytes()))
    return make


def _faces_bad_name(src: Path) -> None:
    dataset_writers.faces(src)
    os.rename(bytes(src / "id1"), bytes(src) + b"/id\xe9")  # a Latin-1 folder name, as an old archive holds


def corpus():
    """(id, format, make(src)) for every generated case."""
    for fmt, labels in TEXT_FIELDS.items():
        for label, line, sep, fields in labels:
            for field, what in fields.items():
                for name, damage in FIELD_DAMAGE.items():
                    if (label, line, field, name) in HARMLESS:
                        continue
                    yield f"{fmt}-{label}:{line}-{what}-{name}", fmt, _text_case(fmt, label, line, sep, field, damage)
    for fmt in IMAGE_OF:
        for name, damage in IMAGE_DAMAGE.items():
            yield f"{fmt}-image-{name}", fmt, _image_case(fmt, damage)
    yield "faces-folder-name-not-utf8", "faces", _faces_bad_name
    for name, make in REC_DAMAGE.items():
        yield f"insightface_rec-{name}", "insightface_rec", make
    for name, make in BIN_DAMAGE.items():
        yield f"insightface_bin-{name}", "insightface_bin", make
        yield f"insightface_rec-beside-{name}", "insightface_rec", _beside_rec(make)


def _beside_rec(make_bin):
    def make(src: Path) -> None:
        dataset_writers.rec(src)
        make_bin(src / "_bin")
        (src / "_bin" / "lfw.bin").rename(src / "agedb_30.bin")
        (src / "_bin").rmdir()
    return make


CASES = list(corpus())


def _api(fmt, src, out, strict):
    """'error' (one line) or 'skipped' (listed in metadata.json) or 'accepted'."""
    try:
        info = prepare(fmt, src, str(out), strict=strict)
    except UserError as err:
        assert "\n" not in str(err) and str(err), repr(str(err))
        return "error"
    listed = json.loads((out / "metadata.json").read_text())["skipped"]
    assert listed == info.skipped and all(set(s) == {"file", "split", "reason"} for s in listed)
    return "skipped" if listed else "accepted"


@pytest.mark.parametrize("fmt,make", [pytest.param(f, m, id=i) for i, f, m in CASES])
def test_a_malformed_record_is_one_line_or_a_reported_skip(tmp_path, fmt, make, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "private_photo.jpg").write_bytes(jpeg(999))
    src = tmp_path / "src"
    make(src)

    found = _api(fmt, src, tmp_path / "api", strict=False)
    assert found != "accepted", "a malformed record was packed as if it were fine"

    capsys.readouterr()
    code = main(["prepare", fmt, "--src", str(src), "--out", str(tmp_path / "cli")])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if found == "error":
        assert code == 2 and len([x for x in err.splitlines() if x.startswith("error:")]) == 1, err
    else:
        assert code == 0 and json.loads((tmp_path / "cli" / "metadata.json").read_text())["skipped"], err

    assert _api(fmt, src, tmp_path / "strict", strict=True) == "error"  # strict refuses what was skipped
    assert not (tmp_path / "strict").exists()
    assert not Path("/tmp/pwned-by-corpus").exists()


def test_the_corpus_covers_every_reader():
    from trainables.data.plans import FORMATS

    assert {fmt for _, fmt, _ in CASES} == set(FORMATS.names()) and len(CASES) >= 150
