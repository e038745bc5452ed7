"""The Task interface and its registry: what a trial learns and how it is scored.

A task is one folder under `trainables/tasks/` that registers one `Task`. It declares the config
sections it reads, how its data is prepared (always into Parquet shards, in the driver) and read (on
every worker, from those shards), its model and criterion, its evaluation (already reduced over all
ranks), the files it writes beside each checkpoint, its report columns, its plots and leaderboard, and
what `export` and `predict` show for it. The orchestrator asks the task for each of these and names
none of them.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from torch import nn

from trainables.config_sections import TASK_SECTIONS
from trainables.errors import UserError
from trainables.registry import Registry

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import torch

    from trainables.config import TrainConfig
    from trainables.loop import InputPipe

Say = Callable[[str], None]                  # one line for the user (the driver prints it)
Reader = Callable[[str], "bytes | None"]     # a checkpoint file's bytes by relative name, None if absent


@dataclass
class EvalContext:
    pipe: "InputPipe"
    rank: int
    world: int
    batch_size: int
    loader_workers: int


@dataclass
class EvalResult:
    metrics: dict[str, float]
    write_files: Callable[[Path], None]  # called on rank 0 with the checkpoint folder


@dataclass
class TaskSetup:
    """What a worker runs: `train_loader(epoch, rank, world, batch, workers)` yields this rank's
    batches, exactly `train_rows(world)` rows per rank per epoch."""
    model: nn.Module                  # what is checkpointed, exported and used for prediction
    criterion: nn.Module              # forward(model outputs, targets) -> scalar loss
    evaluate: Callable[[nn.Module, EvalContext], EvalResult]
    train_loader: Callable[[int, int, int, int, int], Iterable]
    train_rows: Callable[[int], int]
    param_groups: list[dict] = field(default_factory=list)  # extra optimizer groups (e.g. centers)
    num_outputs: int = 0


@dataclass
class DataSummary:
    """What the driver learns once, before any trial."""
    root: str                                # the prepared shards the trials train on
    baseline: dict[str, float]               # logged on the sweep's parent run, e.g. {"val/majority_accuracy": 0.81}
    train_rows: int                          # training rows per epoch, over all ranks
    settings: dict = field(default_factory=dict)  # keys fixed for every trial: the prepared roots ({"data.root": ...})
    splits: dict[str, int] = field(default_factory=dict)  # rows per split, for the record


@dataclass(frozen=True)
class Decisions:
    """The named rules by which a task's model turns scores into decisions (the attribute task's: a threshold
    per attribute for each calibration policy). They are one JSON file `{name: rule}`, written beside each
    checkpoint and copied into an export; `predict --decision NAME` and `serve` decide by one of them, and
    `describe` applies it (the rules are `ExportedModel.rules`)."""
    file: str                        # the JSON file {name: rule, ...}; one of the task's export_files
    preferred: tuple[str, ...] = ()  # the default: the first of these the file has

    def rules(self, read: Reader) -> dict:
        """{name: rule} from the file `read` gives; {} where there is none."""
        data = read(self.file)
        if data is None:
            return {}
        try:
            rules = json.loads(data)
        except ValueError:
            rules = None
        if not isinstance(rules, dict):
            raise UserError(f"cannot read {self.file} (not a JSON mapping of decision names to rules): "
                            "export the model again with `orchestrator export`")
        return rules

    def default(self, names) -> str:
        """The first preferred name among `names`; "" when none is."""
        return next((name for name in self.preferred if name in names), "")

    def choose(self, names, requested: str | None, where: str) -> str:
        """`requested` when `names` (what `where` holds) has it, the default when none is requested; a bad
        name is one line listing the valid ones."""
        if not requested:
            return self.default(names)
        if requested not in names:
            raise UserError(f"unknown decision '{requested}': {where} has {', '.join(names) or 'none'}; "
                            f"pass --decision one of them")
        return requested


@dataclass(frozen=True)
class TaskOutputs:
    """What `export` and `predict` need of a task whose model outputs labels."""
    card_metrics: Callable[[str], list[str]]                      # headline metrics, given a decision ("" if none)
    output_names: Callable[["TrainConfig", Reader], dict]         # labels.json: {"outputs": [...], ...}
    describe: Callable[["np.ndarray", object, str], "pd.DataFrame"]  # (raw outputs, model, decision) -> columns
    captions: Callable[["pd.Series"], list[str]]                  # the lines under a face in a grid
    export_files: tuple[str, ...] = ()                            # checkpoint files copied into the export
    # (the decisions the export has, the default one) -> the model card's lines about them
    card_lines: Callable[[list[str], str], list[str]] = lambda decisions, decision: []
    decisions: Decisions | None = None                            # None: its outputs need no named decision
    # the served model's activations (trainables/served.py): (config, labels.json) -> [(start, stop, kind)]
    # over the output columns, kind softmax | sigmoid | raw; [] serves the raw outputs
    score_groups: Callable[["TrainConfig", dict], list[tuple[int, int, str]]] = lambda cfg, labels: []
    # what `serve` shows for one image: (its row of `describe`, {output name: served score}) -> sections
    # [{"title": str, "items": [{"name": str, "score": float, "decision": str}]}]; the page draws them as they are
    present: Callable[["pd.Series", dict], list[dict]] = lambda row, scores: [
        {"title": "outputs", "items": [{"name": n, "score": s, "decision": ""} for n, s in scores.items()]}]
    # the model an export's weights load into: (config, saved state) -> the eval-mode model; None: the config's
    # timm backbone with a classifier as wide as the saved one
    load_model: Callable[["TrainConfig", dict], nn.Module] | None = None
    # a task whose served photos come in pairs: (the exported model, raw outputs of photo A, of photo B) -> what
    # the pair shows, {"similarity": float, "same": bool, ..., "sections": [...] as `present`}; `serve` then takes
    # exactly two photos per request. None: each photo is shown on its own
    compare: Callable[[object, "np.ndarray", "np.ndarray"], dict] | None = None
    # Grad-CAM of a pair (`inference.pair_grad_cam`): (the exported model, preprocessed photos, the other photo's raw
    # outputs, held fixed) -> (per photo the score `compare` decides by, differentiable; the feature maps it comes
    # from, [(map, mirrored)], mirrored where the map is of the photo flipped left to right). None: no Grad-CAM
    explain_pair: Callable[[nn.Module, "torch.Tensor", "torch.Tensor"], tuple["torch.Tensor", list]] | None = None


@dataclass(frozen=True)
class PolicySearch:
    """A sweep over decision policies on a finished trial's stored files, without its model."""
    files: tuple[str, ...]                         # what the trial's MLflow run must hold
    load: Callable[[Path], object]                 # those files, downloaded into a folder -> the stored data
    evaluate: Callable[[object, dict], dict]       # (stored data, a trial's config) -> its metrics
    inert: Callable[[dict], tuple[str, ...]] = lambda config: ()  # a policy's keys that do not act on it (left
    #                                              out of its name, as config_keys.key_acts does for a trial's)


