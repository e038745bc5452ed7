"""Where a trial is in its training, and when it evaluates: once per epoch, or every `eval.every_steps`
optimizer steps (seed 004 evaluates and saves "every 5000 total iterations" of an epoch of 5.8 million images).

The position travels in every checkpoint, so a trial resumed from one taken mid-epoch reads that epoch's
remaining batches only: each of the epoch's batches is trained on exactly once.

What a report says about the position (`reported`), and the step its MLflow metrics are logged at
(`mlflow_step`): per epoch, `epoch` as today; every N steps, also `step` (the optimizer step, so curves line up
across trials and the MLflow step is it) and `evaluation` (the count ASHA and patience go by), with `epoch`
the fraction of epochs done.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass
class Position:
    epoch: int = 0          # epochs finished: the index of the epoch being trained
    batches: int = 0        # batches of that epoch already trained on
    updates: int = 0        # optimizer steps so far (the scheduler counts these)
    evaluations: int = 0    # evaluations reported so far

    def advance(self, updates: int, batches, epochs: int) -> None:
        """After training `updates` steps on `batches` (an EpochBatches of the current epoch)."""
        self.updates += updates
        if batches.exhausted:
            self.epoch, self.batches = self.epoch + 1, 0
        else:
            self.batches = batches.taken

    def evaluation_due(self, every: int, stepped: int, epochs: int) -> bool:
        """Per epoch (`every` 0): at each epoch's end. Every N steps: at each multiple of N, and at the end of
        training, so the last steps are evaluated and kept too."""
        epoch_ended = self.batches == 0
        if not every:
            return epoch_ended
        return (stepped > 0 and self.updates % every == 0) or (epoch_ended and self.epoch >= epochs)

    def reported(self, every: int, batches_per_epoch: int) -> dict[str, float]:
        if not every:
            return {"epoch": self.epoch}
        return {"epoch": round(self.epoch + self.batches / batches_per_epoch, 4), "step": self.updates,
                "evaluation": self.evaluations}

    def mlflow_step(self, every: int) -> int:
        return self.updates if every else self.epoch

    def state(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    @classmethod
    def load(cls, meta: dict, steps_per_epoch: int) -> "Position":
        """From a checkpoint's metadata; one without a position was taken at the end of epoch `epoch`."""
        if meta.get("position"):
            return cls(**meta["position"])
        epoch = int(meta["epoch"])
        return cls(epoch=epoch, updates=epoch * steps_per_epoch, evaluations=epoch)


@dataclass
class Segment:
    """The training between two evaluations, from one or more `train_one_epoch` calls' EpochStats."""
    loss_sum: float = 0.0
    examples: int = 0
    seconds: float = 0.0
    first_step_time: float | None = None

    def add(self, stats) -> None:
        self.loss_sum += stats.loss_sum
        self.examples += stats.examples
        self.seconds += stats.seconds
        if self.first_step_time is None:
            self.first_step_time = stats.first_step_time
