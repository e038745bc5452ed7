"""Predicting with an exported model: safe loading, evaluation's exact preprocessing, Grad-CAM.

An export folder (written by `orchestrator export`) holds `config.json` (the trial's flat config),
`model.safetensors`, `labels.json` ({"outputs": names in model output order, ...}) and, for
attribute models, `thresholds.json`. Loading never unpickles anything. Images go through the same
decoder, `InputPipe` and `loop.predict` as the trial's evaluation, so a label here is the label the
trial's own evaluation gave the same image.

What differs between tasks (the image decoder its evaluation uses, the default metric to pick a
checkpoint by, the output names, how raw outputs become a table and a caption) lives in one
registry, TASK_OUTPUTS, keyed by `task`.
"""

from __future__ import annotations

import dataclasses
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from trainables.config import TrainConfig
from trainables.data.decode import decode_image, make_loader
from trainables.data.shards import decode_shard_image
from trainables.errors import UserError
from trainables.loop import InputPipe, predict
from trainables.models import build_model, input_normalization

MODEL_FILE, CONFIG_FILE = "model.safetensors", "config.json"
LABELS_FILE, THRESHOLDS_FILE = "labels.json", "thresholds.json"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
DEFAULT_STRATEGIES = ("f1_opt", "fixed")  # the first that thresholds.json has is predict's default

Reader = Callable[[str], "bytes | None"]  # a checkpoint file's bytes by relative name, None if absent


# ---- the task registry ---------------------------------------------------------------------------

@dataclass(frozen=True)
class TaskOutputs:
    title: str
    # The decoder of the task's evaluation: shards decode with torchvision, which differs from PIL's
    # resize by up to a grey level, enough to move a score across its threshold.
    decode: Callable[[bytes, int, str], torch.Tensor]
    metric: str                                                   # export's default checkpoint metric
    card_metrics: Callable[[str], list[str]]                      # headline metrics, given a strategy
    output_names: Callable[[TrainConfig, Reader], dict]           # labels.json: {"outputs": [...], ...}
    describe: Callable[[np.ndarray, "ExportedModel", str], pd.DataFrame]  # raw outputs -> columns
    captions: Callable[[pd.Series], list[str]]                    # the lines under a face in a grid


def _attribute_names(cfg: TrainConfig, read: Reader) -> dict:
    """The model's output order is the label file's column order, which per_attribute.csv keeps."""
    table = read("per_attribute.csv")
    if table is not None:
        return {"outputs": pd.read_csv(io.BytesIO(table))["attribute"].astype(str).tolist()}
    scores = read("predictions/val.parquet")
    if scores is not None:
        columns = pd.read_parquet(io.BytesIO(scores)).columns
        return {"outputs": [c.split("/", 1)[1] for c in columns if c.startswith("score/")]}
    raise UserError("the checkpoint has neither per_attribute.csv nor predictions/val.parquet, so its attribute "
                    "names are unknown: export a checkpoint written by a CelebA attribute trial")


def _describe_attributes(outputs: np.ndarray, exported: "ExportedModel", strategy: str) -> pd.DataFrame:
    # torch.sigmoid on float32, as the trial's evaluation computed its stored scores
    scores = torch.sigmoid(torch.from_numpy(np.asarray(outputs, dtype=np.float32))).numpy()
    if strategy not in exported.thresholds:
        raise UserError(f"{exported.folder} has no {THRESHOLDS_FILE} with strategy '{strategy or 'f1_opt'}': "
                        "export the model again with `orchestrator export`")
    thresholds = exported.thresholds[strategy]
    columns = {}
    for k, name in enumerate(exported.output_names):
        columns[f"score/{name}"] = scores[:, k]
        # score >= threshold in float64, exactly as metrics.attribute_confusion counts a positive
        columns[f"label/{name}"] = (scores[:, k].astype(np.float64) >= thresholds[name]).astype(np.uint8)
    return pd.DataFrame(columns)


def _positive_attributes(row: pd.Series) -> list[str]:
    return [key.split("/", 1)[1] for key, value in row.items() if key.startswith("label/") and value == 1]


def _fairface_names(cfg: TrainConfig, read: Reader) -> dict:
    from trainables.tasks.fairface.labels import CLASSES, ONEHOT18_POSITION, TASKS

    def onehot18() -> list[str]:
        names = [""] * sum(len(CLASSES[t]) for t in TASKS)
        for task in TASKS:
            for cls, position in zip(CLASSES[task], ONEHOT18_POSITION[task]):
                names[int(position)] = f"{task}/{cls}"
        return names

    def multihead() -> list[str]:
        age = [f"age/{c}" for c in CLASSES["age"]] if cfg.age.mode == "bins" else ["age/years_over_scale"]
        return [f"{t}/{c}" for t in ("race", "gender") for c in CLASSES[t]] + age

    layouts = {"onehot18": onehot18, "multihead": multihead}
    if cfg.multitask.formulation not in layouts:
        raise UserError(f"unknown multitask.formulation '{cfg.multitask.formulation}'; known: {', '.join(layouts)}")
    return {"outputs": layouts[cfg.multitask.formulation](), "heads": {t: list(CLASSES[t]) for t in TASKS},
            "formulation": cfg.multitask.formulation, "age_mode": cfg.age.mode}


