"""The face-recognition task (seed 004): an embedding network trained through a margin head, scored by
face verification.

What it learns: `EmbeddingNet(model.name)` (MobileFaceNet as it is; any other timm backbone gets the
BN-dropout-FC-BN embedding head) under the `head.*` margin head (softmax | arcface | cosface | combined,
with label smoothing and focal weighting), plus center loss when `head.center_lambda` > 0. The class
weights and centers live in the criterion, so DDP synchronises them; the centers get their own
optimizer group. It trains on the `train` split's `identity` column of prepared shards: identity
folders, an InsightFace train.rec, or CelebA with identity_CelebA.txt (whose 178x218 faces are
centre-cropped to a square).

How it is scored: every epoch, on each verification set (an LFW folder with pairs.txt, an InsightFace
.bin, or the pair splits prepared beside train.rec), exactly as InsightFace does
(see verification.py): `val/<set>/accuracy`, `val/<set>/accuracy_std`, `val/<set>/tar_at_far_1e-3`, and
their mean `val/mean_verification_accuracy`. Each distinct image is embedded once (pairs.py). There is
no `val/loss`: the verification identities are not training classes. Rank 0 writes
`verification/<set>.parquet` (distance, issame, fold per pair), `verification/roc.png` and
`verification_threshold.json` (the same/different rule an export carries, outputs.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import timm
import torch
from torch import nn

from trainables import artifacts
from trainables.config import TrainConfig
from trainables.data.demo.faces import ensure_demo_faces
from trainables.data.hints import DATA_HINTS
from trainables.data.loaders import EvalCaches, TrainStream, open_split
from trainables.data.shards import load_metadata
from trainables.data.sources import prepared_root
from trainables.data.transforms import build_augment
from trainables.errors import UserError
from trainables.models import check_model_name, weights
from trainables.models.embedding import EmbeddingNet
from trainables.tasks import DataSummary, EvalContext, EvalResult, Say, Task, TaskSetup, register_task
from trainables.tasks.recognition.config import EvalConfig, HeadConfig
from trainables.tasks.recognition.margin_losses import (RecognitionCriterion, build_recognition_criterion,
                                                        center_param_group, margin_head_arguments)
from trainables.tasks.recognition.pairs import PairSplit, distances, pair_split_names
from trainables.tasks.recognition.outputs import RECOGNITION_OUTPUTS
from trainables.tasks.recognition.verification import (decision_threshold, plot_roc, tar_at_far, ten_fold_accuracy,
                                                       verification_table)

DEMO_SEED = 0
FAR = 1e-3
TRAIN_FORMATS = ("faces", "insightface_rec", "celeba")
PAIR_FORMATS = ("lfw_pairs", "insightface_bin")
TRAIN_WHAT = DATA_HINTS["recognition"]
PAIRS_WHAT = "--set eval.targets=/path/lfw,/path/cfp_fp.bin (LFW folders with pairs.txt, or InsightFace .bin files)"


class ContiguousIds:
    """Identity labels -> 0..K-1 (what a classification head needs). Picklable, for loader workers."""

    def __init__(self, identities: np.ndarray):
        self.classes = np.unique(identities)

    def __call__(self, labels: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.classes, labels[:, 0]).astype(np.int64)


def demo(part: str):
    """A builder of the demo set's `part` folder (train/ identity folders, or lfw/ pairs)."""
    def build(cache: Path) -> tuple[Path, bool]:
        root, built = ensure_demo_faces(cache, seed=DEMO_SEED)
        return root / part, built

    return build


def training_root(cfg: TrainConfig, say: Say = lambda text: None) -> str:
    root = prepared_root(cfg.data.root, TRAIN_FORMATS, what=TRAIN_WHAT, cache=cfg.data.cache_dir,
                         fmt=cfg.data.format, demo=demo("train"), say=say)
    if "identity" not in load_metadata(root)["label_columns"]:
        raise UserError(f"{root} has no identity labels: put CelebA's identity_CelebA.txt beside "
                        "list_attr_celeba.txt (or pass identity folders) to train face recognition")
    return root


