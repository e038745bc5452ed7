"""Build a backbone by name through timm, with the task's output head.

Every backbone family of the seeds is a timm name (SE/SK/GC-ResNet, DenseNet, EfficientNet,
ResNet); CBAM is a ResNet with `model.attn_layer=cbam`. Models timm lacks (MobileFaceNet) are
registered into timm elsewhere, so that this module never needs an `if name == ...` chain.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import timm
import torch
from torch import nn

from trainables.config import ModelConfig
from trainables.errors import UserError
import trainables.models.cbam  # noqa: F401  (registers our backbones into timm)


def check_model_name(name: str) -> None:
    """Raise a one-line UserError for a name timm does not know, with the closest known names."""
    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=4, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else "see timm.list_models() for the known names"
    raise UserError(f"unknown backbone '{name}' (model.name): {hint}")


def build_model(cfg: ModelConfig, num_outputs: int) -> nn.Module:
    """A timm model with a fresh `num_outputs` head; local weights are loaded when given."""
    check_model_name(cfg.name)
    kwargs: dict = {"num_classes": num_outputs, "drop_rate": cfg.drop_rate}
    if cfg.attn_layer:
        kwargs["block_args"] = {"attn_layer": cfg.attn_layer}
    if cfg.pretrained and not cfg.weights:
        raise UserError(
            "model.pretrained=true needs a local weights file: weights cannot be downloaded here; "
            "set model.weights=/path/to/file.safetensors"
        )
    try:
        model = timm.create_model(cfg.name, pretrained=False, **kwargs)
    except TypeError as err:
        raise UserError(f"backbone '{cfg.name}' does not accept {sorted(kwargs)}: {err}") from None
    if cfg.weights:
        load_backbone_weights(model, cfg.weights)
    return model


def load_backbone_weights(model: nn.Module, path: str) -> None:
    """Load a local checkpoint safely (safetensors, or torch.load with weights_only), skipping the head."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError(f"model.weights file not found: {file}: give the path of a .safetensors or .pth file")
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(file))
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
            state = state.get("state_dict", state) if isinstance(state, dict) else state
    except Exception as err:  # a corrupt or foreign file: the user must fix the path
        raise UserError(f"cannot read model.weights {file}: {err.__class__.__name__}: {err}") from None
    own = model.state_dict()
    compatible = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not compatible:
        raise UserError(f"model.weights {file} has no tensors matching backbone {type(model).__name__}")
    model.load_state_dict(compatible, strict=False)


def input_normalization(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean and std the backbone expects, from timm's data config."""
    data_cfg = timm.data.resolve_data_config({}, model=model)
    return tuple(data_cfg["mean"]), tuple(data_cfg["std"])
