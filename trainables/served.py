"""The model as it is served: an image tensor in, the task's scores out, in one torch module.

An MLflow LoggedModel is saved as a traced graph (torch.export), so whatever turns pixels into
scores must be inside the module: the normalisation `InputPipe` applies in evaluation, the backbone,
and the task's own activations (`TaskOutputs.score_groups`: which output columns are a softmax, a
sigmoid or left as they are). The input is RGB (N, 3, H, W) float32 in [0, 1], as `predict` decodes
an image (uint8 / 255); the output columns are labels.json's `outputs`, in that order.
"""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = {"softmax": lambda x: torch.softmax(x, dim=1), "sigmoid": torch.sigmoid, "raw": lambda x: x}


class ServedModel(nn.Module):
    def __init__(self, model: nn.Module, mean, std, groups: list[tuple[int, int, str]]):
        super().__init__()
        self.model = model
        shape = (1, -1, 1, 1)  # as InputPipe: (x * 255 - mean * 255) / (std * 255), so scores match predict's
        self.register_buffer("mean255", torch.tensor(mean, dtype=torch.float32).view(shape) * 255)
        self.register_buffer("std255", torch.tensor(std, dtype=torch.float32).view(shape) * 255)
        unknown = sorted({kind for _, _, kind in groups} - set(ACTIVATIONS))
        if unknown:
            raise ValueError(f"unknown score activation(s) {unknown}; known: {', '.join(ACTIVATIONS)}")
        self.groups = [(int(start), int(stop), kind) for start, stop, kind in groups]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return activate(self.model((images * 255 - self.mean255) / self.std255), self.groups)


def activate(raw: torch.Tensor, groups: list[tuple[int, int, str]]) -> torch.Tensor:
    """The task's scores from raw outputs (N, K): each group's columns through its activation; [] keeps them raw."""
    if not groups:
        return raw
    return torch.cat([ACTIVATIONS[kind](raw[:, start:stop]) for start, stop, kind in groups], dim=1)