def target_roots(cfg: TrainConfig, train_root: str, say: Say = lambda text: None) -> list[str]:
    """The prepared root of every verification set: `eval.targets`, else the training data's own pair
    splits, else the demo pairs."""
    if cfg.eval.targets:
        return [prepared_root(t, PAIR_FORMATS, what=PAIRS_WHAT, cache=cfg.data.cache_dir, say=say)
                for t in cfg.eval.targets]
    if pair_split_names(train_root):
        return [train_root]
    if cfg.data.root:
        say(f"No eval.targets given: verifying on the synthetic demo pairs; pass {PAIRS_WHAT} for the real benchmarks.")
    return [prepared_root("", PAIR_FORMATS, what=PAIRS_WHAT, cache=cfg.data.cache_dir, demo=demo("lfw"), say=say)]


def read_targets(roots: list[str]) -> dict[str, PairSplit]:
    targets: dict[str, PairSplit] = {}
    for root in roots:
        names = pair_split_names(root)
        if not names:
            raise UserError(f"{root} holds no verification pairs: pass {PAIRS_WHAT}")
        for name in names:
            if name in targets:
                raise UserError(f"two verification sets are both named {name!r} ({root}); rename one file or "
                                "folder so their metrics do not collide")
            targets[name] = PairSplit(root, name)
    return targets


def check_input_size(model_name: str, size: int) -> None:
    """Backbones whose pretrained cfg says `fixed_input_size` (MobileFaceNet's 7x7 GDC) take one size only."""
    cfg = timm.models.get_pretrained_cfg(model_name)
    if cfg is not None and cfg.fixed_input_size and size != cfg.input_size[-1]:
        side = cfg.input_size[-1]
        raise UserError(f"{model_name} takes {side}x{side} faces only, but data.image_size={size}: "
                        f"set data.image_size={side} (e.g. --set data.image_size={side})")


def check(cfg: TrainConfig) -> None:
    check_input_size(cfg.model.name, cfg.data.image_size)
    margin_head_arguments(cfg.head.name)


def build_embedding_model(cfg: TrainConfig) -> EmbeddingNet:
    check_model_name(cfg.model.name)
    check_input_size(cfg.model.name, cfg.data.image_size)
    found = weights.locate(cfg.model)  # a model with no pretrained weights (mobilefacenet) fails here, in one line
    kwargs = {"block_args": {"attn_layer": cfg.model.attn_layer}} if cfg.model.attn_layer else {}
    model = EmbeddingNet(cfg.model.name, cfg.head.embedding_size, cfg.model.drop_rate, **kwargs)
    if found is not None:
        weights.load(model.backbone, found)  # the embedding head is new: only the backbone is loaded
    return model


class MarginLoss(nn.Module):
    """`RecognitionCriterion` as TrainModule wants it: forward(embeddings, labels) -> the loss alone."""

    def __init__(self, criterion: RecognitionCriterion):
        super().__init__()
        self.criterion = criterion

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.criterion(embeddings, labels)[0]


def build_criterion(cfg: TrainConfig, num_classes: int) -> tuple[MarginLoss, list[dict]]:
    """(the loss module, its extra optimizer groups: the centers when center loss is on)."""
    head_kwargs = {a: getattr(cfg.head, a) for a in margin_head_arguments(cfg.head.name) if hasattr(cfg.head, a)}
    criterion = build_recognition_criterion(cfg.head.name, num_classes, cfg.head.embedding_size,
                                            center_weight=cfg.head.center_lambda, **head_kwargs)
    groups = []
    if criterion.center_loss is not None:
        groups.append(center_param_group(criterion.center_loss, cfg.head.center_lambda, cfg.head.center_lr))
    return MarginLoss(criterion), groups


