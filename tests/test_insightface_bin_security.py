"""A .bin file is a pickle, and a pickle can run code: the reader must refuse every global but the
few that a list of bytes needs, name the file and the refused global, and run nothing."""

from __future__ import annotations

import copyreg
import pickle
import struct

import pytest

from trainables.data.formats.insightface_bin import read_insightface_bin, safe_loads
from trainables.errors import UserError

from insightface_writers import write_insightface_bin


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _str0(text: str) -> bytes:
    return b"V" + text.encode("raw_unicode_escape") + b"\n"


def reduce_call(module: str, name: str, arg: str, proto: int = 0) -> bytes:
    """`module.name(arg)` as a REDUCE, spelled with GLOBAL (protocol 0) or STACK_GLOBAL (protocol 4)."""
    if proto >= 4:
        def short(s):
            b = s.encode()
            return b"\x8c" + bytes([len(b)]) + b
        return b"\x80\x04" + short(module) + short(name) + b"\x93" + short(arg) + b"\x85R."
    return _global(module, name) + b"(" + _str0(arg) + b"tR."


def wrapped_in_valid_data(payload: bytes) -> bytes:
    """A plausible (bins, issame) whose second image is the payload's result: the bad global comes
    after a legitimate bytes object, so a reader that lets anything through would run it."""
    assert payload.endswith(b".")
    body = payload[2:-1] if payload.startswith(b"\x80") else payload[:-1]
    return b"\x80\x04](C\x04\xff\xd8\xff\xd9" + body + b"e]\x88a\x86."


class Exploit:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def payloads(marker):
    import builtins
    import os
    import subprocess

    touch = f"touch {marker}"
    py = f"open({str(marker)!r}, 'w').write('pwned')"
    yield os.system.__module__ + ".system", pickle.dumps(([Exploit(os.system, touch)], [True]), protocol=2)
    yield "subprocess.call", pickle.dumps(Exploit(subprocess.call, ["touch", str(marker)]), protocol=4)
    yield "subprocess.Popen", pickle.dumps(Exploit(subprocess.Popen, ["touch", str(marker)]), protocol=5)
    yield "builtins.exec", pickle.dumps(Exploit(builtins.exec, py), protocol=3)
    yield "__builtin__.eval", pickle.dumps(Exploit(builtins.eval, py), protocol=0)  # py2 names under 0-2
    yield "posix.system", reduce_call("posix", "system", touch)
    yield "__builtin__.eval", reduce_call("__builtin__", "eval", py)
    yield "builtins.exec", wrapped_in_valid_data(reduce_call("builtins", "exec", py, proto=4))
    yield "builtins.getattr", _global("builtins", "getattr") + b"(" + _global("os", "path") + _str0("x") + b"tR."
    # INST opcode: instantiate os.system with an argument.
    yield "os.system", b"(" + _str0(touch) + b"ios\nsystem\n."
    yield "copy_reg._reconstructor", pickle.dumps(([Exploit(copyreg._reconstructor, object, object, None)], []), 1)


def test_malicious_bins_are_refused_and_never_run(tmp_path):
    marker = tmp_path / "marker"
    for refused, data in payloads(marker):
        path = tmp_path / "agedb_30.bin"
        path.write_bytes(data)
        with pytest.raises(UserError) as e:
            read_insightface_bin(path)
        text = str(e.value)
        assert "\n" not in text and "agedb_30.bin" in text and refused in text, (refused, text)
        assert not marker.exists(), f"{refused} ran"


def test_the_payloads_are_live(tmp_path):
    """Sanity: the Python-level payloads really do run under plain pickle.loads (so the test above
    is not vacuous)."""
    for refused, data in payloads(tmp_path / "marker"):
        if refused.endswith(("exec", "eval")):
            marker = tmp_path / "marker"
            pickle.loads(data)
            assert marker.read_text() == "pwned"
            marker.unlink()


def test_extension_registry_and_persistent_ids_are_refused(tmp_path):
    marker = tmp_path / "marker"
    copyreg.add_extension("os", "system", 0xF0)
    try:
        data = b"\x80\x02\x82\xf0X" + struct.pack("<I", 5 + len(str(marker))) + f"touch {marker}".encode() + b"\x85R."
        path = tmp_path / "lfw.bin"
        path.write_bytes(data)
        with pytest.raises(UserError) as e:
            read_insightface_bin(path)
        assert "os.system" in str(e.value)
    finally:
        copyreg.remove_extension("os", "system", 0xF0)
    path.write_bytes(b"\x80\x02X\x03\x00\x00\x00abcQ.")  # BINPERSID
    with pytest.raises(UserError) as e:
        read_insightface_bin(path)
    assert "persistent id" in str(e.value)
    assert not marker.exists()


def test_allowed_globals_only_build_bytes():
    # _codecs.encode with another codec, or bytes(n) allocating n bytes, is refused too.
    with pytest.raises(pickle.UnpicklingError):
        safe_loads(_global("_codecs", "encode") + b"(" + _str0("abc") + _str0("rot13") + b"tR.")
    with pytest.raises(pickle.UnpicklingError):
        safe_loads(_global("__builtin__", "bytes") + b"(I1000000000000\ntR.")
    assert safe_loads(_global("_codecs", "encode") + b"(" + _str0("\xff\xd8") + _str0("latin1") + b"tR.") == b"\xff\xd8"


def test_reader_never_calls_pickle_load(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("pickle.load/loads must not be used on .bin files")

    write_insightface_bin(tmp_path / "lfw.bin", [b"\xff\xd8a", b"\xff\xd8b"], [True])
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", None)  # only the subclass, created at import, remains
    assert read_insightface_bin(tmp_path / "lfw.bin").issame.tolist() == [True]