def _no_check(cfg: "TrainConfig") -> None:
    return None


@dataclass(frozen=True)
class Task:
    name: str
    title: str                                              # what it learns, in a line
    metric: str                                             # the usual objective (export's default)
    sections: dict[str, type]                               # its own config sections, beyond model/optim/data
    prepare: Callable[["TrainConfig", Say], DataSummary]    # once, in the driver
    build: Callable[["TrainConfig"], TaskSetup]             # on every worker
    check: Callable[["TrainConfig"], None] = _no_check      # in the driver, per config: its own names and values
    trial_files: tuple[str, ...] = ()                       # files beside the checkpoint that go to MLflow
    report_columns: tuple[str, ...] = ()                    # headline metrics of the final table
    render: Callable[[Path, Path], list[str]] | None = None  # driver: plots from a trial's files -> names written
    # driver: the sweep's table from its trials' (description, last metrics, config) -> the files written
    leaderboard: Callable[[list[tuple[str, dict, dict]], Path], list[str]] | None = None
    outputs: TaskOutputs | None = None                      # None: `export`/`predict` do not apply
    policy: PolicySearch | None = None                      # None: no policy sweep on its trials


def _load_all() -> None:
    """Import every task folder once; each registers itself."""
    for module in pkgutil.iter_modules(__path__):
        if module.ispkg:
            importlib.import_module(f"{__name__}.{module.name}")


def import_task(name: str) -> None:
    """Import the folder of task `name` alone, when there is one: a worker needs one task only, so a
    trial's start does not pay for the others' imports (any other name loads them all, for the
    registry's did-you-mean)."""
    if isinstance(name, str) and name.isidentifier() and (Path(__path__[0]) / name / "__init__.py").is_file():
        importlib.import_module(f"{__name__}.{name}")


TASKS: Registry[Task] = Registry("task", key="task", loader=_load_all, find=import_task)


def register_task(task: Task) -> Task:
    """Register `task`, and its config sections with trainables/config_sections.py, which reads them from there."""
    TASK_SECTIONS.register(task.name, dict(task.sections))
    return TASKS.register(task.name, task)


def get_task(name: str) -> Task:
    """The task `name` (its folder imported alone)."""
    return TASKS.get(name)
