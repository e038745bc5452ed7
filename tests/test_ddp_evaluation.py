"""Two gloo processes: after a DDP epoch, every rank evaluates exactly the weights and buffers rank 0
checkpoints (DDP broadcasts buffers only at the start of a forward, so BatchNorm statistics drift
apart over an epoch of different data per rank)."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from trainables.loop import InputPipe, TrainModule, train_and_evaluate
from trainables.tasks import EvalResult, TaskSetup


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)  # the same initial weights on both ranks, as DDP requires
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                              nn.Flatten(), nn.Linear(4, 2))
        criterion = nn.CrossEntropyLoss()
        module = DistributedDataParallel(TrainModule(model, criterion))
        generator = torch.Generator().manual_seed(100 + rank)  # each rank sees other images
        batches = [(torch.randint(40 * rank, 40 * rank + 200, (8, 3, 12, 12), generator=generator, dtype=torch.uint8),
                    torch.randint(0, 2, (8,), generator=generator)) for _ in range(4)]
        evaluated = {}

        def evaluate(m: nn.Module, ctx) -> EvalResult:
            evaluated.update({k: v.detach().clone() for k, v in m.state_dict().items()})
            return EvalResult({}, lambda folder: None)

        task = TaskSetup(model=model, criterion=criterion, evaluate=evaluate, train_loader=lambda *a: batches,
                         train_rows=lambda world: 32)
        optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
        pipe = InputPipe(torch.device("cpu"), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
        train_and_evaluate(module, task, batches, optimizer, pipe, eval_ctx=None)
        gathered = [None] * world
        dist.all_gather_object(gathered, evaluated)
        if rank == 0:
            checkpointed = model.state_dict()  # what rank 0's worker saves as model.pt
            worst = max(float((state[k].float() - checkpointed[k].float()).abs().max())
                        for state in gathered for k in checkpointed)
            torch.save({"worst": worst, "keys": sorted(checkpointed)}, out)
    finally:
        dist.destroy_process_group()


def test_every_rank_evaluates_rank_zeros_checkpoint(tmp_path):
    out = str(tmp_path / "result.pt")
    mp.start_processes(_rank, args=(2, _free_port(), out), nprocs=2, start_method="spawn")
    result = torch.load(out)
    assert "1.running_mean" in result["keys"]  # BatchNorm buffers are compared too
    assert result["worst"] == 0.0
