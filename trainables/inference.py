"""Predicting with an exported model: safe loading, evaluation's exact preprocessing, Grad-CAM.

An export folder (written by `orchestrator export`) holds `trial_config.json` (the trial's flat
config, which the model is rebuilt from), `model.safetensors`, `labels.json` ({"outputs": names in
model output order, ...}), the files its task declares (`TaskOutputs.export_files`, such as its decision
rules) and, where timm can rebuild the model, timm's own `config.json` (not read here). Loading never
unpickles anything. Images go through the same decoder, `InputPipe` and `loop.predict` as the trial's
evaluation, so a label here is the label the trial's own evaluation gave the same image.

What differs between tasks (the output names, how raw outputs become a table and a caption) is the
task's to say (`Task.outputs`); this module names no task.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from trainables import artifacts
from trainables.config import TrainConfig
from trainables.data.decode import decode_shard_image
from trainables.errors import UserError
from trainables.loop import InputPipe, predict
from trainables.models import build_model, input_normalization
from trainables.tasks import TASKS, TaskOutputs, get_task

MODEL_FILE, CONFIG_FILE = artifacts.EXPORT_WEIGHTS, artifacts.EXPORT_CONFIG
LEGACY_CONFIG_FILE = artifacts.TIMM_CONFIG  # folders exported before timm's schema kept the trial's config here
LABELS_FILE = artifacts.EXPORT_LABELS
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

def task_outputs(task: str, command: str) -> TaskOutputs:
    """What `command` (export or predict) needs of `task`; a task whose model outputs no labels has none."""
    outputs = get_task(task).outputs
    if outputs is None:
        usable = [name for name, t in TASKS.items() if t.outputs is not None]
        raise UserError(f"`{command}` supports the tasks {', '.join(usable)}, not '{task}' "
                        "(its models have no outputs to export)")
    return outputs


# ---- loading -------------------------------------------------------------------------------------

def model_from_state(cfg: TrainConfig, state: dict[str, torch.Tensor]) -> nn.Module:
    """The config's backbone with the saved weights; its output count comes from the saved head. A task may
    say which model its weights load into (`TaskOutputs.load_model`)."""
    # The saved state replaces every weight, and model.weights may name a file only the trial's node has.
    model_cfg = dataclasses.replace(cfg.model, weights="", pretrained=False)
    load = task_outputs(cfg.task, "predict").load_model
    if load is not None:
        return load(cfg, state).eval()  # which builds no pretrained weights
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
    rules: dict                       # the task's decision rules by name (`TaskOutputs.decisions`); {} if none
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


def _legacy_config(folder: Path) -> dict | None:
    """The trial's flat config from an older export's config.json; None where that file is timm's (or absent)."""
    path = folder / LEGACY_CONFIG_FILE
    if not path.is_file():
        return None
    config = _read_json(path, "config")
    return config if isinstance(config, dict) and "architecture" not in config and "model.name" in config else None


def load_exported(folder, device: str | None = None) -> ExportedModel:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder).expanduser()
    missing = [name for name in (CONFIG_FILE, MODEL_FILE, LABELS_FILE) if not (folder / name).is_file()]
    legacy = _legacy_config(folder) if missing == [CONFIG_FILE] else None
    if missing and legacy is None:
        raise UserError(f"{folder} is not an exported model (missing {', '.join(missing)}): "
                        "pass --model a folder written by `orchestrator export`")
    cfg = TrainConfig.from_dict(legacy if legacy is not None else _read_json(folder / CONFIG_FILE, "config"))
    outputs = task_outputs(cfg.task, "predict")
    try:
        state = load_file(str(folder / MODEL_FILE))
    except (SafetensorError, OSError, ValueError) as err:
        raise UserError(f"cannot read {folder / MODEL_FILE} ({err}): export the model again") from None
    model = model_from_state(cfg, state)
    labels = _read_json(folder / LABELS_FILE, "labels")
    rules = outputs.decisions.rules(lambda name: read_file(folder / name)) if outputs.decisions else {}
    try:
        torch_device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError as err:
        raise UserError(f"unknown device '{device}' ({err}): pass --device cpu or cuda") from None
    if torch_device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda, but this machine has no usable CUDA GPU: pass --device cpu")
    model = model.to(torch_device)
    return ExportedModel(folder, cfg, model, labels, rules,
                         InputPipe(torch_device, *input_normalization(model)), outputs)


