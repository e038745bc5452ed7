"""The config sections only the FairFace task reads: `multitask` and `age`."""

from __future__ import annotations

from dataclasses import dataclass

from trainables.config_fields import bounded, helped
from trainables.errors import UserError


@dataclass
class MultitaskConfig:
    """How race, gender and age are learned together (seeds 000 and 001)."""
    formulation: str = helped("multihead", "multihead: one head per task | onehot18: one 18-way sigmoid output "
                                           "(seed 000)")
    weighting: str = helped("fixed", "fixed: the weights below | uncertainty: learned log-variances (Kendall et al.)")
    race_weight: float = bounded(1.0, at_least=0, help="weight of the race loss (0 leaves race untrained)")
    gender_weight: float = bounded(1.0, at_least=0, help="weight of the gender loss (0 leaves gender untrained)")
    age_weight: float = bounded(1.0, at_least=0, help="weight of the age loss (0 leaves age untrained)")

    def check_relations(self, prefix: str) -> None:
        if self.weighting == "fixed" and not (self.race_weight or self.gender_weight or self.age_weight):
            raise UserError(f"{prefix}race_weight, gender_weight and age_weight are all 0, so nothing would be "
                            f"learned: give one of them a positive weight (e.g. --set {prefix}race_weight=1)")


@dataclass
class AgeConfig:
    # regression uses seed 001's true years where its labels are used, else the bin's midpoint
    mode: str = helped("bins", "bins: 9-way cross-entropy | regression: L1 on years / age.scale (seed 001)")
    scale: float = bounded(80.0, above=0, help="regression: ages are divided by this (seed 001 uses 80)")
