"""The config sections only the attribute task reads: `loss` and `eval`."""

from __future__ import annotations

from dataclasses import dataclass

from trainables.config import bounded


@dataclass
class LossConfig:
    name: str = "bce"
    pos_weight: bool = False         # bce: weight positives by (1-p)/p from the training priors
    # focal: positives weigh alpha and negatives 1 - alpha (torchvision's sigmoid_focal_loss)
    alpha: float = bounded(-1.0, at_most=1, note="a negative value disables alpha balancing")
    gamma: float = bounded(2.0, at_least=0)      # focal: 0 is plain BCE
    gamma_neg: float = bounded(4.0, at_least=0)  # asl
    gamma_pos: float = bounded(0.0, at_least=0)  # asl
    clip: float = bounded(0.05, at_least=0, below=1, note="0 disables")  # asl: shifts negatives' probabilities down


@dataclass
class EvalConfig:
    threshold: float = bounded(0.5, above=0, below=1)  # the fixed decision threshold reported per epoch
