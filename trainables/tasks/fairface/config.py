"""The config sections only the FairFace task reads: `multitask` and `age`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class MultitaskConfig:
    """How race, gender and age are learned together (seeds 000 and 001)."""
    formulation: str = "multihead"   # multihead: one head per task | onehot18: one 18-way sigmoid output (seed 000)
    weighting: str = "fixed"         # fixed: the weights below | uncertainty: learned log-variances (Kendall et al.)
    race_weight: float = 1.0
    gender_weight: float = 1.0
    age_weight: float = 1.0


@dataclass
class AgeConfig:
    mode: str = "bins"               # bins: 9-way cross-entropy | regression: L1 on years / scale (seed 001's
                                     # true years where its labels are used, else the bin's midpoint)
    scale: float = 80.0              # seed 001 divides ages by 80
