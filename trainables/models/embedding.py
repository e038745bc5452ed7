"""A face-embedding network: any timm backbone followed by InsightFace's "E" embedding head.

The head is BN -> Dropout -> FC -> BN on the backbone's globally pooled features. The final BN
(without it the embeddings' scale drifts) is what InsightFace found to work best for margin losses.
Backbones that already end in an embedding layer (MobileFaceNet, whose timm `num_classes` is the
embedding size) mark themselves with `produces_embedding = True` and are used as they are, so this
module never branches on a model name.
"""

from __future__ import annotations

import timm
import torch
from torch import nn

import trainables.models.mobilefacenet  # noqa: F401  (registers mobilefacenet into timm)
from trainables.errors import UserError


class EmbeddingNet(nn.Module):
    """`forward(x) -> (N, embedding_size)` un-normalised embeddings (the margin heads normalise)."""

    def __init__(self, backbone_name: str, embedding_size: int = 128, drop_rate: float = 0.0,
                 **backbone_kwargs):
        super().__init__()
        if not timm.is_model(backbone_name):
            raise UserError(f"unknown backbone {backbone_name!r}: see timm.list_models() for the known names")
        if embedding_size <= 0:
            raise UserError(f"embedding_size must be positive, got {embedding_size}")
        self.embedding_size = embedding_size
        # num_classes=0 is timm's "no classifier, globally pooled features" for every backbone.
        self.backbone = timm.create_model(backbone_name, num_classes=0, **backbone_kwargs)
        if getattr(self.backbone, "produces_embedding", False):
            self.backbone.reset_classifier(embedding_size)
            self.backbone.drop_rate = drop_rate
            self.head: nn.Module = nn.Identity()
        else:
            features = self.backbone.num_features
            self.head = nn.Sequential(
                nn.BatchNorm1d(features),
                nn.Dropout(drop_rate),
                nn.Linear(features, embedding_size),
                nn.BatchNorm1d(embedding_size),
            )

    @property
    def pretrained_cfg(self) -> dict:
        """The backbone's cfg, so `timm.data.resolve_data_config({}, model=net)` sees its mean/std."""
        return self.backbone.pretrained_cfg

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's last feature map (what Grad-CAM weighs), before any pooling."""
        return self.backbone.forward_features(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """The embedding from `forward_features`' map: forward(x) == forward_head(forward_features(x)), as timm's
        backbones split their own forward."""
        return self.head(self.backbone.forward_head(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))
