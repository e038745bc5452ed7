"""Where a trial's images come from: always Parquet shards, prepared once.

`data.root` may be a prepared folder (local or a pyarrow URI such as s3://…), used as is; or a raw
dataset folder in its distributed layout, packed into the cache on first use; or empty, for the
task's synthetic demo set, which goes through the same packing. The driver resolves this once and
hands the prepared root to the trials, so workers only ever read shards.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path
from typing import Callable

from trainables.config import DataConfig
from trainables.data.prepare import StderrProgress, is_prepared, prepare
from trainables.errors import UserError


def cache_dir(cfg: DataConfig) -> Path:
    """`data.cache_dir`, else $FACE_ORCHESTRATOR_CACHE, else ~/.cache/face-orchestrator."""
    chosen = cfg.cache_dir or os.environ.get("FACE_ORCHESTRATOR_CACHE") or "~/.cache/face-orchestrator"
    return Path(chosen).expanduser()


def prepared_root(cfg: DataConfig, fmt: str, build_demo: Callable[[Path], tuple[Path, bool]],
                  real_hint: str, say: Callable[[str], None] = lambda text: None) -> str:
    """The shards root a task reads. `build_demo(cache) -> (raw demo root, built now)` makes the demo
    set; `real_hint` tells the user how to point at real data instead."""
    if cfg.root and is_prepared(cfg.root):
        return cfg.root
    if not cfg.root:
        started = time.time()
        raw, built = build_demo(cache_dir(cfg))
        verb = f"built it in {time.time() - started:.0f}s" if built else "using the cached copy"
        say(f"No --data given: the synthetic {fmt} demo set at {raw} ({verb}); {real_hint}.")
    else:
        raw = Path(cfg.root).expanduser()
        if "://" in cfg.root:
            raise UserError(f"{cfg.root} is not a prepared dataset: run `python -m orchestrator prepare {fmt} "
                            f"--src LOCAL_FOLDER --out {cfg.root}` first")
        if not raw.exists():
            raise UserError(f"data folder not found: {raw}: {real_hint}")
    raw = raw.resolve()
    key = hashlib.sha1(str(raw).encode()).hexdigest()[:12]
    out = cache_dir(cfg) / "prepared" / f"{fmt}-{raw.name}-{key}"
    started = time.time()
    info = prepare(fmt, raw, str(out), progress=StderrProgress() if sys.stderr.isatty() else None)
    if not info.already_prepared:
        skipped = f", {len(info.skipped)} unreadable images skipped (listed in metadata.json)" if info.skipped else ""
        say(f"Packed {raw} into Parquet shards at {out} in {time.time() - started:.0f}s "
            f"({sum(info.counts.values())} images{skipped}); later runs reuse them.")
    return str(out)