def _describe_fairface(outputs: np.ndarray, exported: "ExportedModel", strategy: str) -> pd.DataFrame:
    from trainables.tasks.fairface import describe_predictions  # another engineer's module: import lazily

    return describe_predictions(outputs, exported.cfg)


def _fairface_captions(row: pd.Series) -> list[str]:
    return [str(row["race"]), str(row["gender"]), f"age {row['age_bin']} (~{float(row['age_years']):.0f} y)"]


TASK_OUTPUTS: dict[str, TaskOutputs] = {
    "celeba_attributes": TaskOutputs(
        title="CelebA attributes: 40 binary face attributes, one sigmoid output each",
        decode=decode_shard_image,  # evaluation reads Parquet shards
        metric="val/mean_accuracy",
        card_metrics=lambda s: ["val/mean_accuracy", "val/macro_f1", f"test/{s}/mean_accuracy", f"test/{s}/macro_f1",
                                "test/fixed/mean_accuracy", "test/fixed/macro_f1"],
        output_names=_attribute_names, describe=_describe_attributes, captions=_positive_attributes),
    "fairface": TaskOutputs(
        title="FairFace: race (7), gender (2) and age (9 bins or years) learned together",
        decode=decode_image,  # evaluation reads the image files (ImageLabelDataset)
        metric="val/mean_task_accuracy",
        card_metrics=lambda s: ["val/mean_task_accuracy", "val/race/accuracy", "val/gender/accuracy",
                                "val/age/accuracy", "val/age/mae_years", "val/race/worst_group_accuracy"],
        output_names=_fairface_names, describe=_describe_fairface, captions=_fairface_captions),
}


def task_outputs(task: str, command: str) -> TaskOutputs:
    if task not in TASK_OUTPUTS:
        raise UserError(f"`{command}` supports tasks {', '.join(TASK_OUTPUTS)}, not '{task}' "
                        "(face_recognition models produce embeddings, not labels)")
    return TASK_OUTPUTS[task]


# ---- loading -------------------------------------------------------------------------------------

def model_from_state(cfg: TrainConfig, state: dict[str, torch.Tensor]) -> nn.Module:
    """The config's backbone with the saved weights; its output count comes from the saved head."""
    # The saved state replaces every weight, and model.weights may name a file only the trial's node has.
    model_cfg = dataclasses.replace(cfg.model, weights="", pretrained=False)
    probe = build_model(model_cfg, num_outputs=1)
    head = {id(m): name for name, m in probe.named_modules()}[id(probe.get_classifier())]
    keys = [k for k in probe.state_dict() if k.startswith(f"{head}.") and k.endswith("weight")]
    if not keys or keys[0] not in state:
        raise UserError(f"the saved weights have no classifier '{head}' of backbone {cfg.model.name}: "
                        "config.json and the weights come from different models; export the run again")
    model = build_model(model_cfg, num_outputs=int(state[keys[0]].shape[0]))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0][:200]
        raise UserError(f"the saved weights do not fit backbone {cfg.model.name} ({first}): "
                        "export the run again") from None
    return model.eval()


@dataclass
class ExportedModel:
    folder: Path
    cfg: TrainConfig
    model: nn.Module
    labels: dict                      # labels.json
    thresholds: dict[str, dict[str, float]]
    pipe: InputPipe
    outputs: TaskOutputs

    @property
    def output_names(self) -> list[str]:
        return list(self.labels["outputs"])


def _read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read {what} {path} ({err}): "
                        "export the model again with `orchestrator export`") from None


def load_exported(folder, device: str | None = None) -> ExportedModel:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder).expanduser()
    missing = [name for name in (CONFIG_FILE, MODEL_FILE, LABELS_FILE) if not (folder / name).is_file()]
    if missing:
        raise UserError(f"{folder} is not an exported model (missing {', '.join(missing)}): "
                        "pass --model a folder written by `orchestrator export`")
    cfg = TrainConfig.from_dict(_read_json(folder / CONFIG_FILE, "config"))
    outputs = task_outputs(cfg.task, "predict")
    try:
        state = load_file(str(folder / MODEL_FILE))
    except (SafetensorError, OSError, ValueError) as err:
        raise UserError(f"cannot read {folder / MODEL_FILE} ({err}): export the model again") from None
    model = model_from_state(cfg, state)
    labels = _read_json(folder / LABELS_FILE, "labels")
    thresholds = _read_json(folder / THRESHOLDS_FILE, "thresholds") if (folder / THRESHOLDS_FILE).is_file() else {}
    try:
        torch_device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError as err:
        raise UserError(f"unknown device '{device}' ({err}): pass --device cpu or cuda") from None
    if torch_device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda, but this machine has no usable CUDA GPU: pass --device cpu")
    model = model.to(torch_device)
    return ExportedModel(folder, cfg, model, labels, thresholds,
                         InputPipe(torch_device, *input_normalization(model)), outputs)


