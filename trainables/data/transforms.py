"""Augmentations of the seeds, chosen by name from `data.augment`.

Each works on one uint8 CHW tensor of the final input size (so augmentation is cheap and decode
happens once); normalisation to the backbone's mean/std happens per batch on the device.
"""

from __future__ import annotations

from typing import Callable

import torch
from torchvision.transforms import v2

from trainables.registry import Registry

Transform = Callable[[torch.Tensor], torch.Tensor]


def _cutout(size: int, length: int = 16) -> Transform:
    """One square hole of `length` px at a random centre, clipped at the border (seed 004)."""

    def apply(img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2:]
        cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
        y0, y1 = max(0, cy - length // 2), min(h, cy + length // 2)
        x0, x1 = max(0, cx - length // 2), min(w, cx + length // 2)
        img = img.clone()
        img[..., y0:y1, x0:x1] = 0
        return img

    return apply


def _half_face(p: float = 0.1) -> Transform:
    """With probability p, blank the left or right half of the aligned face (seed 004, for CFP-FP)."""

    def apply(img: torch.Tensor) -> torch.Tensor:
        if float(torch.rand(())) >= p:
            return img
        w = img.shape[-1]
        img = img.clone()
        if float(torch.rand(())) < 0.5:
            img[..., : w // 2] = 0
        else:
            img[..., w // 2 :] = 0
        return img

    return apply


def _resize_crop(size: int) -> Transform:
    """Seed 004's Resize(120) then RandomCrop(112), scaled to any input size."""
    return v2.Compose([v2.Resize(round(size * 120 / 112), antialias=True), v2.RandomCrop(size)])


# Each entry maps the input size to its transform.
AUGMENTATIONS: Registry[Callable[[int], Transform]] = Registry("augmentation", key="data.augment")
AUGMENTATIONS.register("hflip", lambda size: v2.RandomHorizontalFlip())
AUGMENTATIONS.register("color_jitter", lambda size: v2.ColorJitter(brightness=0.1, contrast=0.1))
AUGMENTATIONS.register("resize_crop", _resize_crop)
AUGMENTATIONS.register("cutout", lambda size: _cutout(size, length=max(1, round(16 * size / 112))))
AUGMENTATIONS.register("half_face", lambda size: _half_face(p=0.1))


def build_augment(names: list[str], size: int) -> Transform | None:
    """Compose the named augmentations in the given order; None when the list is empty."""
    if not names:
        return None
    return v2.Compose([AUGMENTATIONS.get(name)(size) for name in names])
