"""The seeds' training recipes (issue 22), each trained in-process on tiny models: timm's weight decay
groups, frozen backbones, gradient accumulation, an EMA of the weights and patience."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from trainables.config import OptimConfig, TrainConfig
from trainables.errors import UserError
from trainables.loop import InputPipe, TrainModule, train_one_epoch
from trainables.models.freeze import freeze
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


def _images(n=32, seed=0, size=16, outputs=3):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    labels = (images.float().mean(dim=(1, 2, 3)) > 127).float().unsqueeze(1).repeat(1, outputs)
    return images, labels


def _batches(n=32, batch=8, seed=0, **kwargs):
    images, labels = _images(n, seed, **kwargs)
    return [(images[i:i + batch], labels[i:i + batch]) for i in range(0, n, batch)]


PIPE = InputPipe(torch.device("cpu"), (0.5,) * 3, (0.25,) * 3)


def _train(model, freeze_value="none", epochs=2, **optim):
    trainable = freeze(model, freeze_value)
    module = TrainModule(model, nn.BCEWithLogitsLoss())
    optimizer, scheduler = build_optimizer(OptimConfig(lr=0.05, epochs=epochs, **optim), module, 4)
    for epoch in range(epochs):
        train_one_epoch(module, _batches(seed=epoch), optimizer, PIPE, scheduler, epoch * 4)
    return trainable, optimizer


def test_freeze_backbone_keeps_every_backbone_tensor_and_trains_the_head():
    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainable, optimizer = _train(model, "backbone")
    assert trainable == sum(p.numel() for p in model.fc.parameters())
    after = model.state_dict()
    backbone = [k for k in before if not k.startswith("fc.")]
    assert any("running_mean" in k for k in backbone)  # BN buffers are among what is compared
    assert [k for k in backbone if not torch.equal(before[k], after[k])] == []
    assert not torch.equal(before["fc.weight"], after["fc.weight"])
    assert not model.bn1.training and model.fc.training  # also after train_one_epoch's model.train()
    stateful = {id(p) for p in optimizer.state}
    assert stateful == {id(model.fc.weight), id(model.fc.bias)}  # frozen parameters have no optimizer state
    assert all(p.grad is None for n, p in model.named_parameters() if not n.startswith("fc."))


def test_freeze_stages_keeps_the_stem_and_the_first_stages_only():
    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _train(model, "stages:1")
    after = model.state_dict()
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"layer2", "layer3", "layer4", "fc"}


def test_bad_freeze_values_are_one_line_errors_naming_the_key():
    with pytest.raises(UserError, match=r"model\.freeze='stages:x'.*--set model\.freeze=stages:2"):
        TrainConfig.from_dict({"model.freeze": "stages:x"})
    with pytest.raises(UserError, match=r"ResNet has 4 stages.*stages:4"):
        freeze(timm.create_model("resnet18", num_classes=3), "stages:5")


def test_accumulation_counts_optimizer_steps_and_bad_values_are_one_line_errors():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 3))
    module = TrainModule(model, nn.BCEWithLogitsLoss())
    optimizer, scheduler = build_optimizer(OptimConfig(lr=0.05, epochs=2), module, 2)  # a cosine over 4 updates
    stats = train_one_epoch(module, _batches(n=40, batch=8), optimizer, PIPE, scheduler, accum_steps=3)
    assert stats.updates == 2 and stats.examples == 40  # 5 batches: one update of 3, a short one of 2
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.025)  # half-way: it counted 2 updates, not 5 batches
    with pytest.raises(UserError, match=r"optim\.accum_steps=-1 is out of range.*--set optim\.accum_steps=1"):
        TrainConfig.from_dict({"optim.accum_steps": -1})
