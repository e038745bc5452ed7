"""Build a backbone by name through timm, with the task's output head.

Every backbone family of the seeds is a timm name (SE/SK/GC-ResNet, DenseNet, EfficientNet,
ResNet); CBAM is a ResNet with `model.attn_layer=cbam`. Models timm lacks (MobileFaceNet) are
registered into timm elsewhere, so that this module never needs an `if name == ...` chain.
Where a model's starting weights are, and how they are loaded, is `weights.py`'s to say.
"""

from __future__ import annotations

import difflib

import timm
from torch import nn

from trainables.config_sections import ModelConfig
from trainables.errors import UserError
from trainables.models import weights
from trainables.timing import phase
import trainables.models.cbam  # noqa: F401  (registers our backbones into timm)


def check_model_name(name: str) -> None:
    """Raise a one-line UserError for a name timm does not know, with the closest known names."""
    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=4, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else "see timm.list_models() for the known names"
    raise UserError(f"unknown backbone '{name}' (model.name): {hint}")


def build_model(cfg: ModelConfig, num_outputs: int) -> nn.Module:
    """A timm model with a fresh `num_outputs` head, started from the weights the config names
    (timm's pretrained ones from the Hugging Face cache, a local file, or a local-dir: folder)."""
    check_model_name(cfg.name)
    kwargs: dict = {"num_classes": num_outputs, "drop_rate": cfg.drop_rate}
    if cfg.attn_layer:
        kwargs["block_args"] = {"attn_layer": cfg.attn_layer}
    found = weights.locate(cfg)  # before building: missing weights fail before any model is made
    with phase("model_build"):
        try:
            model = timm.create_model(cfg.name, pretrained=False, **kwargs)
        except TypeError as err:
            raise UserError(f"backbone '{cfg.name}' does not accept {sorted(kwargs)}: {err}") from None
        if found is not None:
            weights.load(model, found)
    return model


def load_backbone_weights(model: nn.Module, path: str) -> weights.LoadReport:
    """Load a local file (.safetensors / .pth) or a `local-dir:` folder into a timm model: only its
    classifier may differ; a missing backbone tensor is a UserError. Returns what was not loaded."""
    architecture = (getattr(model, "pretrained_cfg", None) or {}).get("architecture") or type(model).__name__
    return weights.load(model, weights.locate(ModelConfig(name=architecture, weights=path)))


def input_normalization(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean and std the backbone expects, from timm's data config."""
    data_cfg = timm.data.resolve_data_config({}, model=model)
    return tuple(data_cfg["mean"]), tuple(data_cfg["std"])
