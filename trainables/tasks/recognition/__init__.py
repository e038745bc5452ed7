"""The face-recognition task (seed 004): an embedding network trained through a margin head, scored
by face verification.

Training: `EmbeddingNet(model.name)` (MobileFaceNet as it is; any other timm backbone gets the
BN-dropout-FC-BN embedding head) under the `head.*` margin head (softmax | arcface | cosface |
combined, with label smoothing and focal weighting), plus center loss when `head.center_lambda` > 0.
The class weights and centers live in the criterion, so DDP synchronises them; the centers get their
own optimizer group (lr `head.center_lr`, no weight decay). Training images come from `data.root`
read as `data.format` (see TRAIN_FORMATS), or from the synthetic demo faces when `data.root` is empty.

Evaluation, every epoch, on each `eval.targets` entry (an LFW folder with pairs.txt, or an InsightFace
.bin; empty: the demo's lfw/ pairs), exactly as InsightFace does (see trainables/verification.py):
`val/<target>/accuracy`, `val/<target>/accuracy_std`, `val/<target>/tar_at_far_1e-3`, and their
mean `val/mean_verification_accuracy`. Each rank embeds a contiguous share of the pairs and the
distances are gathered, so every pair counts once. There is no `val/loss`: the verification
identities are not training classes, so a margin loss on them does not exist. Rank 0 writes
`verification/<target>.parquet` (distance, issame, fold per pair) and `verification/roc.png`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import timm
import torch
from PIL import Image
from torch import nn

from trainables.config import DataConfig, TrainConfig
from trainables.data.formats.celeba import read_celeba
from trainables.data.formats.faces import read_face_folders
from trainables.data.formats.insightface_bin import read_insightface_bin
from trainables.data.formats.insightface_rec import read_insightface_rec, read_record_image
from trainables.data.formats.lfw_pairs import read_lfw_pairs
from trainables.data.decode import ImageLabelDataset, eval_share, make_loader
from trainables.data.sources import cache_dir
from trainables.data.demo.faces import ensure_demo_faces
from trainables.data.transforms import build_augment
from trainables.data.formats.verification_pairs import VerificationPairs
from trainables.distributed import all_gather_rows
from trainables.models.embedding import EmbeddingNet
from trainables.errors import UserError
from trainables.tasks.recognition.margin_losses import (RecognitionCriterion, build_recognition_criterion, center_param_group,
                                      margin_head_arguments)
from trainables.models import check_model_name, load_backbone_weights
from trainables.tasks import DataSummary, EvalContext, EvalResult, TaskSetup, register_task
from trainables.tasks.recognition.verification import embed_with_flip, pair_distances, plot_roc, tar_at_far, ten_fold_accuracy, verification_table

DEMO_SEED = 0
FAR = 1e-3


# ---- training images, by data.format ------------------------------------------------------------

@dataclass(frozen=True)
class TrainingFaces:
    load: Callable[[int], bytes | Path]  # image i, as a path or JPEG bytes (picklable)
    labels: np.ndarray                   # int64 identity of image i (any integers; remapped later)
    square_crop: bool = False            # centre-crop non-square images before resizing


class _RecImages:
    """Image i of an InsightFace .rec; one open per read keeps forked loader workers independent."""

    def __init__(self, rec_path: Path, offsets: np.ndarray):
        self.rec_path, self.offsets = rec_path, offsets

    def __call__(self, i: int) -> bytes:
        return read_record_image(self.rec_path, int(self.offsets[i]))


def _faces(root: Path) -> TrainingFaces:
    index = read_face_folders(root)
    return TrainingFaces(index.files.__getitem__, index.labels)


def _insightface_rec(root: Path) -> TrainingFaces:
    index = read_insightface_rec(root)
    return TrainingFaces(_RecImages(index.rec_path, index.offsets), index.labels)


def _celeba_identities(root: Path) -> TrainingFaces:
    index = read_celeba(root)
    if index.identity is None:
        raise UserError(f"identity_CelebA.txt not found in {index.root}; put CelebA's identity file beside "
                        f"list_attr_celeba.txt to train face recognition on CelebA")
    rows = index.indices("train")  # identities do not cross CelebA's splits, so train alone is clean
    return TrainingFaces([index.image_path(int(r)) for r in rows].__getitem__, index.identity[rows], square_crop=True)


TRAIN_FORMATS: dict[str, Callable[[Path], TrainingFaces]] = {
    "faces": _faces, "insightface_rec": _insightface_rec, "celeba_identities": _celeba_identities,
}


def demo_faces(cfg: DataConfig) -> tuple[Path, bool]:
    """(the demo set's root, whether it was built just now), in the shared demo cache."""
    return ensure_demo_faces(cache_dir(cfg), seed=DEMO_SEED)


def read_training_faces(cfg: DataConfig) -> TrainingFaces:
    """`data.root` read as `data.format`; with no root, the demo's train/ identity folders."""
    if not cfg.root:
        return _faces(demo_faces(cfg)[0] / "train")
    if cfg.format not in TRAIN_FORMATS:
        raise UserError(f"face_recognition cannot train from data.format={cfg.format!r}: set data.format to one "
                        f"of {', '.join(TRAIN_FORMATS)}")
    root = Path(cfg.root).expanduser()
    if not root.exists():
        raise UserError(f"data folder not found: {root}: pass --data with the {cfg.format} training folder")
    faces = TRAIN_FORMATS[cfg.format](root)
    if len(np.unique(faces.labels)) < 2:
        raise UserError(f"{root} holds fewer than 2 identities: a recognition head needs several people to tell apart")
    return faces


class SquareFaceDataset(ImageLabelDataset):
    """CelebA's aligned images are 178x218: the centred square keeps the face's proportions at any size."""

    def __getitem__(self, i: int):
        path = self.load(i)
        try:
            with Image.open(path) as img:
                w, h = img.size
                s = min(w, h)
                img = img.convert("RGB").crop(((w - s) // 2, (h - s) // 2, (w + s) // 2, (h + s) // 2))
                img = img.resize((self.size, self.size), Image.BILINEAR, reducing_gap=2.0)
        except (OSError, SyntaxError, ValueError) as err:
            raise UserError(f"cannot decode image {path}: {err}; re-copy the file or drop it from the labels") from None
        x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)
        if self.augment is not None:
            x = self.augment(x)
        return x, torch.from_numpy(np.asarray(self.labels[i]))


class _Rows:
    """`load` restricted to `rows` (picklable, unlike a lambda)."""

    def __init__(self, load: Callable[[int], bytes | Path], rows: np.ndarray):
        self.load, self.rows = load, rows

    def __call__(self, i: int) -> bytes | Path:
        return self.load(int(self.rows[i]))


def training_set(cfg: DataConfig, faces: TrainingFaces) -> tuple[ImageLabelDataset, int]:
    """(the augmented training set with labels 0..K-1, K) over the first `data.max_train_images` images."""
    rows = np.arange(len(faces.labels))
    if cfg.max_train_images:
        rows = rows[: cfg.max_train_images]
    classes, labels = np.unique(faces.labels[rows], return_inverse=True)  # CE needs contiguous class ids
    dataset = SquareFaceDataset if faces.square_crop else ImageLabelDataset
    augment = build_augment(cfg.augment, cfg.image_size)
    return dataset(_Rows(faces.load, rows), labels.astype(np.int64), cfg.image_size, augment), len(classes)


# ---- verification targets ------------------------------------------------------------------------

TARGET_READERS: dict[str, Callable[[Path], VerificationPairs]] = {".bin": read_insightface_bin}


def read_targets(cfg: TrainConfig) -> dict[str, VerificationPairs]:
    """name -> pairs for each `eval.targets` entry (the demo's lfw/ when there is none)."""
    paths = [Path(p).expanduser() for p in cfg.eval.targets] or [demo_faces(cfg.data)[0] / "lfw"]
    targets: dict[str, VerificationPairs] = {}
    for path in paths:
        pairs = TARGET_READERS.get(path.suffix.lower(), read_lfw_pairs)(path)
        name = path.stem if path.suffix.lower() in TARGET_READERS else (path.parent if path.is_file() else path).name
        if name in targets:
            raise UserError(f"two eval.targets are both named {name!r} ({path}); rename one folder or file so "
                            f"their metrics do not collide")
        if len(pairs) < 10:
            raise UserError(f"verification target {path} has {len(pairs)} pairs; the 10-fold protocol needs at least 10")
        targets[name] = pairs
    return targets


def pair_distances_gathered(model: nn.Module, pairs: VerificationPairs, size: int, ctx: EvalContext) -> np.ndarray:
    """Every pair's flip-summed squared L2 distance: this rank's contiguous share, gathered in rank order."""
    share = eval_share(len(pairs), ctx.rank, ctx.world)
    keys = bool(pairs.left_names and pairs.right_names)  # LFW names an image in many pairs: embed it once
    slot: dict = {}
    sources: list = []

    def place(side: list, names: list, i: int) -> int:
        key = names[i] if keys else (id(side), i)
        if key not in slot:
            slot[key] = len(sources)
            sources.append(side[i])
        return slot[key]

    left = [place(pairs.left, pairs.left_names, int(i)) for i in share]
    right = [place(pairs.right, pairs.right_names, int(i)) for i in share]
    dist = np.zeros(0, dtype=np.float64)
    if sources:
        images = ImageLabelDataset(sources.__getitem__, np.arange(len(sources)), size)
        loader = make_loader(images, np.arange(len(sources)), ctx.batch_size, ctx.loader_workers, train=False)
        plain, flipped = embed_with_flip(model, (x for x, _ in loader), ctx.pipe.mean, ctx.pipe.std, ctx.pipe.device)
        dist = pair_distances(plain[left], plain[right], flipped[left], flipped[right])
    (dist,) = all_gather_rows(dist)
    return dist


def write_verification_files(out: Path, tables: dict) -> None:
    folder = out / "verification"
    folder.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        table.to_parquet(folder / f"{name}.parquet", index=False)
    plot_roc(tables, folder / "roc.png")


# ---- the task --------------------------------------------------------------------------------------

class MarginLoss(nn.Module):
    """`RecognitionCriterion` as TrainModule wants it: forward(embeddings, labels) -> the loss alone."""

    def __init__(self, criterion: RecognitionCriterion):
        super().__init__()
        self.criterion = criterion

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.criterion(embeddings, labels)[0]


def check_input_size(model_name: str, size: int) -> None:
    """Backbones whose pretrained cfg says `fixed_input_size` (MobileFaceNet's 7x7 GDC) take one size only."""
    cfg = timm.models.get_pretrained_cfg(model_name)
    if cfg is not None and cfg.fixed_input_size and size != cfg.input_size[-1]:
        side = cfg.input_size[-1]
        raise UserError(f"{model_name} takes {side}x{side} faces only, but data.image_size={size}: "
                        f"set data.image_size={side} (e.g. --set data.image_size={side})")


def build_embedding_model(cfg: TrainConfig) -> EmbeddingNet:
    check_model_name(cfg.model.name)
    check_input_size(cfg.model.name, cfg.data.image_size)
    if cfg.model.pretrained and not cfg.model.weights:
        raise UserError("model.pretrained=true needs a local weights file: weights cannot be downloaded here; "
                        "set model.weights=/path/to/file.safetensors")
    kwargs = {"block_args": {"attn_layer": cfg.model.attn_layer}} if cfg.model.attn_layer else {}
    model = EmbeddingNet(cfg.model.name, cfg.head.embedding_size, cfg.model.drop_rate, **kwargs)
    if cfg.model.weights:
        load_backbone_weights(model.backbone, cfg.model.weights)
    return model


def build_criterion(cfg: TrainConfig, num_classes: int) -> tuple[MarginLoss, list[dict]]:
    """(the loss module, its extra optimizer groups: the centers when center loss is on)."""
    head_kwargs = {a: getattr(cfg.head, a) for a in margin_head_arguments(cfg.head.name) if hasattr(cfg.head, a)}
    criterion = build_recognition_criterion(cfg.head.name, num_classes, cfg.head.embedding_size,
                                            center_weight=cfg.head.center_lambda, **head_kwargs)
    groups = []
    if criterion.center_loss is not None:
        groups.append(center_param_group(criterion.center_loss, cfg.head.center_lambda, cfg.head.center_lr))
    return MarginLoss(criterion), groups


def prepare_recognition(cfg: TrainConfig) -> DataSummary:
    """Driver side: build the demo set if needed (saying so), parse the training data and every target."""
    check_input_size(cfg.model.name, cfg.data.image_size)
    margin_head_arguments(cfg.head.name)
    started = time.time()
    if not cfg.data.root or not cfg.eval.targets:
        root, built = demo_faces(cfg.data)
        verb = f"Built it in {time.time() - started:.0f}s" if built else "Using the cached copy"
        if not cfg.data.root:
            print(f"No --data given: training face recognition on the synthetic demo faces (identity folders in "
                  f"train/, LFW-format pairs in lfw/) at {root}. {verb}; pass --data /path/to/identity_folders "
                  f"(or --set data.format=insightface_rec / celeba_identities) and --set "
                  f"eval.targets=/path/lfw.bin,/path/cfp_fp.bin for real data.", flush=True)
        else:
            print(f"No eval.targets given: verifying on the synthetic demo pairs at {root / 'lfw'}. {verb}; pass "
                  f"--set eval.targets=/path/lfw.bin,/path/cfp_fp.bin,/path/agedb_30.bin for the real benchmarks.",
                  flush=True)
    read_training_faces(cfg.data)
    read_targets(cfg)
    root = Path(cfg.data.root).expanduser() if cfg.data.root else demo_faces(cfg.data)[0] / "train"
    return DataSummary(str(root), {"val/chance_accuracy": 0.5})


@register_task("face_recognition", prepare=prepare_recognition)
def recognition_task(cfg: TrainConfig) -> TaskSetup:
    model = build_embedding_model(cfg)
    train_set, num_classes = training_set(cfg.data, read_training_faces(cfg.data))
    criterion, groups = build_criterion(cfg, num_classes)
    targets = read_targets(cfg)

    def evaluate(model: nn.Module, ctx: EvalContext) -> EvalResult:
        metrics, tables = {}, {}
        for name, pairs in targets.items():
            dist = pair_distances_gathered(model, pairs, cfg.data.image_size, ctx)
            scored = ten_fold_accuracy(dist, pairs.issame)
            metrics[f"val/{name}/accuracy"] = scored["accuracy"]
            metrics[f"val/{name}/accuracy_std"] = scored["accuracy_std"]
            metrics[f"val/{name}/tar_at_far_1e-3"] = tar_at_far(dist, pairs.issame, far=FAR)["tar"]
            tables[name] = verification_table(dist, pairs.issame, scored["fold"])
        metrics["val/mean_verification_accuracy"] = float(np.mean([metrics[f"val/{n}/accuracy"] for n in targets]))
        return EvalResult(metrics, lambda out: write_verification_files(out, tables))

    return TaskSetup(model=model, criterion=criterion, train_set=train_set, evaluate=evaluate,
                     param_groups=groups, num_outputs=cfg.head.embedding_size)
