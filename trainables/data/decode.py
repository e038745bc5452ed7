"""Decoding encoded images into (3, size, size) uint8 tensors, as every loader and `predict` does.

Shards hold the original JPEG (or PNG) bytes; decoding happens on the worker, at the trial's size.
`decode_shard_image` is the decoder of training and evaluation, and so also of `predict`: a label there
must be the label the trial's evaluation gave the same image.
"""

from __future__ import annotations

import functools
import io
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from trainables.errors import UserError


def _center_square(w: int, h: int) -> tuple[int, int, int, int]:
    s = min(w, h)
    return (w - s) // 2, (h - s) // 2, (w + s) // 2, (h + s) // 2


def decode_image(source: bytes | Path, size: int, name: str = "", square: bool = False) -> torch.Tensor:
    """PIL's decoder: JPEG draft mode lets libjpeg decode at 1/2, 1/4 or 1/8 scale when the target is
    well below the stored size. With `square`, the centred square is kept (CelebA's 178x218 faces keep
    their proportions); otherwise the image is resized as it is."""
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
            img.draft("RGB", (size, size))
            img = img.convert("RGB")
            if square and img.size[0] != img.size[1]:
                img = img.crop(_center_square(*img.size))
            img = img.resize((size, size), Image.BILINEAR, reducing_gap=2.0)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        reason = "not a readable image" if "BytesIO" in str(err) else str(err)  # PIL names its buffer object
        raise UserError(f"cannot decode image {name or source}: {reason}; re-copy the file or drop it from the labels") from None
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)


@functools.cache
def _torchvision_decoder():
    """torchvision's decode_image and RGB mode, or None (imported on first use: it takes seconds)."""
    try:
        from torchvision.io import ImageReadMode, decode_image as tv_decode
    except ImportError:  # a torchvision without its image decoders
        return None
    return tv_decode, ImageReadMode.RGB


def decode_shard_image(data: bytes, size: int, name: str = "", square: bool = False) -> torch.Tensor:
    """About twice as fast as `decode_image` at 112 px from CelebA's 178x218: torchvision's
    libjpeg-turbo decoder and torch's uint8 antialiased bilinear resize (within one grey level of
    PIL's). An image already `size` px square (112x112 faces at 112) skips the resize, which is the
    identity there and cost a fifth of the decode. When torchvision's decoders are gone, or refuse
    an image, PIL does the work.

    PIL's draft mode (libjpeg decoding at 1/2 or 1/4 scale) does not pay here: on the demo sets it
    was at most a few percent faster from 224x224 to 64 px and a quarter slower from 178x218 to 64,
    since entropy decoding, which a reduced scale does not shorten, is most of a JPEG's decode."""
    decoder = _torchvision_decoder()
    if decoder is not None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                img = decoder[0](torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=decoder[1])
            if square and img.shape[1] != img.shape[2]:
                left, top, right, bottom = _center_square(img.shape[2], img.shape[1])
                img = img[:, top:bottom, left:right]
            if img.shape[1] == img.shape[2] == size:
                return img  # channels-last strides, as PIL's decode_image returns
            return torch.nn.functional.interpolate(img[None], size=(size, size), mode="bilinear",
                                                   align_corners=False, antialias=True)[0]
        except RuntimeError:
            pass
    return decode_image(data, size, name, square)
