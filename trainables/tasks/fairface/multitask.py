"""The FairFace multitask criterion: how model outputs are laid out, scored per task, and weighted.

Targets are always `labels.encode_multihead` rows (race, gender, age bin, age years; the years are
the true ones from seed 001's labels, else the bin's midpoint), so one dataset serves every
formulation. Two registries choose the behaviour by config name:

FORMULATIONS (`multitask.formulation`)
- `multihead`: columns [race 7 | gender 2 | age], each with its own loss. Race and gender are
  cross-entropy; age (`age.mode`) is 9-bin cross-entropy (`bins`) or one column regressing
  years / `age.scale` with L1 (`regression`, seed 001).
- `onehot18`: seed 000's 18 sigmoid columns (`ONEHOT18_COLUMNS`) with BCE. A task's loss is the
  BCE summed over its own columns divided by 18, so fixed weights of 1 give exactly seed 000's
  BCE averaged over all 18 columns. Age is always its 9 columns here: `age.mode` does not apply.

WEIGHTINGS (`multitask.weighting`), over the per-task losses L_i in TASKS order
- `fixed`: sum of w_i * L_i with `multitask.<task>_weight`.
- `uncertainty` (Kendall, Gal & Cipolla 2018): sum of exp(-s_i) * L_i + s_i with one learned
  s_i = log sigma_i^2 per task, initialised to 0. We use this form for every task, without the
  paper's 0.5 factors: those come from a Gaussian (L2) likelihood; our regression loss is L1,
  whose Laplace likelihood gives exactly exp(-s) * L + s with s = log b, and for cross-entropy the
  unhalved form is the common simplification. The s_i are parameters of this module, so DDP
  synchronises them (TrainModule wraps model and criterion together) and they are checkpointed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainables.errors import UserError
from trainables.registry import Registry
from trainables.tasks.fairface.labels import AGE_MIDPOINTS, CLASSES, ONEHOT18_COLUMNS, ONEHOT18_POSITION, TASKS, years_to_bin

_TARGET = {task: k for k, task in enumerate(TASKS)}  # column of each task's class index in the targets
_YEARS = len(TASKS)                                   # column of the age in years


@dataclass
class Decoded:
    """Predictions of a batch of raw outputs: a canonical class index per task, age in years, and
    the per-class scores (probabilities; `score/age_years` for regression) by column name."""
    indices: dict[str, np.ndarray]
    age_years: np.ndarray
    scores: dict[str, np.ndarray]


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _class_scores(task: str, probabilities: np.ndarray) -> dict[str, np.ndarray]:
    return {f"score/{task}/{name}": probabilities[:, k] for k, name in enumerate(CLASSES[task])}


AGE_MODES: Registry[type] = Registry("age mode", key="age.mode")


@AGE_MODES.register("bins")
class BinsAge:
    """Age as 9-way cross-entropy; its years are the predicted bin's midpoint."""
    width = len(CLASSES["age"])

    def __init__(self, scale: float):
        self.scale = scale

    def loss(self, out: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out, targets[:, _TARGET["age"]].long())

    def decode(self, out: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        idx = out.argmax(axis=1)
        return idx, AGE_MIDPOINTS[idx].astype(np.float64), _class_scores("age", _softmax(out))


@AGE_MODES.register("regression")
class RegressionAge:
    """Age as one output regressing years / scale with L1 (seed 001); bins come from the years."""
    width = 1

    def __init__(self, scale: float):
        self.scale = scale

    def loss(self, out: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.l1_loss(out[:, 0], targets[:, _YEARS] / self.scale)

    def decode(self, out: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        years = out[:, 0].astype(np.float64) * self.scale
        return years_to_bin(years), years, {"score/age_years": years}


FORMULATIONS: Registry[type[nn.Module]] = Registry("multitask formulation", key="multitask.formulation")


@FORMULATIONS.register("multihead")
class MultiHead(nn.Module):
    """Columns [race | gender | age]: cross-entropy for race and gender, the age mode's loss for age."""

    def __init__(self, age_mode: str, age_scale: float):
        super().__init__()
        self.age = AGE_MODES.get(age_mode)(age_scale)
        widths = {"race": len(CLASSES["race"]), "gender": len(CLASSES["gender"]), "age": self.age.width}
        starts = np.cumsum([0] + [widths[t] for t in TASKS])
        self.columns = {task: slice(int(starts[k]), int(starts[k + 1])) for k, task in enumerate(TASKS)}
        self.num_outputs = int(starts[-1])

    def task_losses(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        race, gender, age = (outputs[:, self.columns[t]] for t in TASKS)
        return torch.stack([F.cross_entropy(race, targets[:, _TARGET["race"]].long()),
                            F.cross_entropy(gender, targets[:, _TARGET["gender"]].long()),
                            self.age.loss(age, targets)])

    def decode(self, outputs: np.ndarray) -> Decoded:
        indices, scores = {}, {}
        for task in ("race", "gender"):
            logits = outputs[:, self.columns[task]]
            indices[task] = logits.argmax(axis=1)
            scores.update(_class_scores(task, _softmax(logits)))
        indices["age"], years, age_scores = self.age.decode(outputs[:, self.columns["age"]])
        return Decoded(indices, years, {**scores, **age_scores})


@FORMULATIONS.register("onehot18")
class OneHot18(nn.Module):
    """Seed 000's 18 sigmoid columns; each group decoded by its argmax."""
    num_outputs = len(ONEHOT18_COLUMNS)

    def __init__(self, age_mode: str, age_scale: float):
        super().__init__()
        AGE_MODES.get(age_mode)  # still a known name, even though unused here
        for task in TASKS:  # non-persistent: layout, not state; follows .to(device)
            self.register_buffer(f"position_{task}", torch.as_tensor(ONEHOT18_POSITION[task]), persistent=False)

    def targets18(self, targets: torch.Tensor) -> torch.Tensor:
        """(N, 18) one-hot targets in ONEHOT18_COLUMNS order, from encode_multihead rows."""
        out = torch.zeros(len(targets), self.num_outputs, device=targets.device)
        for task in TASKS:
            columns = getattr(self, f"position_{task}")[targets[:, _TARGET[task]].long()]
            out.scatter_(1, columns[:, None], 1.0)
        return out

    def task_losses(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        bce = F.binary_cross_entropy_with_logits(outputs, self.targets18(targets), reduction="none").mean(dim=0)
        return torch.stack([bce[getattr(self, f"position_{t}")].sum() for t in TASKS]) / self.num_outputs

    def decode(self, outputs: np.ndarray) -> Decoded:
        probabilities = 1.0 / (1.0 + np.exp(-outputs.astype(np.float64)))
        indices, scores = {}, {}
        for task in TASKS:
            group = probabilities[:, ONEHOT18_POSITION[task]]  # canonical class order
            indices[task] = group.argmax(axis=1)
            scores.update(_class_scores(task, group))
        return Decoded(indices, AGE_MIDPOINTS[indices["age"]].astype(np.float64), scores)


WEIGHTINGS: Registry[type[nn.Module]] = Registry("multitask weighting", key="multitask.weighting")


@WEIGHTINGS.register("fixed")
class FixedWeighting(nn.Module):
    def __init__(self, weights: list[float]):
        super().__init__()
        self.register_buffer("w", torch.tensor(weights, dtype=torch.float32), persistent=False)

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        return (self.w * losses).sum()

    def weights(self) -> torch.Tensor:
        return self.w


@WEIGHTINGS.register("uncertainty")
class UncertaintyWeighting(nn.Module):
    def __init__(self, weights: list[float]):  # fixed weights do not apply; the s_i are learned
        super().__init__()
        self.log_vars = nn.Parameter(torch.zeros(len(weights)))

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        return (torch.exp(-self.log_vars) * losses + self.log_vars).sum()

    def weights(self) -> torch.Tensor:
        return torch.exp(-self.log_vars)


class MultitaskLoss(nn.Module):
    """forward(outputs, encode_multihead targets) -> the weighted scalar loss."""

    def __init__(self, formulation: str = "multihead", weighting: str = "fixed", age_mode: str = "bins",
                 age_scale: float = 80.0, weights: tuple[float, float, float] = (1.0, 1.0, 1.0)):
        super().__init__()
        self.head = FORMULATIONS.get(formulation)(age_mode, age_scale)
        self.weighting = WEIGHTINGS.get(weighting)(list(weights))

    @property
    def num_outputs(self) -> int:
        return self.head.num_outputs

    def task_losses(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The unweighted loss of each task, in TASKS order."""
        return self.head.task_losses(outputs, targets)

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.weighting(self.task_losses(outputs, targets))

    def task_weights(self) -> dict[str, float]:
        """The current weight of each task (exp(-s_i) under uncertainty weighting)."""
        return dict(zip(TASKS, self.weighting.weights().detach().float().cpu().tolist()))

    def decode(self, outputs: np.ndarray) -> Decoded:
        return self.head.decode(np.asarray(outputs, dtype=np.float32))


def build_multitask_loss(cfg) -> MultitaskLoss:
    """The criterion of a TrainConfig's `multitask` and `age` sections."""
    mt = cfg.multitask
    if cfg.age.scale <= 0:
        raise UserError(f"age.scale must be positive (ages are divided by it), got {cfg.age.scale}")
    return MultitaskLoss(mt.formulation, mt.weighting, cfg.age.mode, cfg.age.scale,
                         (mt.race_weight, mt.gender_weight, mt.age_weight))
