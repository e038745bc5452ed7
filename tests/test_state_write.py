"""The sweep's state file is replaced whole: a write that fails part-way leaves the previous text, and
no temporary file is left beside it."""

from __future__ import annotations

import pytest

from orchestrator.state import read_text, write_text


def test_a_failed_write_keeps_the_old_state(tmp_path, monkeypatch):
    import pyarrow.fs as pafs

    location = str(tmp_path / "sweep" / "orchestrator.json")
    write_text(location, '{"status": "running"}')
    assert read_text(location) == '{"status": "running"}'

    class Broken:  # an output stream that dies half-way, as on a full disk
        def __init__(self, inner):
            self.inner = inner

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.inner.close()

        def write(self, data):
            self.inner.write(data[: len(data) // 2])
            raise OSError(28, "No space left on device")

    real = pafs.LocalFileSystem.open_output_stream
    monkeypatch.setattr(pafs, "LocalFileSystem", type("Local", (pafs.LocalFileSystem,), {
        "open_output_stream": lambda self, path, *a, **k: Broken(real(self, path, *a, **k))}))
    with pytest.raises(OSError):
        write_text(location, '{"status": "finished", "parent_run_id": "abc"}')
    assert read_text(location) == '{"status": "running"}'
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir()) == ["orchestrator.json"]


def test_a_write_replaces_the_text(tmp_path):
    location = str(tmp_path / "orchestrator.json")
    write_text(location, "one")
    write_text(location, "two")
    assert read_text(location) == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["orchestrator.json"]
