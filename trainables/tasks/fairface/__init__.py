"""The FairFace task: race, gender and age learned together, scored overall and within groups.

The formulation (`multitask.formulation`: multihead | onehot18), the age head (`age.mode`: bins |
regression) and the loss weighting (`multitask.weighting`: fixed | uncertainty) are chosen in the
config; see `trainables/multitask.py`. FairFace has train and val only, so every epoch is scored
on val (each example counted once over all ranks):
- `val/<task>/accuracy`, `val/<task>/balanced_accuracy` for race, gender, age (in regression mode
  the predicted years are mapped back to bins first);
- `val/age/mae_years`: against the true bin's midpoint (FairFace gives bins, not ages); in bins
  mode and for onehot18 the prediction is the predicted bin's midpoint;
- group accuracies, `val/<task>/worst_group_accuracy`, `val/<task>/group_gap` (group_metrics.py);
- `val/mean_task_accuracy` (the mean of the three accuracies, the sweep objective), `val/loss`
  (the weighted training objective), `val/<task>/loss` (unweighted), `train/weight/<task>`.
Rank 0 writes `per_group.csv`, `predictions/val.parquet` and `group_accuracy.png` beside the
checkpoint, enough to recompute every number without the model.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import mean_absolute_error

from trainables.config import DataConfig, TrainConfig
from trainables.data.formats.fairface import GENDERS, RACES, FairFaceIndex, read_fairface
from trainables.data.decode import ImageLabelDataset, eval_share, make_loader
from trainables.data.sources import cache_dir
from trainables.data.demo.fairface import ensure_demo_fairface
from trainables.data.transforms import build_augment
from trainables.distributed import all_gather_rows
from trainables.errors import UserError
from trainables.tasks.fairface.labels import AGE_MIDPOINTS, TASKS, decode_multihead, encode_multihead, names
from trainables.tasks.fairface.group_metrics import group_metrics, group_table, plot_group_accuracy, task_accuracies
from trainables.loop import predict
from trainables.models import build_model
from trainables.tasks.fairface.multitask import Decoded, MultitaskLoss, build_multitask_loss
from trainables.tasks import DataSummary, EvalContext, EvalResult, TaskSetup, register_task

DEMO_SEED = 0
GROUP_NAMES = {"race": RACES, "gender": GENDERS}


def fairface_root(cfg: DataConfig) -> tuple[Path, bool]:
    """(the release folder, whether the demo set was built just now): `data.root`, else the demo set."""
    if cfg.format != "fairface":
        raise UserError(f"the fairface task reads data.format=fairface, got '{cfg.format}': set data.format=fairface")
    if not cfg.root:
        return ensure_demo_fairface(cache_dir(cfg), num_images=cfg.demo_images, seed=DEMO_SEED)
    return Path(cfg.root).expanduser(), False


def prepare_fairface(cfg: TrainConfig) -> DataSummary:
    """Driver side: check the multitask names, build the demo set if needed (saying so), read the
    label files once, and compute the majority-class baseline on val."""
    build_multitask_loss(cfg)
    started = time.time()
    root, built = fairface_root(cfg.data)
    if not cfg.data.root:
        verb = f"Built it in {time.time() - started:.0f}s" if built else "Using the cached copy"
        print(f"No --data given: training on the synthetic FairFace-format demo set ({cfg.data.demo_images} images, "
              f"labels drawn as arbitrary shape codes) at {root}. {verb}; pass --data /path/to/fairface for the "
              f"real dataset.", flush=True)
    index = read_fairface(root)
    return DataSummary(str(index.root), majority_baseline(index))


def majority_baseline(index: FairFaceIndex) -> dict[str, float]:
    """Accuracy on val of always predicting each task's most frequent val class, and their mean."""
    val = encode_multihead(index)[index.indices("val")]
    if not len(val):
        raise UserError(f"the val split of {index.root} is empty: check fairface_label_val.csv")
    out = {}
    for k, task in enumerate(TASKS):
        out[f"val/majority/{task}/accuracy"] = float(np.bincount(val[:, k].astype(np.int64)).max() / len(val))
    out["val/majority_task_accuracy"] = float(np.mean([out[f"val/majority/{t}/accuracy"] for t in TASKS]))
    majority_age = np.bincount(val[:, 2].astype(np.int64)).argmax()
    out["val/majority/age/mae_years"] = float(np.abs(val[:, 3] - AGE_MIDPOINTS[majority_age]).mean())
    return out


@register_task("fairface", prepare=prepare_fairface, check=build_multitask_loss)
def fairface_task(cfg: TrainConfig) -> TaskSetup:
    criterion = build_multitask_loss(cfg)
    index = read_fairface(fairface_root(cfg.data)[0])
    targets = encode_multihead(index)
    size = cfg.data.image_size
    rows = {split: index.indices(split) for split in ("train", "val")}
    if cfg.data.max_train_images:
        rows["train"] = rows["train"][: cfg.data.max_train_images]
    sets = {}
    for split, r in rows.items():
        if len(r) == 0:
            raise UserError(f"the {split} split of {index.root} is empty: check fairface_label_{split}.csv")
        paths = [index.image_path(int(i)) for i in r]
        augment = build_augment(cfg.data.augment, size) if split == "train" else None
        sets[split] = ImageLabelDataset(paths.__getitem__, targets[r], size, augment)
    val_files = [index.files[int(i)] for i in rows["val"]]

    def evaluate(model: torch.nn.Module, ctx: EvalContext) -> EvalResult:
        loader = make_loader(sets["val"], eval_share(len(sets["val"]), ctx.rank, ctx.world), ctx.batch_size,
                             ctx.loader_workers, train=False)
        outputs, labels = all_gather_rows(*predict(model, loader, ctx.pipe))
        metrics, decoded, table = score(criterion, outputs, labels)
        return EvalResult(metrics, lambda out: write_fairface_files(out, val_files, labels, decoded, table))

    model = build_model(cfg.model, num_outputs=criterion.num_outputs)
    return TaskSetup(model=model, criterion=criterion, train_set=sets["train"], evaluate=evaluate,
                     num_outputs=criterion.num_outputs)


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
    table.to_csv(out / "per_group.csv", index=False, float_format="%.6f")
    true = decode_multihead(labels)
    frame = pd.DataFrame({"file": files})
    for task, column in (("race", "race"), ("gender", "gender"), ("age", "age_bin")):
        frame[f"true_{column}"] = names(true[task], task)
        frame[f"pred_{column}"] = names(decoded.indices[task], task)
    frame["true_age_years"] = labels[:, 3].astype(np.float32)
    frame["pred_age_years"] = decoded.age_years.astype(np.float32)
    scores = pd.DataFrame({k: np.asarray(v, dtype=np.float32) for k, v in decoded.scores.items()})
    frame = pd.concat([frame, scores], axis=1)
    (out / "predictions").mkdir(exist_ok=True)
    frame.to_parquet(out / "predictions" / "val.parquet", index=False)
    plot_group_accuracy(table, TASKS, out / "group_accuracy.png")


def describe_predictions(outputs: np.ndarray, cfg: TrainConfig) -> pd.DataFrame:
    """Labels for raw model outputs of either formulation: race, gender, age_bin (class strings) and
    age_years (regressed, else the predicted bin's midpoint). For the predict command."""
    decoded = build_multitask_loss(cfg).decode(np.asarray(outputs, dtype=np.float32))
    return pd.DataFrame({"race": names(decoded.indices["race"], "race"),
                         "gender": names(decoded.indices["gender"], "gender"),
                         "age_bin": names(decoded.indices["age"], "age"),
                         "age_years": decoded.age_years})
