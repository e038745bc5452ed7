"""`prepare` never destroys data: a re-prepare switches metadata.json only when the new shards are all
written, deletes only the shard files the old metadata listed (a user's own files survive, locally
and on object stores), refuses invalid settings and contradictory inputs before touching OUT, and
turns a full disk or a permission error into the same one line."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import pytest

import dataset_writers
from orchestrator.__main__ import main
from insightface_writers import write_insightface_bin
from trainables.data.prepare import is_prepared, prepare
from trainables.data.shards import ShardDataset, ShardSplit, SplitWriter, load_metadata
from trainables.errors import UserError

from fake_images import jpeg


def one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text, text
    return text


def snapshot(root) -> dict:
    """Every file under `root` and its bytes."""
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            out[os.path.relpath(path, root)] = open(path, "rb").read()
    return out


def readable(out: str) -> int:
    """Rows decoded from every split: proves each listed shard is there and whole."""
    meta = load_metadata(out)
    rows = 0
    for split in meta["splits"]:
        s = ShardSplit(out, split)
        rows += len(list(ShardDataset(s, s.eval_row_groups(0, 1), size=8)))
    return rows


@pytest.fixture
def prepared(tmp_path):
    src = dataset_writers.faces(tmp_path / "faces")
    out = str(tmp_path / "out")
    prepare("faces", src, out, row_group_rows=2)
    return src, out


@pytest.mark.parametrize("settings", [{"row_group_rows": -1}, {"row_group_rows": 0}, {"max_file_bytes": 0},
                                      {"max_file_bytes": -5}, {"row_group_rows": 2.5}])
def test_invalid_settings_are_refused_and_the_output_is_untouched(prepared, settings):
    src, out = prepared
    before = snapshot(out)
    with pytest.raises(UserError) as e:
        prepare("faces", src, out, **settings)
    assert "at least 1" in one_line(e) and "nothing was changed" in one_line(e)
    assert snapshot(out) == before


def test_reprepare_keeps_user_files_and_deletes_only_old_shards(prepared):
    src, out = prepared
    old = load_metadata(out)
    os.makedirs(os.path.join(out, "notes"))
    for rel in ("README.txt", "train/my_split_notes.csv", "notes/thesis.tex"):
        with open(os.path.join(out, rel), "w") as f:
            f.write("precious")
    info = prepare("faces", src, out, row_group_rows=4)  # other settings: a real re-prepare
    assert not info.already_prepared
    for rel in ("README.txt", "train/my_split_notes.csv", "notes/thesis.tex"):
        assert open(os.path.join(out, rel)).read() == "precious", rel
    new = load_metadata(out)
    old_files = {f for files in old["splits"].values() for f in files}
    new_files = {f for files in new["splits"].values() for f in files}
    assert old_files.isdisjoint(new_files)
    assert not any(os.path.exists(os.path.join(out, f)) for f in old_files)  # the old generation is gone
    assert readable(out) == 6
    assert sorted(os.listdir(out)) == ["README.txt", "metadata.json", "notes", "train"]  # no marker, no temp file
    assert sorted(os.listdir(os.path.dirname(out))) == ["faces", "out"]  # nothing beside OUT either


def test_a_failed_reprepare_leaves_the_old_dataset_whole(prepared, monkeypatch):
    src, out = prepared
    before = snapshot(out)
    real_flush = SplitWriter._flush

    def flush_then_fail(self, rows):
        real_flush(self, rows)
        raise OSError(errno.ENOSPC, "No space left on device")  # after a shard of the new generation is written

    monkeypatch.setattr(SplitWriter, "_flush", flush_then_fail)
    with pytest.raises(UserError) as e:
        prepare("faces", src, out, row_group_rows=4)
    assert out in one_line(e) and "No space left on device" in one_line(e)
    assert snapshot(out) == before and readable(out) == 6


@pytest.mark.parametrize("code,words", [(errno.ENOSPC, "No space left on device; free some space there"),
                                        (errno.EACCES, "Permission denied; make it writable"),
                                        (errno.EROFS, "Read-only file system; make it writable")])
def test_full_disk_and_permission_errors_read_alike(tmp_path, monkeypatch, capsys, code, words):
    src = dataset_writers.faces(tmp_path / "faces")

    def fail(self, rows):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(SplitWriter, "_flush", fail)
    out = tmp_path / "out"
    with pytest.raises(UserError) as e:
        prepare("faces", src, str(out))
    assert one_line(e) == (f"cannot write the prepared dataset to {out}: {words}, or pass another --out "
                           f"(the dataset there, if any, was left as it was)")
    assert not out.exists()  # this prepare made OUT, and took it away again
    assert main(["prepare", "faces", "--src", str(src), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and [line for line in err.splitlines() if line.startswith("error:")] == \
        [f"error: {one_line(e)}"]


def test_an_unwritable_out_is_one_line(tmp_path, capsys):
    src = dataset_writers.faces(tmp_path / "faces")
    assert main(["prepare", "faces", "--src", str(src), "--out", "/proc/no-such-dir/out"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error: cannot write the prepared dataset to /proc/no-such-dir/out" in err


def test_out_under_a_regular_file_is_one_line_and_exit_2(tmp_path, capsys):
    src = dataset_writers.faces(tmp_path / "faces")
    (tmp_path / "notes.txt").write_text("mine")
    out = tmp_path / "notes.txt" / "shards"
    with pytest.raises(UserError) as e:
        prepare("faces", src, str(out))
    assert "notes.txt, which is a file, not a folder" in one_line(e)
    assert main(["prepare", "auto", "--src", str(src), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len([x for x in err.splitlines() if x.startswith("error:")]) == 1
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_cli_refuses_nonpositive_sizes_in_one_line(prepared, capsys):
    src, out = prepared
    before = snapshot(out)
    for flag in ("--row-group-rows", "--max-file-mib"):
        for value in ("0", "-1"):
            assert main(["prepare", "faces", "--src", str(src), "--out", out, flag, value]) == 2
            err = capsys.readouterr().err
            assert "Traceback" not in err and "at least 1" in err
    assert snapshot(out) == before


@pytest.mark.parametrize("name", ["train.bin", "val.bin", "test.bin"])
def test_a_bin_named_like_a_split_beside_a_rec_is_refused(tmp_path, name):
    src = dataset_writers.rec(tmp_path / "rec")
    write_insightface_bin(src / name, [jpeg(50), jpeg(51)], [True])
    with pytest.raises(UserError) as e:
        prepare("insightface_rec", src, str(tmp_path / "out"))
    assert f"{src / name}: a verification file named {name} would replace the {name[:-4]} split" in one_line(e)
    assert not (tmp_path / "out").exists()


def memory_store(monkeypatch):
    """Point every URI at one fsspec memory filesystem: an object store without folders or renames."""
    import fsspec
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    from trainables.data import prepare as prepare_module, shards

    memory = PyFileSystem(FSSpecHandler(fsspec.filesystem("memory")))
    monkeypatch.setattr(shards, "resolve", lambda root: (memory, "/bucket/" + str(root).split("://")[-1]))
    for module in (prepare_module, sys.modules.get("trainables.data.prepared_output")):
        if hasattr(module, "resolve"):  # wherever the writer looks OUT up
            monkeypatch.setattr(module, "resolve", shards.resolve)
    return memory


def store_files(memory, prefix="/bucket/ds"):
    from pyarrow.fs import FileSelector, FileType

    return {i.path for i in memory.get_file_info(FileSelector(prefix, recursive=True, allow_not_found=True))
            if i.type == FileType.File}


def test_object_store_keeps_old_shards_until_the_new_ones_are_written(tmp_path, monkeypatch):
    memory = memory_store(monkeypatch)
    src = dataset_writers.faces(tmp_path / "faces")
    prepare("faces", src, "mock://ds", row_group_rows=2)
    with memory.open_output_stream("/bucket/ds/mine.txt") as f:
        f.write(b"precious")
    old = store_files(memory)
    assert readable("mock://ds") == 6
    (src / "id1" / "0.jpg").write_bytes(b"not a jpeg")  # the new prepare stops at it under strict
    with pytest.raises(UserError):
        prepare("faces", src, "mock://ds", row_group_rows=2, strict=True)
    assert store_files(memory) == old and readable("mock://ds") == 6  # nothing of the old one went

    (src / "id1" / "0.jpg").write_bytes(jpeg(10))
    order = []
    real_flush = SplitWriter._flush

    def flush(self, rows):
        order.append(("write", store_files(memory) >= old - {"/bucket/ds/metadata.json"}))
        real_flush(self, rows)

    monkeypatch.setattr(SplitWriter, "_flush", flush)
    prepare("faces", src, "mock://ds", row_group_rows=3)
    assert order and all(kept for _, kept in order)  # every new shard was written while the old ones stood
    now = store_files(memory)
    assert "/bucket/ds/mine.txt" in now and not (old - {"/bucket/ds/mine.txt", "/bucket/ds/metadata.json"}) & now
    assert readable("mock://ds") == 6


def test_a_killed_prepare_leaves_the_old_dataset_and_its_leftovers_are_cleaned(prepared):
    src, out = prepared
    before = snapshot(out)
    # A prepare killed mid-way: its marker names a process that no longer exists, its shards are unlisted.
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    import socket
    with open(os.path.join(out, ".prepare-0badc0de"), "w") as f:
        json.dump({"host": socket.gethostname(), "pid": gone.pid}, f)
    with open(os.path.join(out, "train", "part-0badc0de-00000.parquet"), "wb") as f:
        f.write(b"half a shard")
    assert is_prepared(out) and readable(out) == 6  # readers see the old dataset only
    prepare("faces", src, out, row_group_rows=5)
    assert not os.path.exists(os.path.join(out, ".prepare-0badc0de"))
    assert not os.path.exists(os.path.join(out, "train", "part-0badc0de-00000.parquet"))
    assert readable(out) == 6 and set(snapshot(out)) != set(before)


def test_a_killed_prepares_marker_whose_pid_another_process_now_has_is_cleaned(prepared):
    """The kernel reuses pids: a marker's process counts as alive only if the process now at that pid started
    when the marker says (trainables/process_owner.py)."""
    import socket

    from trainables import process_owner

    src, out = prepared
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = process_owner.start_time(other.pid)
        for generation, when in (("0badc0de", str(int(started) - 1)), ("0000cafe", started)):
            with open(os.path.join(out, f".prepare-{generation}"), "w") as f:
                json.dump({"host": socket.gethostname(), "pid": other.pid, "started": when}, f)
            with open(os.path.join(out, "train", f"part-{generation}-00000.parquet"), "wb") as f:
                f.write(b"half a shard")
        prepare("faces", src, out, row_group_rows=5)
    finally:
        other.kill()
        other.wait()
    assert not os.path.exists(os.path.join(out, "train", "part-0badc0de-00000.parquet"))  # pid reused: gone
    assert os.path.exists(os.path.join(out, "train", "part-0000cafe-00000.parquet"))  # its writer still runs
    assert readable(out) == 6


def test_a_first_prepare_killed_midway_does_not_block_the_next(tmp_path):
    src = dataset_writers.faces(tmp_path / "faces")
    out = tmp_path / "out"
    (out / "train").mkdir(parents=True)
    (out / ".prepare-0badc0de").write_text(json.dumps({"host": "elsewhere", "pid": 1}))
    (out / "train" / "part-0badc0de-00000.parquet").write_bytes(b"half")
    assert not is_prepared(str(out))
    assert prepare("faces", src, str(out)).counts == {"train": 6}
    # Another host's leftovers are not ours to judge: kept, and never listed.
    assert (out / "train" / "part-0badc0de-00000.parquet").exists() and readable(str(out)) == 6


def test_a_hand_edited_metadata_never_makes_prepare_delete_other_files(prepared, tmp_path):
    src, out = prepared
    victim = tmp_path / "victim.parquet"
    victim.write_bytes(b"someone's data")
    (tmp_path / "out" / "train" / "keep.parquet").write_bytes(b"mine")
    meta = load_metadata(out)
    meta["splits"]["train"] += ["../victim.parquet", str(victim), "train/keep.parquet"]
    (tmp_path / "out" / "metadata.json").write_text(json.dumps(meta))
    prepare("faces", src, out, row_group_rows=3)
    assert victim.read_bytes() == b"someone's data"
    assert (tmp_path / "out" / "train" / "keep.parquet").read_bytes() == b"mine"
