"""Reader and writer of InsightFace's verification `.bin` files (lfw.bin, cfp_fp.bin, agedb_30.bin).

Each is a pickle of `(bins, issame_list)`: 2N JPEG byte strings, pair i being bins[2i], bins[2i+1].
A pickle runs code when loaded, so these files are read with `SafeUnpickler`, which resolves no
global except the three that a list of bytes needs: the released files (pickled by Python 2 with
protocol 2) hold only strings, lists, tuples and bools and need none; a copy re-pickled by
Python 3 with protocol 0-2 spells each bytes object as `_codecs.encode(text, 'latin1')`, and an
empty one as `bytes()`; protocol 3+ needs none again. Each allowed global is replaced by a wrapper
that checks its arguments, so even those can do nothing but build bytes. Any other global (os.system,
builtins.eval, subprocess, numpy ...) stops the load with a `UserError` before anything it names runs.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np

from trainables.data.formats.rejects import Rejects
from trainables.data.formats.verification_pairs import VerificationPairs, contiguous_folds
from trainables.data.plans import Plan, SplitPlan, pair_split, register_format
from trainables.errors import UserError

_LATIN1 = ("latin1", "latin-1", "iso-8859-1", "iso8859-1")


def _encode(text, encoding="utf-8"):
    """`_codecs.encode` limited to what pickle protocols 0-2 emit for bytes: (str, 'latin1')."""
    if type(text) is not str or encoding not in _LATIN1:
        raise pickle.UnpicklingError(f"_codecs.encode called with {type(text).__name__}, {encoding!r}")
    return text.encode("latin1")


def _byte_type(kind):
    def make(*args):
        # bytes(n) would allocate n bytes: only () and (bytes-like or latin-1 text) are allowed.
        if not args:
            return kind()
        if len(args) == 1 and isinstance(args[0], (bytes, bytearray)):
            return kind(args[0])
        if len(args) == 2 and type(args[0]) is str and args[1] in _LATIN1:
            return kind(args[0], "latin1")
        raise pickle.UnpicklingError(f"{kind.__name__} called with {[type(a).__name__ for a in args]}")

    return make


_ALLOWED = {
    ("_codecs", "encode"): _encode,
    ("builtins", "bytes"): _byte_type(bytes),
    ("__builtin__", "bytes"): _byte_type(bytes),
    ("builtins", "bytearray"): _byte_type(bytearray),
    ("__builtin__", "bytearray"): _byte_type(bytearray),
}


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle asked for a global that is not on the allow-list."""


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that builds only containers, bytes, strings, numbers, bools and None."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise RefusedGlobal(f"{module}.{name}") from None

    def persistent_load(self, pid):
        raise RefusedGlobal(f"persistent id {str(pid)[:40]!r}")


def safe_loads(data: bytes):
    """Unpickle `data` with `SafeUnpickler`; Python 2 `str` objects come back as bytes."""
    return SafeUnpickler(io.BytesIO(data), encoding="bytes").load()


def read_insightface_bin(path: str | os.PathLike) -> VerificationPairs:
    """Read one .bin file into `VerificationPairs` (images as bytes, 10 contiguous folds)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"verification file {path} not found; pass an InsightFace .bin file (e.g. lfw.bin)")
    try:
        obj = safe_loads(path.read_bytes())
    except RefusedGlobal as err:
        raise UserError(f"{path} is not a plain InsightFace .bin: it asks to load {err}, which could run "
                        f"code, so it was refused and nothing in it ran; use the original file") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
            UnicodeDecodeError, MemoryError, RecursionError, OverflowError) as err:
        raise UserError(f"{path} is not a readable .bin pickle ({type(err).__name__}: {str(err)[:100]}); "
                        f"re-copy the file") from None
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2):
        raise UserError(f"{path}: expected a pickled (bins, issame_list) pair, found {type(obj).__name__}; "
                        f"use an InsightFace verification .bin")
    bins, issame = obj
    if not isinstance(bins, (list, tuple)) or not isinstance(issame, (list, tuple)):
        raise UserError(f"{path}: bins and issame_list must be lists, found {type(bins).__name__} and "
                        f"{type(issame).__name__}; use an InsightFace verification .bin")
    if len(bins) != 2 * len(issame):
        raise UserError(f"{path}: {len(bins)} images for {len(issame)} pairs (expected {2 * len(issame)}); "
                        f"the file is damaged, re-copy it")
    bad = next((i for i, b in enumerate(bins) if not isinstance(b, (bytes, bytearray))), None)
    if bad is not None:
        raise UserError(f"{path}: image {bad} is a {type(bins[bad]).__name__}, not JPEG bytes; "
                        f"use an InsightFace verification .bin")
    # Only a bool or an int may be compared or shown: a list nested 200,000 deep has no repr.
    bad = next((i for i, s in enumerate(issame) if type(s) not in (bool, int, float) or s not in (0, 1)), None)
    if bad is not None:
        value = issame[bad]
        shown = repr(value)[:20] if type(value) in (int, float) else f"a {type(value).__name__}"
        raise UserError(f"{path}: issame_list[{bad}] is {shown}, not a bool; the file is damaged, re-copy it")
    n = len(issame)
    return VerificationPairs(
        left=[bytes(b) for b in bins[0::2]], right=[bytes(b) for b in bins[1::2]],
        issame=np.asarray(issame, dtype=bool), fold=contiguous_folds(n), name=path.stem,
        left_names=[f"{path.name}#{2 * i}" for i in range(n)],
        right_names=[f"{path.name}#{2 * i + 1}" for i in range(n)],
    )


def is_insightface_bin_root(root) -> bool:
    """An InsightFace verification file (lfw.bin), or a folder holding some."""
    root = Path(root)
    return root.suffix == ".bin" and root.is_file() or root.is_dir() and any(root.glob("*.bin"))


@register_format("insightface_bin", detect=is_insightface_bin_root, order=60)
def plan(src: Path, rejects: Rejects) -> Plan:
    """The layout's splits as `prepare` packs them."""
    paths = [src] if src.is_file() else sorted(src.glob("*.bin"))
    if not paths:
        raise UserError(f"no .bin files in {src}; pass an InsightFace verification file (lfw.bin) or its folder")
    splits = bin_splits(paths, rejects)
    if not splits:  # each was rejected: its own message says what is wrong with it
        raise UserError(rejects.rows[0]["reason"])
    return Plan(splits, [], paths)


def bin_splits(paths: list[Path], rejects: Rejects) -> dict[str, SplitPlan]:
    """One pair split per readable .bin; an unreadable one (damaged, or a pickle asking to run code)
    goes to `rejects` as a whole, so one bad verification file does not stop the others."""
    splits = {}
    for path in paths:
        try:
            splits[path.stem] = pair_split(read_insightface_bin(path))
        except UserError as err:
            rejects.add(str(err), file=path.name, split=path.stem)
    return splits
