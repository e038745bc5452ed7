"""The config sections only the attribute task reads: `loss` and `eval`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LossConfig:
    name: str = "bce"
    pos_weight: bool = False         # bce: weight positives by (1-p)/p from the training priors
    alpha: float = -1.0              # focal: negative disables alpha balancing
    gamma: float = 2.0               # focal
    gamma_neg: float = 4.0           # asl
    gamma_pos: float = 0.0           # asl
    clip: float = 0.05               # asl


@dataclass
class EvalConfig:
    threshold: float = 0.5           # the fixed decision threshold reported per epoch
