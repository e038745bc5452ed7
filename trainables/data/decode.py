"""Decoding encoded images into (3, size, size) uint8 tensors, as every loader and `predict` does.

Shards hold the original JPEG (or PNG) bytes; decoding happens on the worker, at the trial's size.
`decode_shard_image` is the decoder of training and evaluation, and so also of `predict`: a label there
must be the label the trial's evaluation gave the same image. No decoder is given an image whose
header claims more pixels than PIL's decompression-bomb limit (`Image.MAX_IMAGE_PIXELS`): a 200-byte
file claiming 20000x20000 would otherwise allocate gigabytes. Such an image, like any undecodable
one, is a one-line `UserError` naming it.
"""

from __future__ import annotations

import functools
import io
import struct
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from trainables.errors import UserError


def _center_square(w: int, h: int) -> tuple[int, int, int, int]:
    s = min(w, h)
    return (w - s) // 2, (h - s) // 2, (w + s) // 2, (h + s) // 2


def too_many_pixels(width: int, height: int) -> str:
    """Why an image of this size is refused ("" when it is not): PIL's decompression-bomb limit."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit and width * height > limit:
        return (f"its header claims {width}x{height} pixels, over the {limit:,}-pixel decompression-bomb limit "
                f"(no face image is that large)")
    return ""


# JPEG start-of-frame markers (baseline, progressive, lossless ...); C4, C8 and CC are not frames.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's frame header, walking the marker segments before it; None when
    `data` is not a JPEG or its markers are damaged (a decoder then says what is wrong)."""
    if data[:3] != b"\xff\xd8\xff":
        return None
    at, end = 2, len(data)
    while at + 4 <= end:
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in _SOF:
            if at + 9 > end:
                return None
            height, width = struct.unpack_from(">HH", data, at + 5)
            return width, height
        if marker == 0xDA:  # start of scan before any frame header
            return None
        at += 2 + struct.unpack_from(">H", data, at + 2)[0]
    return None


DROP_IT = "re-copy the file or drop it from the labels"  # what a dataset's owner does about a bad image


def decode_image(source: bytes | Path, size: int, name: str = "", square: bool = False,
                 fix: str = DROP_IT) -> torch.Tensor:
    """PIL's decoder: JPEG draft mode lets libjpeg decode at 1/2, 1/4 or 1/8 scale when the target is
    well below the stored size. With `square`, the centred square is kept (CelebA's 178x218 faces keep
    their proportions); otherwise the image is resized as it is."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below, in one line
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
                problem = too_many_pixels(*img.size)
                if problem:
                    raise ValueError(problem)
                img.draft("RGB", (size, size))
                img = img.convert("RGB")
                if square and img.size[0] != img.size[1]:
                    img = img.crop(_center_square(*img.size))
                img = img.resize((size, size), Image.BILINEAR, reducing_gap=2.0)
    except Exception as err:  # PIL raises many types for bad data (OSError, SyntaxError, struct.error ...)
        reason = "not a readable image" if "BytesIO" in str(err) else str(err).rstrip(".")  # PIL names its buffer
        raise UserError(f"cannot decode image {name or source}: {reason}; {fix}") from None
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)


@functools.cache
def _torchvision_decoder():
    """torchvision's decode_image and RGB mode, or None (imported on first use: it takes seconds)."""
    try:
        from torchvision.io import ImageReadMode, decode_image as tv_decode
    except ImportError:  # a torchvision without its image decoders
        return None
    return tv_decode, ImageReadMode.RGB


def decode_shard_image(data: bytes, size: int, name: str = "", square: bool = False,
                       fix: str = DROP_IT) -> torch.Tensor:
    """About twice as fast as `decode_image` at 112 px from CelebA's 178x218: torchvision's
    libjpeg-turbo decoder and torch's uint8 antialiased bilinear resize (within one grey level of
    PIL's). An image already `size` px square (112x112 faces at 112) skips the resize, which is the
    identity there and cost a fifth of the decode. Only JPEGs whose frame header was read and found
    within the pixel limit go to torchvision: it allocates whatever a header claims, and its PNG
    decoder crashes the process (SIGSEGV) on a truncated PNG. Everything else, and every JPEG
    torchvision refuses, goes to PIL, which says what is wrong in one line.

    PIL's draft mode (libjpeg decoding at 1/2 or 1/4 scale) does not pay here: on the demo sets it
    was at most a few percent faster from 224x224 to 64 px and a quarter slower from 178x218 to 64,
    since entropy decoding, which a reduced scale does not shorten, is most of a JPEG's decode."""
    decoder = _torchvision_decoder()
    dims = jpeg_size(data)
    if dims is not None and too_many_pixels(*dims):
        raise UserError(f"cannot decode image {name or 'bytes'}: {too_many_pixels(*dims)}; {fix}")
    if decoder is not None and dims is not None:
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
    return decode_image(data, size, name, square, fix)