def pick_strategy(exported: ExportedModel, requested: str | None) -> str:
    """The threshold strategy to label with: the requested one, else the first of DEFAULT_STRATEGIES present."""
    known = list(exported.thresholds)
    if requested:
        if requested not in known:
            raise UserError(f"unknown threshold strategy '{requested}'; {exported.folder / THRESHOLDS_FILE} has "
                            f"{', '.join(known) or 'none'}")
        return requested
    return pick_default_strategy(known)


def pick_default_strategy(known: list[str]) -> str:
    """f1_opt when calibrated thresholds exist, else the fixed one; "" for models without thresholds."""
    return next((s for s in DEFAULT_STRATEGIES if s in known), "")


# ---- images --------------------------------------------------------------------------------------

def find_images(path) -> list[Path]:
    path = Path(path).expanduser()
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise UserError(f"no such image file or folder: {path}: pass --images an image or a folder of images")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {path}: pass a folder that holds them")
    return files


def decode_file(exported: ExportedModel, path: Path) -> torch.Tensor:
    """(3, size, size) uint8, decoded as the trial's evaluation decoded its images; UserError if unreadable."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise UserError(f"cannot read image {path}: {err.strerror or err}") from None
    return exported.outputs.decode(data, exported.cfg.data.image_size, str(path))


class _Images(Dataset):
    """Decoded images with an ok flag as the 'target', so one corrupt file does not end the batch."""

    def __init__(self, exported: ExportedModel, paths: list[Path]):
        self.exported, self.paths, self.errors = exported, paths, {}

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            return decode_file(self.exported, self.paths[i]), torch.tensor(1)
        except UserError as err:
            self.errors[i] = str(err)
            size = self.exported.cfg.data.image_size
            return torch.zeros(3, size, size, dtype=torch.uint8), torch.tensor(0)


def run_model(exported: ExportedModel, paths: list[Path], batch_size: int = 64
              ) -> tuple[np.ndarray, list[Path], dict[Path, str]]:
    """(raw outputs of the decodable images, those images' paths, {undecodable path: reason})."""
    images = _Images(exported, paths)
    # Loader workers would keep their own `errors`; decoding in-process keeps them here.
    loader = make_loader(images, np.arange(len(paths)), batch_size, workers=0, train=False)
    outputs, ok = predict(exported.model, loader, exported.pipe)
    ok = ok.astype(bool).reshape(-1) if len(paths) else np.zeros(0, bool)
    failed = {paths[i]: reason for i, reason in sorted(images.errors.items())}
    return outputs[ok], [p for p, good in zip(paths, ok) if good], failed


def load_faces(exported: ExportedModel, paths: list[Path], size: int | None = None) -> torch.Tensor:
    """(N, 3, size, size) uint8: what the model saw (decoded at another `size` if given)."""
    size = size or exported.cfg.data.image_size
    return torch.stack([exported.outputs.decode(p.read_bytes(), size, str(p)) for p in paths])


# ---- Grad-CAM ------------------------------------------------------------------------------------

def grad_cam(exported: ExportedModel, faces: torch.Tensor, column: int, batch_size: int = 16
             ) -> tuple[np.ndarray, tuple[int, int]]:
    """((N, H, W) maps in [0, 1], the feature map's (h, w)): Grad-CAM (Selvaraju et al. 2017) of output
    `column` for uint8 `faces`. Channel weights are the spatial mean of d output / d last feature map;
    the map is ReLU(sum_k w_k A_k), scaled to [0, 1] per image and upsampled bilinearly to the input.
    """
    model, maps, grid = exported.model, [], (0, 0)
    for start in range(0, len(faces), batch_size):
        x = exported.pipe(faces[start:start + batch_size])
        with torch.enable_grad():
            features = model.forward_features(x)
            if features.ndim != 4:
                raise UserError(f"--explain needs a convolutional feature map; {exported.cfg.model.name} gives "
                                f"shape {tuple(features.shape)}")
            logits = model.forward_head(features)
            # Each image's output depends on its own features only (eval mode), so one backward of the
            # sum gives every image its own gradient.
            grads, = torch.autograd.grad(logits[:, column].sum(), features)
        grid = tuple(features.shape[-2:])
        weights = grads.mean(dim=(2, 3), keepdim=True)
        cam = F.relu((weights * features).sum(dim=1, keepdim=True)).detach().float()
        # Scaled at the feature map's own resolution: bilinear upsampling keeps [0, 1], and a flat map
        # (e.g. 1x1 at small inputs) stays flat instead of amplifying rounding noise.
        low = cam.amin(dim=(2, 3), keepdim=True)
        spread = cam.amax(dim=(2, 3), keepdim=True) - low
        cam = torch.where(spread > 0, (cam - low) / spread.clamp_min(1e-30), (cam > 0).float())
        cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        maps.append(cam.clamp(0, 1).cpu().numpy())
    return (np.concatenate(maps) if maps else np.zeros((0,) + tuple(faces.shape[-2:]), np.float32)), grid
