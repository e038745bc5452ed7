"""The config sections only the attribute task reads: `loss` and `eval`."""

from __future__ import annotations

from dataclasses import dataclass

from trainables.config_fields import bounded, helped
from trainables.config_sections import EvalConfig as SharedEvalConfig


FOCAL, ASL = {"name": ("focal",)}, {"name": ("asl",)}  # the loss that reads a field (config_keys.key_acts)


@dataclass
class LossConfig:
    name: str = helped("bce", "the attribute loss: bce | focal | asl (asymmetric loss)")
    pos_weight: bool = helped(False, "bce: weight each attribute's positives by (1-p)/p from the training priors",
                              only_with={"name": ("bce",)})
    # torchvision's sigmoid_focal_loss
    alpha: float = bounded(-1.0, at_most=1, note="a negative value disables alpha balancing",
                           help="focal: positives weigh alpha and negatives 1 - alpha", only_with=FOCAL)
    gamma: float = bounded(2.0, at_least=0, help="focal: the focusing exponent; 0 is plain BCE", only_with=FOCAL)
    gamma_neg: float = bounded(4.0, at_least=0, help="asl: the focusing exponent of negatives", only_with=ASL)
    gamma_pos: float = bounded(0.0, at_least=0, help="asl: the focusing exponent of positives", only_with=ASL)
    clip: float = bounded(0.05, at_least=0, below=1, note="0 disables",
                          help="asl: shifts negatives' probabilities down by this margin", only_with=ASL)


@dataclass
class EvalConfig(SharedEvalConfig):
    threshold: float = bounded(0.5, above=0, below=1, help="the fixed decision threshold of the per-epoch "
                                                            "metrics (test/fixed/*)")
