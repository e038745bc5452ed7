"""The FairFace task (seeds 000 and 001): race, gender and age learned together, scored overall and within groups.

What it learns: a timm backbone whose outputs are either one head per task (`multitask.formulation=
multihead`, age as 9 bins or regressed in years by `age.mode`) or seed 000's 18 one-hot sigmoid outputs
(`onehot18`), under fixed or learned (`multitask.weighting=uncertainty`) task weights; see multitask.py.

How it is scored: FairFace has train and val only, so every epoch is scored on val, each example
counted once over all ranks:
- `val/<task>/accuracy`, `val/<task>/balanced_accuracy` for race, gender and age (in regression mode
  the predicted years are mapped back to bins first);
- `val/age/mae_years`: against the true years where the labels give them (seed 001's
  `fairface-labels-*.csv`, stored as the shards' `age_years`), else against the true bin's midpoint
  (the official release gives bins, not ages); age accuracies use the bins, derived from the years;
- group accuracies, `val/<task>/worst_group_accuracy` and `val/<task>/group_gap` (group_metrics.py);
- `val/mean_task_accuracy` (the mean of the three accuracies, the sweep objective), `val/loss` (the
  weighted objective), `val/<task>/loss` (unweighted) and `train/weight/<task>`.
Rank 0 writes `per_group.csv`, `predictions/val.parquet` and `group_accuracy.png` beside the
checkpoint, enough to recompute every number without the model.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import mean_absolute_error

from trainables import artifacts
from trainables.config import TrainConfig
from trainables.data.demo.fairface import ensure_demo_fairface
from trainables.data.formats.fairface import GENDERS, RACES
from trainables.data.hints import DATA_HINTS
from trainables.data.loaders import EvalCaches, TrainStream, eval_loader, open_split
from trainables.data.shards import ShardSplit, load_metadata
from trainables.data.sources import prepared_root
from trainables.data.transforms import build_augment
from trainables.distributed import all_gather_rows
from trainables.errors import UserError
from trainables.loop import predict
from trainables.models import build_model
from trainables.tasks import DataSummary, EvalContext, EvalResult, Say, Task, TaskSetup, register_task
from trainables.tasks.fairface.config import AgeConfig, MultitaskConfig
from trainables.tasks.fairface.group_metrics import group_metrics, group_table, plot_group_accuracy, task_accuracies
from trainables.tasks.fairface.labels import AGE_MIDPOINTS, CLASSES, TASKS, decode_multihead, names
from trainables.tasks.fairface.multitask import Decoded, MultitaskLoss, build_multitask_loss
from trainables.tasks.fairface.outputs import FAIRFACE_OUTPUTS

DEMO_SEED = 0
FORMATS = ("fairface",)
WHAT = DATA_HINTS["fairface"]
GROUP_NAMES = {"race": RACES, "gender": GENDERS}
LABEL_COLUMNS = list(TASKS)  # the shards' class-index columns, in the order the targets start with
YEARS_COLUMN = "age_years"   # float32 years, in shards prepared from seed 001's labels only


class FairFaceTargets:
    """Shard label rows -> the multi-head targets: race, gender and age-bin indices, then the age in
    years. Rows are LABEL_COLUMNS, plus YEARS_COLUMN when the shards have it: those true years are
    used as they are; without them a bin stands for its midpoint. Picklable, for DataLoader workers."""

    def __call__(self, labels: np.ndarray) -> np.ndarray:
        years = labels[:, 3] if labels.shape[1] > len(LABEL_COLUMNS) else AGE_MIDPOINTS[labels[:, 2].astype(np.int64)]
        return np.column_stack([labels[:, :3], years]).astype(np.float32)


def label_columns(root: str) -> list[str]:
    """The shard columns the targets are made of: LABEL_COLUMNS, and YEARS_COLUMN where stored."""
    return LABEL_COLUMNS + ([YEARS_COLUMN] if YEARS_COLUMN in load_metadata(root).get("label_columns", []) else [])


def shards(cfg: TrainConfig, say: Say = lambda text: None) -> str:
    demo = lambda cache: ensure_demo_fairface(cache, num_images=cfg.data.demo_images, seed=DEMO_SEED)  # noqa: E731
    root = prepared_root(cfg.data.root, FORMATS, what=WHAT, cache=cfg.data.cache_dir, fmt=cfg.data.format,
                         demo=demo, say=say)
    stored = load_metadata(root).get("class_names", {})
    for task in TASKS:  # the shards' class ids must mean what our heads mean
        if list(stored.get(task, CLASSES[task])) != list(CLASSES[task]):
            raise UserError(f"{root} stores {task} classes {stored[task]}, not FairFace's {list(CLASSES[task])}: "
                            "prepare the dataset again with this version")
    return root


def splits_of(root: str) -> dict[str, ShardSplit]:
    columns = label_columns(root)
    return {s: open_split(root, s, columns, f"the {s} label CSV") for s in ("train", "val")}


def prepare(cfg: TrainConfig, say: Say) -> DataSummary:
    """Driver side: check the multitask names, pack the data once, and the majority baseline on val."""
    build_multitask_loss(cfg)
    root = shards(cfg, say)
    splits = splits_of(root)
    val = FairFaceTargets()(splits["val"].labels().to_numpy())
    rows = min(splits["train"].num_rows, cfg.data.max_train_images or splits["train"].num_rows)
    return DataSummary(root, majority_baseline(val), rows, {"data.root": root},
                       {s: split.num_rows for s, split in splits.items()})


def majority_baseline(val: np.ndarray) -> dict[str, float]:
    """Accuracy on val of always predicting each task's most frequent val class, and their mean; and
    the MAE in years of always predicting the most frequent age bin's midpoint, against the targets'
    years (the true years where the labels give them)."""
    out = {}
    for k, task in enumerate(TASKS):
        out[f"val/majority/{task}/accuracy"] = float(np.bincount(val[:, k].astype(np.int64)).max() / len(val))
    out["val/majority_task_accuracy"] = float(np.mean([out[f"val/majority/{t}/accuracy"] for t in TASKS]))
    majority_age = np.bincount(val[:, 2].astype(np.int64)).argmax()
    out["val/majority/age/mae_years"] = float(np.abs(val[:, 3] - AGE_MIDPOINTS[majority_age]).mean())
    return out


def build(cfg: TrainConfig) -> TaskSetup:
    criterion = build_multitask_loss(cfg)
    splits = splits_of(shards(cfg))
    size = cfg.data.image_size
    columns = splits["train"].label_columns
    stream = TrainStream(splits["train"], size, columns, build_augment(cfg.data.augment, size), cfg.seed,
                         cfg.data.max_train_images, targets=FairFaceTargets(), label_dtype=torch.float32,
                         cache_mb=cfg.data.decoded_cache_mb)
    caches = EvalCaches(stream.cache_left)
    val_files = splits["val"].columns(["file"])["file"].astype(str).tolist()

    def evaluate(model: torch.nn.Module, ctx: EvalContext) -> EvalResult:
        loader = eval_loader(splits["val"], size, columns, ctx.rank, ctx.world, ctx.batch_size,
                             ctx.loader_workers, targets=FairFaceTargets(), label_dtype=torch.float32,
                             caches=caches)
        outputs, labels = all_gather_rows(*predict(model, loader, ctx.pipe))
        metrics, decoded, table = score(criterion, outputs, labels)
        return EvalResult(metrics, lambda out: write_fairface_files(out, val_files, labels, decoded, table))

    model = build_model(cfg.model, num_outputs=criterion.num_outputs)
    return TaskSetup(model=model, criterion=criterion, evaluate=evaluate, train_loader=stream,
                     train_rows=stream.rows, num_outputs=criterion.num_outputs)


def score(criterion: MultitaskLoss, outputs: np.ndarray, labels: np.ndarray
          ) -> tuple[dict[str, float], Decoded, pd.DataFrame]:
    """Every `val/*` metric (see the module docstring), the decoded predictions and the group table."""
    decoded = criterion.decode(outputs)
    true = decode_multihead(labels)
    metrics: dict[str, float] = {}
    for task in TASKS:
        for key, value in task_accuracies(true[task], decoded.indices[task]).items():
            metrics[f"val/{task}/{key}"] = value
    metrics["val/age/mae_years"] = float(mean_absolute_error(labels[:, 3], decoded.age_years))
    table = group_table(true, decoded.indices, GROUP_NAMES)
    metrics.update({f"val/{k}": v for k, v in group_metrics(table, TASKS).items()})
    metrics["val/mean_task_accuracy"] = float(np.mean([metrics[f"val/{t}/accuracy"] for t in TASKS]))
    device = next(itertools.chain(criterion.parameters(), criterion.buffers()), torch.zeros(0)).device  # DDP's device
    with torch.no_grad():
        losses = criterion.task_losses(torch.from_numpy(outputs).float().to(device),
                                       torch.from_numpy(labels).float().to(device))
        metrics["val/loss"] = float(criterion.weighting(losses))
    metrics.update({f"val/{t}/loss": float(v) for t, v in zip(TASKS, losses.tolist())})
    metrics.update({f"train/weight/{t}": w for t, w in criterion.task_weights().items()})
    return metrics, decoded, table


def write_fairface_files(out: Path, files: list[str], labels: np.ndarray, decoded: Decoded,
                         table: pd.DataFrame) -> None:
    """per_group.csv, predictions/val.parquet and the group_accuracy.png bar chart."""
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / artifacts.PER_GROUP, index=False, float_format="%.6f")
    true = decode_multihead(labels)
    frame = pd.DataFrame({"file": files})
    for task, column in (("race", "race"), ("gender", "gender"), ("age", "age_bin")):
        frame[f"true_{column}"] = names(true[task], task)
        frame[f"pred_{column}"] = names(decoded.indices[task], task)
    frame["true_age_years"] = labels[:, 3].astype(np.float32)
    frame["pred_age_years"] = decoded.age_years.astype(np.float32)
    scores = pd.DataFrame({k: np.asarray(v, dtype=np.float32) for k, v in decoded.scores.items()})
    frame = pd.concat([frame, scores], axis=1)
    (out / artifacts.PREDICTIONS).mkdir(exist_ok=True)
    frame.to_parquet(out / artifacts.predictions_file("val"), index=False)
    plot_group_accuracy(table, TASKS, out / artifacts.GROUP_PLOT)


register_task(Task(
    name="fairface",
    title="FairFace: race (7), gender (2) and age (9 bins or years) learned together",
    metric="val/mean_task_accuracy",
    sections={"multitask": MultitaskConfig, "age": AgeConfig},
    prepare=prepare, build=build, check=build_multitask_loss,
    trial_files=(artifacts.PER_GROUP, artifacts.PREDICTIONS, artifacts.GROUP_PLOT),
    report_columns=("val/race/accuracy", "val/gender/accuracy", "val/age/accuracy", "val/age/mae_years",
                    "val/race/group_gap"),
    outputs=FAIRFACE_OUTPUTS,
))
