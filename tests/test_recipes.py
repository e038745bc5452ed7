"""The seeds' training recipes (issue 22), each trained in-process on tiny models: timm's weight decay
groups, frozen backbones, gradient accumulation, an EMA of the weights and patience."""

from __future__ import annotations

import timm
import torch
from torch import nn

from trainables.config import OptimConfig
from trainables.loop import TrainModule
from trainables.optim import build_optimizer


def _tiny_vit(num_classes: int = 3) -> nn.Module:
    return timm.create_model("vit_tiny_patch16_224", img_size=16, patch_size=8, depth=1, num_heads=1,
                             embed_dim=16, num_classes=num_classes)


def _decay_of(optimizer) -> dict[int, float]:
    return {id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}


def test_a_vits_position_embedding_norms_and_biases_are_not_decayed():
    model = _tiny_vit()
    module = TrainModule(model, nn.BCEWithLogitsLoss())
    optimizer, _ = build_optimizer(OptimConfig(weight_decay=0.05), module, 4)
    decay = _decay_of(optimizer)
    named = dict(model.named_parameters())
    assert decay[id(named["pos_embed"])] == 0.0 and decay[id(named["cls_token"])] == 0.0
    assert decay[id(named["norm.weight"])] == 0.0 and decay[id(named["head.bias"])] == 0.0
    assert decay[id(named["head.weight"])] == 0.05 and decay[id(named["patch_embed.proj.weight"])] == 0.05
    assert len(decay) == len(named)  # every parameter in exactly one group

    # And the optimizer acts on it: with no gradient, AdamW's decoupled decay alone moves a decayed tensor.
    before = {n: p.detach().clone() for n, p in named.items()}
    for p in named.values():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    assert torch.equal(named["pos_embed"], before["pos_embed"])
    assert not torch.equal(named["head.weight"], before["head.weight"])


def test_extra_groups_keep_their_own_settings():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    centers = nn.Parameter(torch.zeros(3, 4))
    module = TrainModule(model, nn.BCEWithLogitsLoss())
    module.criterion = nn.Module()
    module.criterion.centers = centers
    optimizer, _ = build_optimizer(OptimConfig(), module, 4, [{"params": [centers], "lr": 0.5, "weight_decay": 0.0}])
    owners = [g for g in optimizer.param_groups if any(p is centers for p in g["params"])]
    assert len(owners) == 1 and owners[0]["lr"] == 0.5
