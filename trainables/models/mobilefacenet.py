"""MobileFaceNet (Chen et al. 2018, "MobileFaceNets"), registered into timm as `mobilefacenet`.

The network follows the paper's Table 1 on a 112x112 aligned face: conv3x3/2 (64), depthwise
conv3x3 (64), five inverted-residual bottleneck stages, conv1x1 (512), a linear global depthwise
conv 7x7 (GDC) instead of global average pooling, and a linear conv1x1 to the embedding followed by
BatchNorm. Non-linearities are PReLU, as in the paper. At embedding 128 it has about 1.0M parameters
(the paper reports 0.99M).

For this model `num_classes` means the EMBEDDING SIZE (default 128): the "classifier" is the final
linear 1x1 conv + BatchNorm that produces the face embedding, so `timm.create_model("mobilefacenet",
num_classes=256)` gives 256-d embeddings. `num_classes=0` keeps timm's meaning of "no head" and
returns the 512-d GDC features (`num_features`). `drop_rate` is dropout on the GDC features before
the embedding layer. No pretrained weights exist; pass `pretrained=False` (timm's default).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

# The paper's Table 1 bottleneck stages: (expansion t, output channels c, repeats n, first stride s).
# Expansion multiplies the stage's input channels, as in MobileNetV2.
BOTTLENECK_STAGES: tuple[tuple[int, int, int, int], ...] = (
    (2, 64, 5, 2),
    (4, 128, 1, 2),
    (2, 128, 6, 1),
    (4, 128, 1, 2),
    (2, 128, 2, 1),
)


class ConvBN(nn.Sequential):
    """Conv (no bias: BN follows) -> BN -> optional PReLU; `act=False` is the paper's "linear" layer."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, groups: int = 1,
                 act: bool = True, padding: int | None = None):
        padding = kernel // 2 if padding is None else padding
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, kernel, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        if act:
            layers.append(nn.PReLU(out_ch))
        super().__init__(*layers)


class Bottleneck(nn.Module):
    """MobileNetV2 inverted residual: expand 1x1 -> depthwise 3x3 -> linear project 1x1."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expansion: int):
        super().__init__()
        hidden = in_ch * expansion
        self.use_residual = stride == 1 and in_ch == out_ch
        self.block = nn.Sequential(
            ConvBN(in_ch, hidden, 1),
            ConvBN(hidden, hidden, 3, stride, groups=hidden),
            ConvBN(hidden, out_ch, 1, act=False),  # linear bottleneck: no non-linearity on the narrow output
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_residual else out


class MobileFaceNet(nn.Module):
    """MobileFaceNet; `num_classes` is the embedding size (see the module docstring)."""

    # Tells EmbeddingNet that this backbone ends in its own embedding layer and needs no extra head.
    produces_embedding = True

    def __init__(self, num_classes: int = 128, in_chans: int = 3, drop_rate: float = 0.0,
                 stages: tuple[tuple[int, int, int, int], ...] = BOTTLENECK_STAGES, **_ignored):
        # timm passes kwargs such as global_pool or pretrained_cfg to every model; this model has no
        # pooling choice (GDC is part of the architecture), so they are accepted and ignored.
        super().__init__()
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.num_features = self.head_hidden_size = 512
        self.stem = nn.Sequential(
            ConvBN(in_chans, 64, 3, 2),
            ConvBN(64, 64, 3, 1, groups=64),
        )
        blocks: list[nn.Module] = []
        in_ch = 64
        for t, c, n, s in stages:
            for i in range(n):
                blocks.append(Bottleneck(in_ch, c, s if i == 0 else 1, t))
                in_ch = c
        self.blocks = nn.Sequential(*blocks)
        self.conv_head = ConvBN(in_ch, self.num_features, 1)
        # GDC: a linear 7x7 depthwise conv weighs each spatial position separately, which the paper
        # shows matters for faces (the centre of an aligned face is more informative than the border).
        self.gdc = ConvBN(self.num_features, self.num_features, 7, groups=self.num_features, act=False,
                          padding=0)
        self.embedding = self._make_embedding(num_classes)

    def _make_embedding(self, size: int) -> nn.Module:
        if size <= 0:
            return nn.Identity()
        # Linear 1x1 conv then BatchNorm on the flattened embedding, as in the paper and InsightFace.
        return nn.Sequential(nn.Conv2d(self.num_features, size, 1, bias=False), nn.Flatten(1),
                             nn.BatchNorm1d(size))

    def get_classifier(self) -> nn.Module:
        return self.embedding

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A fresh embedding layer of size `num_classes` (0: none, return the 512-d GDC features)."""
        self.num_classes = num_classes
        self.embedding = self._make_embedding(num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_head(self.blocks(self.stem(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if x.shape[-2:] != (7, 7):  # otherwise a confusing BatchNorm size error further on
            raise ValueError(f"MobileFaceNet needs 112x112 input (a 7x7 map before GDC), got a "
                             f"{tuple(x.shape[-2:])} map")
        x = self.gdc(x)
        if self.drop_rate > 0.0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        if pre_logits or self.num_classes <= 0:
            return x.flatten(1)
        return self.embedding(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _cfg(**kwargs) -> dict:
    # num_classes is the embedding size; mean/std 0.5 map [0, 1] pixels to [-1, 1], as seed 004 does.
    return {
        "url": "", "num_classes": 128, "input_size": (3, 112, 112), "pool_size": (7, 7),
        "crop_pct": 1.0, "interpolation": "bilinear", "fixed_input_size": True,  # the 7x7 GDC needs a 7x7 map: 112x112 input
        "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5),
        "first_conv": "stem.0.0", "classifier": "embedding",
        **kwargs,
    }


default_cfgs = generate_default_cfgs({"mobilefacenet": _cfg()})


@register_model
def mobilefacenet(pretrained: bool = False, **kwargs) -> MobileFaceNet:
    """MobileFaceNet at 112x112; `num_classes` (default 128) is the embedding size."""
    return build_model_with_cfg(MobileFaceNet, "mobilefacenet", pretrained, **kwargs)