def chance_accuracy(sets) -> float:
    """The mean verification accuracy of always giving each set's more common answer (same or different):
    0.5 on the balanced 6,000 pairs of LFW, more on a set of one's own with more of one kind."""
    return float(np.mean([max(s.issame.mean(), 1 - s.issame.mean()) for s in sets]))


def prepare(cfg: TrainConfig, say: Say) -> DataSummary:
    """Driver side: pack the training data and every verification set once; check both."""
    check(cfg)
    root = training_root(cfg, say)
    train = open_split(root, "train", ["identity"])
    if len(np.unique(train.labels().to_numpy())) < 2:
        raise UserError(f"{root} holds fewer than 2 identities: a recognition head needs several people to tell apart")
    targets = target_roots(cfg, root, say)
    sets = read_targets(targets)
    rows = min(train.num_rows, cfg.data.max_train_images or train.num_rows)
    return DataSummary(root, {"val/chance_accuracy": chance_accuracy(sets.values())}, rows, {"data.root": root, "eval.targets": targets},
                       {"train": train.num_rows, **{name: len(pairs) for name, pairs in sets.items()}})


def build(cfg: TrainConfig) -> TaskSetup:
    model = build_embedding_model(cfg)
    root = training_root(cfg)
    train = open_split(root, "train", ["identity"])
    identities = ContiguousIds(train.labels().to_numpy()[:, 0])
    size = cfg.data.image_size
    stream = TrainStream(train, size, ["identity"], build_augment(cfg.data.augment, size), cfg.seed,
                         cfg.data.max_train_images, targets=identities, square=True, label_dtype=torch.int64,
                         cache_mb=cfg.data.decoded_cache_mb)
    criterion, groups = build_criterion(cfg, len(identities.classes))
    targets = read_targets(target_roots(cfg, root))
    caches = EvalCaches(stream.cache_left)

    def evaluate(model: nn.Module, ctx: EvalContext) -> EvalResult:
        metrics, tables = {}, {}
        for name, pairs in targets.items():
            dist = distances(model, pairs, size, ctx, caches)
            scored = ten_fold_accuracy(dist, pairs.issame)
            metrics[f"val/{name}/accuracy"] = scored["accuracy"]
            metrics[f"val/{name}/accuracy_std"] = scored["accuracy_std"]
            metrics[f"val/{name}/tar_at_far_1e-3"] = tar_at_far(dist, pairs.issame, far=FAR)["tar"]
            tables[name] = verification_table(dist, pairs.issame, scored["fold"])
        metrics["val/mean_verification_accuracy"] = float(np.mean([metrics[f"val/{n}/accuracy"] for n in targets]))
        return EvalResult(metrics, lambda out: write_verification_files(out, tables))

    return TaskSetup(model=model, criterion=criterion, evaluate=evaluate, train_loader=stream,
                     train_rows=stream.rows, param_groups=groups, num_outputs=cfg.head.embedding_size)


def write_verification_files(out: Path, tables: dict) -> None:
    folder = out / artifacts.VERIFICATION
    folder.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        table.to_parquet(folder / f"{name}.parquet", index=False)
    plot_roc(tables, folder / artifacts.ROC_PLOT)
    if tables:  # beside the checkpoint, where `export` copies it from
        (out / artifacts.VERIFICATION_THRESHOLD).write_text(json.dumps(decision_threshold(tables), indent=1))


register_task(Task(
    name="recognition",
    title="face recognition: an embedding trained through a margin head, scored by 10-fold verification",
    metric="val/mean_verification_accuracy",
    sections={"head": HeadConfig, "eval": EvalConfig},
    prepare=prepare, build=build, check=check,
    trial_files=(artifacts.VERIFICATION,),
    report_columns=("val/mean_verification_accuracy",),
    outputs=RECOGNITION_OUTPUTS,
))
