"""Gradient accumulation, frozen backbones and the EMA under DDP: 2 gloo processes (torch.multiprocessing), no Ray."""

from __future__ import annotations

import os
import socket

import timm
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel as DDP

from trainables.loop import InputPipe, TrainModule, train_one_epoch
from trainables.models.freeze import freeze

PIPE = InputPipe(torch.device("cpu"), (0.5,) * 3, (0.25,) * 3)
B = 4


def _rows(rank: int, n: int, size: int = 4):
    g = torch.Generator().manual_seed(100 + rank)
    images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    return images, torch.rand(n, 3, generator=g).round()


def _accumulation(rank: int) -> dict:
    """Per accum_steps: the gradients each optimizer step saw, the all-reduces DDP ran, the loss totals."""
    out = {}
    images, labels = _rows(rank, 3 * B)  # 3 batches of B: with accum_steps=2, a full update and a short one
    for accum, batch in ((2, B), (1, 2 * B)):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(48, 16), nn.Tanh(), nn.Linear(16, 3))
        module = DDP(TrainModule(model, nn.BCEWithLogitsLoss()))
        reduces = []
        module.register_comm_hook(None, lambda state, bucket: (reduces.append(1), default_hooks.allreduce_hook(state, bucket))[1])
        optimizer = torch.optim.SGD(module.parameters(), lr=0.0)  # the weights stay: each step's gradient compares
        grads = []
        optimizer.register_step_pre_hook(lambda opt, args, kwargs: grads.append([p.grad.clone() for p in model.parameters()]))
        data = [(images[i:i + batch], labels[i:i + batch]) for i in range(0, 3 * B, batch)]
        stats = train_one_epoch(module, data, optimizer, PIPE, accum_steps=accum, nan_check_every=1)
        out[accum] = {"grads": grads, "reduces": len(reduces), "updates": stats.updates,
                      "loss_sum": stats.loss_sum, "examples": stats.examples}
    return out


def _frozen(rank: int) -> dict:
    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=3)
    freeze(model, "backbone")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    module = DDP(TrainModule(model, nn.BCEWithLogitsLoss()))
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=0.05)
    images, labels = _rows(rank, 2 * B, size=16)
    for _ in range(2):  # a second epoch: DDP would fail here on parameters that got no gradient
        train_one_epoch(module, [(images[:B], labels[:B]), (images[B:], labels[B:])], optimizer, PIPE)
    after = model.state_dict()
    return {"changed": sorted(k for k in before if not torch.equal(before[k], after[k])), "fc": model.fc.weight.detach().clone()}


def _ema(rank: int) -> dict:
    """The EMA each rank evaluates, after training on its own rows (so its BatchNorm statistics differ)."""
    from types import SimpleNamespace

    from timm.utils import ModelEmaV3

    from trainables.loop import train_and_evaluate
    from trainables.tasks import EvalResult

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 2 * 2, 3))
    module = DDP(TrainModule(model, nn.BCEWithLogitsLoss()))
    ema = ModelEmaV3(model, decay=0.5)
    optimizer = torch.optim.AdamW(module.parameters(), lr=0.05)
    seen = {}
    task = SimpleNamespace(model=model, evaluate=lambda m, ctx: (seen.update({k: v.clone() for k, v in m.state_dict().items()}),
                                                                 EvalResult({}, lambda _: None))[1])
    images, labels = _rows(rank, 2 * B)
    train_and_evaluate(module, task, [(images[:B], labels[:B]), (images[B:], labels[B:])], optimizer, PIPE, None, ema=ema)
    return seen


def _worker(rank: int, world: int, port: int, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.save({"accumulation": _accumulation(rank), "frozen": _frozen(rank), "ema": _ema(rank)},
                   os.path.join(folder, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_accumulation_frozen_backbones_and_ema_under_ddp(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"{rank}.pt", weights_only=False) for rank in range(2)]

    for result in ranks:
        accumulated, whole = result["accumulation"][2], result["accumulation"][1]
        # accum_steps=2 with batch B: the gradients of batch 2B, the short last update's too (a mean of one batch)
        assert accumulated["updates"] == whole["updates"] == 2
        for mine, theirs in zip(accumulated["grads"], whole["grads"]):
            for a, b in zip(mine, theirs):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
        # DDP all-reduced once per optimizer step, not once per batch (no_sync on the accumulating one)
        assert accumulated["reduces"] == whole["reduces"] == 2
        assert accumulated["examples"] == whole["examples"] == 3 * B
        assert abs(accumulated["loss_sum"] - whole["loss_sum"]) < 1e-4
    # both ranks hold the same gradient (it was reduced), and it is not trivially zero
    for a, b in zip(ranks[0]["accumulation"][2]["grads"][0], ranks[1]["accumulation"][2]["grads"][0]):
        torch.testing.assert_close(a, b)
        assert a.abs().sum() > 0

    for result in ranks:  # DDP with a frozen backbone: trains the head only, and the ranks agree
        assert result["frozen"]["changed"] == ["fc.bias", "fc.weight"]
    torch.testing.assert_close(ranks[0]["frozen"]["fc"], ranks[1]["frozen"]["fc"], rtol=0, atol=0)

    # the EMA every rank evaluates is one and the same, BatchNorm statistics included
    assert ranks[0]["ema"].keys() == ranks[1]["ema"].keys()
    for key, value in ranks[0]["ema"].items():
        assert torch.equal(value, ranks[1]["ema"][key]), key
