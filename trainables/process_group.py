"""The torch process group of a trial's workers, with torch imported only where it runs: on the workers.

Ray Train's own `TorchConfig` lives in a module that imports torch at its top. The trial's Tune actor
builds the trainer with it, and Train's controller unpickles it, so both processes imported torch (about
1.5 s each on 2 cores, one after the other, before any worker starts) though neither touches a tensor.
`ProcessGroup` is the same configuration in a module that imports no torch: its controller side asks
worker 0 for an address and tells every worker to join, and each worker runs Ray's own torch functions
(`ray.train.torch.config`), imported there. What a worker ends up with is what `TorchConfig` gives it:
MASTER_ADDR/PORT, RANK, LOCAL_RANK, WORLD_SIZE and the rest, `init_process_group` with the same backend,
URL and timeout, its CUDA device set, and the group destroyed at the end.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import ray
from ray._private import ray_constants
from ray.exceptions import GetTimeoutError
from ray.train._internal.utils import get_address_and_port
from ray.train.backend import Backend, BackendConfig
from ray.train.constants import DEFAULT_TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S, TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S
from ray.train.v2._internal.util import TrainingFramework

logger = logging.getLogger(__name__)


@dataclass
class ProcessGroup(BackendConfig):
    """What `ray.train.torch.TorchConfig` configures (backend, timeout), torch-free. The workers find each
    other through MASTER_ADDR and MASTER_PORT (init method "env", TorchConfig's default and our only one)."""

    backend: str = "gloo"
    timeout_s: int = 1800

    @property
    def backend_cls(self):
        return _Backend

    @property
    def train_func_context(self):
        return _DeviceContext

    @property
    def framework(self):
        return TrainingFramework.TORCH  # what Ray's dashboard shows for the run

    def to_dict(self) -> dict:
        return {"backend": self.backend, "init_method": "env", "timeout_s": self.timeout_s}


class _Backend(Backend):
    share_cuda_visible_devices: bool = True  # as Ray's torch backend: NCCL needs every local GPU visible

    def on_start(self, worker_group, backend_config: ProcessGroup):
        address, port = worker_group.execute_single(0, get_address_and_port)
        size = len(worker_group)
        ray.get([worker_group.execute_single_async(rank, _join, address=address, port=port, world_rank=rank,
                                                   world_size=size, backend=backend_config.backend,
                                                   timeout_s=backend_config.timeout_s)
                 for rank in range(size)])

    def on_shutdown(self, worker_group, backend_config: ProcessGroup):
        futures = worker_group.execute_async(_leave, destroy=len(worker_group) > 1)
        timeout_s = ray_constants.env_integer(TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S,
                                              DEFAULT_TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S)
        try:
            ray.get(futures, timeout=timeout_s)
        except GetTimeoutError:  # as Ray's: a worker stuck in a collective must not hold the trial's end
            logger.warning("the torch process group did not shut down within %s s", timeout_s)


def _join(address: str, port: int, world_rank: int, world_size: int, backend: str, timeout_s: int) -> None:
    """On a worker: rank 0's address, torch's distributed environment variables, then the process group, as
    Ray's torch backend sets them up."""
    from ray.train.torch import config

    os.environ["MASTER_ADDR"] = address
    os.environ["MASTER_PORT"] = str(port)
    config._set_torch_distributed_env_vars()
    config._setup_torch_process_group(backend=backend, world_rank=world_rank, world_size=world_size,
                                      init_method="env://", timeout_s=timeout_s)


def _leave(destroy: bool) -> None:
    from ray.train.torch.config import _shutdown_torch

    _shutdown_torch(destroy_process_group=destroy)


class _DeviceContext:
    """Around the training function on a worker: Ray's own context, which sets the worker's CUDA device."""

    def __enter__(self):
        from ray.train.torch.config import TorchConfigContextManager

        self._inner = TorchConfigContextManager()
        return self._inner.__enter__()

    def __exit__(self, *exc):
        return self._inner.__exit__(*exc)
