"""On several nodes the trials read data prepared into this node's cache where every node sees it, and
otherwise from a copy in the shared storage (orchestrator/shared_data.py): the copy holds the same rows, is
made once, and a copy cut short before its metadata.json is never taken for a dataset; a folder every node
reads is not copied. The two-node cluster test (tests/test_cluster.py), whose nodes share one disk, trains
from the folder in place."""

from __future__ import annotations

import pytest

from orchestrator import shared_data
from trainables.data.demo.celeba import write_demo_celeba
from trainables.data.prepare import prepare
from trainables.data.shards import ShardSplit
from trainables.errors import UserError


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Two local prepared datasets, as a task's settings name them (a root, and a list of roots)."""
    tmp = tmp_path_factory.mktemp("prepared")
    roots = []
    for seed in (1, 2):
        raw = write_demo_celeba(tmp / f"raw{seed}", num_images=40, seed=seed)
        prepare("celeba", raw, str(tmp / f"celeba-{seed}"), row_group_rows=8)
        roots.append(str(tmp / f"celeba-{seed}"))
    return roots


def _rows(root: str) -> list:
    split = ShardSplit(root, "train")
    return split.labels().to_numpy().tolist()


def test_local_roots_are_replaced_by_copies_in_the_shared_storage_with_the_same_rows(prepared, tmp_path):
    storage = f"file://{tmp_path}/shared"
    said = []
    settings = {"data.root": prepared[0], "eval.targets": [prepared[1], "s3://bucket/lfw"], "data.format": ""}
    shared = shared_data.share(settings, storage, said.append)

    assert shared["data.root"].startswith(f"{storage}/prepared/celeba-1-") and shared["data.format"] == ""
    assert shared["eval.targets"][0].startswith(f"{storage}/prepared/celeba-2-")
    assert shared["eval.targets"][1] == "s3://bucket/lfw"  # already where every node reads it
    assert _rows(shared["data.root"]) == _rows(prepared[0]) and _rows(shared["eval.targets"][0]) == _rows(prepared[1])
    assert len(said) == 2 and all("Copied the prepared data at" in line for line in said), said

    said.clear()  # made once: the next sweep finds the copies and copies nothing
    assert shared_data.share(settings, storage, said.append) == shared and said == []


def test_a_folder_every_node_reads_is_read_in_place_and_the_others_are_copied(prepared, tmp_path):
    storage = f"file://{tmp_path}/shared"
    said = []
    settings = {"data.root": prepared[0], "eval.targets": [prepared[1]]}
    shared = shared_data.share(settings, storage, said.append, in_place={prepared[0]})
    assert shared["data.root"] == prepared[0] and shared["eval.targets"][0].startswith(f"{storage}/prepared/celeba-2-")
    assert said[0] == f"The prepared data at {prepared[0]} is read in place: every node of the cluster sees it there"
    assert "Copied the prepared data at" in said[1] and len(said) == 2, said
    assert not list((tmp_path / "shared" / "prepared").glob("celeba-1-*"))  # nothing copied for it


@pytest.mark.ray
def test_the_probe_finds_what_each_node_of_a_real_ray_sees(prepared, local_ray, tmp_path):
    """A task on each alive node (one here) reads metadata.json's digest where it runs: a folder with it is read
    in place, a folder without it (or a path that is not there) is not."""
    (tmp_path / "half").mkdir()  # shards without metadata.json: not a dataset any node can read
    missing = str(tmp_path / "nowhere")
    assert shared_data.read_in_place([prepared[0], str(tmp_path / "half"), missing]) == {prepared[0]}


def test_a_copy_cut_short_is_never_read_and_the_next_sweep_completes_it(prepared, tmp_path, monkeypatch):
    storage = f"file://{tmp_path}/shared"
    copy_files, copied = shared_data.pafs.copy_files, []

    def fails_on_the_second_file(*args, **kwargs):  # the store goes away in the middle of the copy
        if copied:
            raise OSError("connection reset")
        copied.append(args[0])
        return copy_files(*args, **kwargs)

    monkeypatch.setattr(shared_data.pafs, "copy_files", fails_on_the_second_file)
    with pytest.raises(UserError, match="cannot copy the prepared data at"):
        shared_data.shared_copy(prepared[0], storage, lambda text: None)
    copy = shared_data.destination(prepared[0], storage)
    assert copied and (tmp_path / "shared" / "prepared" / copy.rsplit("/", 1)[-1]).is_dir()  # a part was written
    with pytest.raises(UserError, match="not a prepared dataset"):  # but no reader takes it for one
        ShardSplit(copy, "train")

    monkeypatch.setattr(shared_data.pafs, "copy_files", copy_files)
    said = []
    assert shared_data.shared_copy(prepared[0], storage, said.append) == copy
    assert len(said) == 1 and _rows(copy) == _rows(prepared[0])


def test_an_unwritable_storage_is_one_line_naming_the_fix(prepared, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(UserError) as err:
        shared_data.shared_copy(prepared[0], f"file://{tmp_path}/file", lambda text: None)
    assert "cannot copy the prepared data at" in str(err.value) and "--storage" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("copy", [False, True], ids=["doctor", "sweep"])
def test_the_pre_run_check_says_which_data_is_read_in_place_and_which_is_copied(copy, prepared, tmp_path, monkeypatch):
    from types import SimpleNamespace

    from orchestrator.preflight import Preflight

    monkeypatch.setattr(shared_data, "read_in_place", lambda roots: {prepared[0]})
    check = Preflight(opts=SimpleNamespace(), nodes=2, storage=f"file://{tmp_path}/shared", copy_data=copy)
    check.data = SimpleNamespace(settings={"data.root": prepared[0], "eval.targets": [prepared[1]]}, root=prepared[0])
    said = check.check_data_on_nodes()
    assert f"all 2 nodes read the prepared data at {prepared[0]} where it is" in said, said
    copied = list((tmp_path / "shared" / "prepared").glob("celeba-2-*"))
    if copy:  # the sweep copies the other one, and its trials read the copy
        assert said.endswith("the trials read the data from " f"file://{tmp_path}/shared/prepared/ on all 2 nodes"), said
        assert len(copied) == 1 and check.data.settings["eval.targets"] == [f"file://{copied[0]}"]
        assert check.data.root == prepared[0]
    else:  # doctor only says what the sweep would do
        assert f"the prepared data at {prepared[1]} is on this node only: the sweep copies it" in said, said
        assert copied == [] and check.data.settings["eval.targets"] == [prepared[1]]