def read_file(path: Path) -> bytes | None:
    """A file's bytes; None where there is none."""
    return path.read_bytes() if path.is_file() else None


def choose_decision(exported: ExportedModel, requested: str | None) -> str:
    """The named decision to label with (`--decision`): the requested one, which the task checks against the
    export's rules, else the task's default; "" for a model whose task makes no named decisions."""
    decisions = exported.outputs.decisions
    if decisions is None:
        if requested:
            raise UserError(f"--decision {requested}: a {exported.cfg.task} model makes no named decisions; "
                            "leave --decision out")
        return ""
    return decisions.choose(list(exported.rules), requested, str(exported.folder / decisions.file))


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
    return decode_shard_image(data, exported.cfg.data.image_size, str(path))  # as evaluation decodes


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
    loader = DataLoader(images, batch_size=batch_size, shuffle=False, num_workers=0)
    outputs, ok = predict(exported.model, loader, exported.pipe)
    ok = ok.astype(bool).reshape(-1) if len(paths) else np.zeros(0, bool)
    failed = {paths[i]: reason for i, reason in sorted(images.errors.items())}
    return outputs[ok], [p for p, good in zip(paths, ok) if good], failed


def decode_bytes(exported: ExportedModel, data: bytes, name: str, fix: str) -> torch.Tensor:
    """(3, size, size) uint8 from an encoded image (an upload), decoded as `decode_file` does; else a
    UserError ending with `fix`, what the sender can do."""
    return decode_shard_image(data, exported.cfg.data.image_size, name, fix=fix)


def predict_faces(exported: ExportedModel, faces: torch.Tensor) -> np.ndarray:
    """Raw outputs for (N, 3, H, W) uint8 faces, through the same `loop.predict` as `run_model`."""
    with torch.no_grad():
        outputs, _ = predict(exported.model, [(faces, torch.zeros(len(faces)))], exported.pipe)
    return outputs


def analyse(exported: ExportedModel, outputs: np.ndarray, decision: str) -> list[dict]:
    """Per image, what `serve` answers: `table` (the row predict writes to predictions.csv), `scores` (the
    served scores by output name, as the MLflow model gives them) and `sections` (the task's own display)."""
    from trainables.served import activate

    names = exported.output_names
    table = exported.outputs.describe(outputs, exported, decision)
    groups = exported.outputs.score_groups(exported.cfg, exported.labels)
    scores = activate(torch.from_numpy(np.asarray(outputs, dtype=np.float32)), groups).numpy()
    results = []
    # to_json of the whole table keeps each column's type (a label stays 0/1; iterrows would make it 0.0)
    for (_, row), record, values in zip(table.iterrows(), json.loads(table.to_json(orient="records")), scores):
        by_name = {name: float(v) for name, v in zip(names, values)}
        results.append({"table": record, "scores": by_name, "sections": exported.outputs.present(row, by_name)})
    return results


def load_faces(exported: ExportedModel, paths: list[Path], size: int | None = None) -> torch.Tensor:
    """(N, 3, size, size) uint8: what the model saw (decoded at another `size` if given)."""
    size = size or exported.cfg.data.image_size
    return torch.stack([decode_shard_image(p.read_bytes(), size, str(p)) for p in paths])


# ---- Grad-CAM ------------------------------------------------------------------------------------

