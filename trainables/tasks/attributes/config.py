"""The config sections only the attribute task reads: `loss` and `eval`."""

from __future__ import annotations

from dataclasses import dataclass

from trainables.config_fields import bounded, helped
from trainables.config_sections import EvalConfig as SharedEvalConfig


@dataclass
class LossConfig:
    name: str = helped("bce", "the attribute loss: bce | focal | asl (asymmetric loss)")
    pos_weight: bool = helped(False, "bce: weight each attribute's positives by (1-p)/p from the training priors")
    # torchvision's sigmoid_focal_loss
    alpha: float = bounded(-1.0, at_most=1, note="a negative value disables alpha balancing",
                           help="focal: positives weigh alpha and negatives 1 - alpha")
    gamma: float = bounded(2.0, at_least=0, help="focal: the focusing exponent; 0 is plain BCE")
    gamma_neg: float = bounded(4.0, at_least=0, help="asl: the focusing exponent of negatives")
    gamma_pos: float = bounded(0.0, at_least=0, help="asl: the focusing exponent of positives")
    clip: float = bounded(0.05, at_least=0, below=1, note="0 disables",
                          help="asl: shifts negatives' probabilities down by this margin")


@dataclass
class EvalConfig(SharedEvalConfig):
    threshold: float = bounded(0.5, above=0, below=1, help="the fixed decision threshold of the per-epoch "
                                                            "metrics (test/fixed/*)")
