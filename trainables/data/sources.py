"""Where a trial's images come from: always Parquet shards, prepared once, in the driver.

`data.root` may be a prepared folder (local, or a pyarrow URI such as s3://… or file://…), used as is;
a raw dataset folder in its distributed layout, packed into the cache on first use; or empty, for the
task's synthetic demo set, which goes through the same packing. The driver resolves this once and
hands the prepared root to the trials, so workers only ever read shards.
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from trainables.data import cache_dir
from trainables.data.hints import existing_folder
from trainables.data.prepare import StderrProgress, demo_params, detect_format, is_prepared, prepare
from trainables.data.shards import load_metadata
from trainables.errors import UserError


def is_demo(source: str) -> bool:
    """Whether `source` (a `--data` value; empty: none) is a synthetic demo set: none given, a demo folder,
    or shards prepared from one, wherever they are (metadata.json records it). A sweep picks its settings
    by this, so the demo's shards in a bucket or a folder train exactly as the demo does."""
    if not source:
        return True
    if is_prepared(source):
        return bool(load_metadata(source).get("demo"))
    return "://" not in source and demo_params(Path(source).expanduser()) is not None


def prepared_root(source: str, formats: Sequence[str], *, what: str, cache: str = "", fmt: str = "",
                  demo: Callable[[Path], tuple[Path, bool]] | None = None,
                  say: Callable[[str], None] = lambda text: None) -> str:
    """The shards root of `source` (a raw folder or file, a prepared root, a URI; empty: `demo(cache)`
    builds the raw demo set and returns (its root, built now)). `formats` are the raw layouts the task
    can read, and `what` says what to pass instead, for the messages."""
    if source and is_prepared(source):
        found = load_metadata(source).get("format")
        if found not in formats:
            raise UserError(f"{source} holds prepared {found} data, but this task reads {', '.join(formats)}: "
                            f"pass {what}")
        return source
    if not source:
        started = time.time()
        raw, built = demo(cache_dir(cache))
        verb = f"built it in {time.time() - started:.0f}s" if built else "using the cached copy"
        say(f"No data given: the synthetic {formats[0]}-format demo set at {raw} ({verb}); pass {what} for real data.")
    else:
        if "://" in source:
            raise UserError(f"{source} is not a prepared dataset: run `python -m orchestrator prepare FORMAT "
                            f"--src LOCAL_FOLDER --out {source}` first")
        raw = existing_folder(source, what)
    raw = raw.resolve()
    if not fmt and len(formats) == 1:
        fmt = formats[0]  # its reader names the file that is missing or malformed
    elif not fmt:
        try:
            fmt = detect_format(raw)
        except UserError:
            raise UserError(f"{raw} is in none of the layouts this task reads ({', '.join(formats)}): pass {what}, "
                            "or name the layout with --set data.format=...") from None
    if fmt not in formats:
        raise UserError(f"{raw} is a {fmt} dataset, but this task reads {', '.join(formats)}: pass {what}")
    key = hashlib.sha1(f"{fmt}:{raw}".encode()).hexdigest()[:12]
    out = cache_dir(cache) / "prepared" / f"{fmt}-{raw.stem}-{key}"
    started = time.time()
    info = prepare(fmt, raw, str(out), progress=StderrProgress() if sys.stderr.isatty() else None)
    if not info.already_prepared:
        skipped = f", {len(info.skipped)} unreadable images skipped (listed in metadata.json)" if info.skipped else ""
        say(f"Packed {raw} into Parquet shards at {out} in {time.time() - started:.0f}s "
            f"({sum(info.counts.values())} images{skipped}); later runs reuse them.")
    return str(out)
