"""Small random JPEGs for tests that need real image bytes in a real file format."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def jpeg(seed: int, size=(24, 24), quality: int = 80) -> bytes:
    """A deterministic noise image of `size` (width, height), JPEG-encoded."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
