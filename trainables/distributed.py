"""Reductions across DDP ranks with plain torch.distributed (a no-op in a single process).

Ray's TuneReportCallback forwards rank 0's metrics only, so every reported number must already
be reduced over all ranks; these helpers do that.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(values: list[float]) -> list[float]:
    if not _active():
        return list(values)
    backend_device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor(values, dtype=torch.float64, device=backend_device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def all_reduce_max(value: float) -> float:
    if not _active():
        return value
    backend_device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([value], dtype=torch.float64, device=backend_device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def all_gather_rows(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Concatenate each array's rows from every rank, in rank order (shares are contiguous)."""
    if not _active():
        return arrays
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, arrays)
    return tuple(
        np.concatenate([parts[i] for parts in gathered if len(parts[i])]) for i in range(len(arrays))
    )


def all_gather_objects(value) -> list:
    """`value` of every rank, in rank order (picklable values)."""
    if not _active():
        return [value]
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def broadcast_from_rank0(module: torch.nn.Module) -> None:
    """Every parameter and buffer of `module` set to rank 0's values, in place."""
    if not _active():
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            if tensor.is_contiguous():
                dist.broadcast(tensor.data, src=0)
            else:  # channels_last weights: the collectives take contiguous tensors only
                flat = tensor.data.contiguous()
                dist.broadcast(flat, src=0)
                tensor.data.copy_(flat)


def barrier() -> None:
    if _active():
        dist.barrier()
