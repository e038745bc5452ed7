"""Ray Train's calls as `train_fn_per_worker` makes them, stood in for in one process (rank 0 of world 1):
its reports and checkpoints are recorded, and a checkpoint folder can be handed to it to resume from."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import torch


class FakeSession:
    """What `train_fn_per_worker` uses of `ray.train` for one rank-0, world-1 worker."""

    def __init__(self, keep, checkpoint_folder=None):
        self.keep, self.checkpoint_folder, self.reports = keep, checkpoint_folder, []

    def install(self, monkeypatch):
        import ray.train
        import ray.train.torch

        context = SimpleNamespace(get_world_rank=lambda: 0, get_world_size=lambda: 1)
        monkeypatch.setattr(ray.train, "get_context", lambda: context)
        monkeypatch.setattr(ray.train, "get_checkpoint", self.get_checkpoint)
        monkeypatch.setattr(ray.train, "report", self.report)
        monkeypatch.setattr(ray.train.torch, "prepare_model", lambda model: model)
        monkeypatch.setattr(ray.train.torch, "get_device", lambda: torch.device("cpu"))

    def get_checkpoint(self):
        import ray.train

        return ray.train.Checkpoint.from_directory(str(self.checkpoint_folder)) if self.checkpoint_folder else None

    def report(self, metrics, checkpoint=None):
        kept = None
        if checkpoint is not None:  # the temporary folder goes away after report(): keep a copy
            kept = self.keep / f"checkpoint_{len(self.reports)}"
            shutil.copytree(checkpoint.path, kept)
        self.reports.append((dict(metrics), kept))
