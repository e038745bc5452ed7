"""Build a folder once, atomically: the demo sets' cache entries.

The folder is written into a temporary sibling and renamed into place with a completion marker,
so an interrupted build or two racing processes (trials on one node, the driver) never leave a
half-written folder behind the final name.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile
from typing import Callable

MARKER = "DEMO_COMPLETE.json"


def build_once(final: pathlib.Path, write: Callable[[pathlib.Path], object], params: dict) -> tuple[pathlib.Path, bool]:
    """`write(folder)` fills a fresh folder; returns (final, built now). `params` go into the marker."""
    final = pathlib.Path(final)
    if (final / MARKER).is_file():
        return final, False
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        write(tmp)
        (tmp / MARKER).write_text(json.dumps(params) + "\n")
        if final.exists() and not (final / MARKER).is_file():
            shutil.rmtree(final, ignore_errors=True)  # a stale folder without the marker
        try:
            os.replace(tmp, final)
        except OSError:
            if (final / MARKER).is_file():  # another process finished first: use its folder
                return final, False
            raise
        return final, True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
