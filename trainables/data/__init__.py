"""Dataset readers of the real file formats, the synthetic demo sets, and the loaders."""

import os
from pathlib import Path


def cache_dir(cache: str = "") -> Path:
    """`data.cache_dir`, else $FACE_ORCHESTRATOR_CACHE, else ~/.cache/face-orchestrator (here, where it costs no
    import of torch: the driver's MLflow store keeps its template there too)."""
    chosen = cache or os.environ.get("FACE_ORCHESTRATOR_CACHE") or "~/.cache/face-orchestrator"
    return Path(chosen).expanduser()
