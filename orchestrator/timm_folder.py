"""An export folder's `config.json` in timm's own schema, written by timm, and the proof that it loads.

timm's `save_config_for_hf` (what `push_to_hub` writes) records the architecture, num_classes, the
label names, the reconstruction arguments (e.g. `block_args` for a ResNet with CBAM) and a
pretrained_cfg with the preprocessing. Here that preprocessing is the trial's evaluation's: a squash
resize (bilinear) to data.image_size, scaled to [0, 1], normalised with the backbone's mean and std.
The folder counts as loadable only when `timm.create_model("local-dir:FOLDER", pretrained=True)`
rebuilds the model and gives the same outputs; otherwise no config.json is left behind, since a
config that loads the wrong network is worse than none.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from trainables.artifacts import TIMM_CONFIG


@dataclass
class TimmLoad:
    ok: bool
    needs_import: str = ""    # a module that registers the architecture, when plain timm lacks it
    reason: str = ""          # why timm cannot rebuild it, when not ok


def write_timm_config(model: nn.Module, folder: Path, image_size: int, label_names: list[str]) -> TimmLoad:
    """Write folder/config.json (the weights must already be there) and check timm rebuilds the model."""
    import timm
    from timm.models import model_entrypoint
    from timm.models._hub import save_config_for_hf  # the writer behind timm's push_to_hf_hub

    path = folder / TIMM_CONFIG
    data_config = {"input_size": (3, image_size, image_size), "crop_pct": 1.0, "crop_mode": "squash",
                   "interpolation": "bilinear"}
    # The architecture's default cfg describes timm's ImageNet weights (tag, licence, paper); these are not those.
    unrelated = dict.fromkeys(("tag", "license", "description", "origin_url", "paper_name", "paper_ids", "notes"))
    try:
        save_config_for_hf(model, str(path), data_config=data_config,
                           model_config={"label_names": list(label_names), "pretrained_cfg": unrelated})
        loaded = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
        reason = _differs(model, loaded, image_size)
    except Exception as err:  # any model timm cannot describe or rebuild: the folder still serves predict
        reason = f"{type(err).__name__}: {' '.join(str(err).split())[:160]}"  # torch's load errors span lines
    if reason:
        path.unlink(missing_ok=True)
        return TimmLoad(False, reason=reason)
    module = model_entrypoint(loaded.pretrained_cfg["architecture"]).__module__
    return TimmLoad(True, needs_import="" if module.startswith("timm.") else module)


def _differs(model: nn.Module, loaded: nn.Module, image_size: int) -> str:
    """"" when `loaded` is `model` for a user of timm: same outputs, same preprocessing; else what differs."""
    from trainables.models import input_normalization

    if input_normalization(loaded) != input_normalization(model):
        return f"timm would normalise with {input_normalization(loaded)}, the trial with {input_normalization(model)}"
    x = torch.randn(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = model.eval()(x), loaded(x)
    if ours.shape != theirs.shape or not torch.allclose(ours, theirs, rtol=1e-4, atol=1e-5):
        architecture = loaded.pretrained_cfg.get("architecture")
        return f"timm rebuilds {type(loaded).__name__} {architecture}, whose outputs differ"
    return ""