def grad_cam(exported: ExportedModel, faces: torch.Tensor, column: int, batch_size: int = 16
             ) -> tuple[np.ndarray, tuple[int, int]]:
    """((N, H, W) maps in [0, 1], the feature map's (h, w)): Grad-CAM (Selvaraju et al. 2017) of output
    `column` for uint8 `faces`, as `explain` makes it from the model's last feature map."""
    model = exported.model

    def score(x: torch.Tensor, rows: slice):
        features = model.forward_features(x)
        return model.forward_head(features)[:, column], [(features, False)]

    return explain(exported, faces, score, batch_size)


def pair_grad_cam(exported: ExportedModel, faces: torch.Tensor, others: np.ndarray, batch_size: int = 16
                  ) -> tuple[np.ndarray, tuple[int, int]]:
    """As `grad_cam`, for a model that compares two photos (`TaskOutputs.compare`): Grad-CAM of each face's score
    against the other photo of its pair, whose raw outputs (`others`, a row per face) are held fixed. The task
    says what the score is and which feature maps it comes from (`TaskOutputs.explain_pair`)."""
    views = exported.outputs.explain_pair
    if views is None:
        raise UserError(f"a {exported.cfg.task} model compares two photos but has no Grad-CAM of their comparison")

    def score(x: torch.Tensor, rows: slice):
        other = torch.as_tensor(np.ascontiguousarray(others[rows]), dtype=x.dtype, device=x.device)
        return views(exported.model, x, other)

    return explain(exported, faces, score, batch_size)


def explain(exported: ExportedModel, faces: torch.Tensor, score, batch_size: int = 16
            ) -> tuple[np.ndarray, tuple[int, int]]:
    """((N, H, W) maps in [0, 1], the feature map's (h, w)): Grad-CAM of `score(x, rows)` -> (a score per image of
    the preprocessed batch x, faces[rows]; the feature maps [(A, mirrored)] it was computed from). For each map,
    the channel weights are the spatial mean of d score / d A and its map is sum_k w_k A_k; a map of a mirrored
    pass (the photo flipped left to right) is flipped back onto the photo, the passes' maps are averaged, and the
    ReLU of that average is scaled to [0, 1] per image and upsampled bilinearly to the input. With one unmirrored
    map this is Selvaraju et al.'s ReLU(sum_k w_k A_k); with a pass and its mirror, it is the positive part of
    the evidence both passes found at each place of the photo, so the whole score is explained, not half of it.
    """
    maps, grid = [], (0, 0)
    for start in range(0, len(faces), batch_size):
        rows = slice(start, start + batch_size)
        x = exported.pipe(faces[rows])
        with torch.enable_grad():
            scores, views = score(x, rows)
            for features, _ in views:
                if features.ndim != 4:
                    raise UserError(f"--explain needs a convolutional feature map; {exported.cfg.model.name} gives "
                                    f"shape {tuple(features.shape)}")
            # Each image's score depends on its own features only (eval mode), so one backward of the
            # sum gives every image its own gradient.
            grads = torch.autograd.grad(scores.sum(), [features for features, _ in views])
        grid = tuple(views[0][0].shape[-2:])
        raw = [(g.mean(dim=(2, 3), keepdim=True) * f).sum(dim=1, keepdim=True).detach().float()
               for g, (f, _) in zip(grads, views)]
        cam = F.relu(torch.stack([torch.flip(r, dims=[3]) if mirrored else r
                                  for r, (_, mirrored) in zip(raw, views)]).mean(dim=0))
        # Scaled at the feature map's own resolution: bilinear upsampling keeps [0, 1], and a flat map
        # (e.g. 1x1 at small inputs) stays flat instead of amplifying rounding noise.
        low = cam.amin(dim=(2, 3), keepdim=True)
        spread = cam.amax(dim=(2, 3), keepdim=True) - low
        cam = torch.where(spread > 0, (cam - low) / spread.clamp_min(1e-30), (cam > 0).float())
        cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        maps.append(cam.clamp(0, 1).cpu().numpy())
    return (np.concatenate(maps) if maps else np.zeros((0,) + tuple(faces.shape[-2:]), np.float32)), grid
