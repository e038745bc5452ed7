"""Where a trial's images come from: the real dataset at `data.root`, or the embedded demo set.

The demo set is deterministic, so every node can build its own copy into its cache folder (the
driver builds it first, so trials on the driver's node find it ready).
"""

from __future__ import annotations

import os
from pathlib import Path

from trainables.config import DataConfig
from trainables.data.celeba import CelebAIndex, read_celeba
from trainables.data.synthetic_celeba import ensure_demo_celeba
from trainables.errors import UserError

DEMO_SEED = 0


def cache_dir(cfg: DataConfig) -> Path:
    """`data.cache_dir`, else $FACE_ORCHESTRATOR_CACHE, else ~/.cache/face-orchestrator."""
    chosen = cfg.cache_dir or os.environ.get("FACE_ORCHESTRATOR_CACHE") or "~/.cache/face-orchestrator"
    return Path(chosen).expanduser()


def demo_root(cfg: DataConfig) -> tuple[Path, bool]:
    """Build the demo set if needed; returns (its root, whether it was built just now)."""
    return ensure_demo_celeba(cache_dir(cfg), num_images=cfg.demo_images, seed=DEMO_SEED)


def dataset_root(cfg: DataConfig) -> Path:
    if not cfg.root:
        return demo_root(cfg)[0]
    root = Path(cfg.root).expanduser()
    if not root.exists():
        raise UserError(f"data folder not found: {root}: pass --data with the CelebA root (the folder holding list_attr_celeba.txt)")
    return root


def load_index(cfg: DataConfig) -> CelebAIndex:
    if cfg.format != "celeba":
        raise UserError(f"unknown data.format '{cfg.format}'; known: celeba")
    return read_celeba(dataset_root(cfg))
