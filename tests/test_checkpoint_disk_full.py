"""A checkpoint that does not fit on its disk is one line naming the folder, the room and the fix, where torch says
only "unexpected pos N vs M"; any other failed save is raised as it was. torch's short write is real here: /dev/full
takes no byte. Only the free space the worker reads afterwards is set by the test."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from trainables import worker
from trainables.errors import UserError

pytestmark = pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
STATE = {"model": {"weight": torch.zeros(1024, 256)}, "optimizer": {"state": [torch.zeros(1024, 256)]}}  # 2 MiB


def _free(monkeypatch, free: int) -> None:
    usage = shutil.disk_usage("/dev")
    monkeypatch.setattr(worker.shutil, "disk_usage", lambda path: usage._replace(free=free))


def test_a_checkpoint_on_a_full_disk_is_one_line_naming_the_folder_and_the_fix(monkeypatch):
    _free(monkeypatch, 0)
    with pytest.raises(UserError) as caught:
        worker.save_or_say(STATE, Path("/dev/full"))
    assert str(caught.value).startswith("cannot write the checkpoint to /dev: its disk has 0 MiB free and the "
                                        "checkpoint needs about 2 MiB; free some space there"), caught.value
    assert "\n" not in str(caught.value)


def test_a_failed_save_with_room_on_the_disk_is_raised_as_it_was(monkeypatch):
    _free(monkeypatch, 10 * 2**30)
    with pytest.raises(RuntimeError):
        worker.save_or_say(STATE, Path("/dev/full"))
