"""A Hugging Face hub cache laid out as huggingface_hub writes it, and timm reads it, for tests.

`hf download timm/resnet18.a1_in1k` leaves, under the hub cache (`$HF_HUB_CACHE`, else `$HF_HOME/hub`):

    models--timm--resnet18.a1_in1k/
        blobs/<sha256>                                   the files' bytes
        refs/main                                        the commit that `main` names
        snapshots/<commit>/config.json -> ../../blobs/…  timm's config (architecture, num_classes, pretrained_cfg)
        snapshots/<commit>/model.safetensors -> ../../blobs/…

The repo's files are written by timm's own `save_for_hf` (what `push_to_hf_hub` uploads) from a model
whose every float tensor, BatchNorm statistics included, is random, so that a loaded value can only
have come from the file.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import timm
import torch

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def random_weights(name: str, seed: int = 0, **kwargs) -> torch.nn.Module:
    """timm's `name` with every float tensor drawn from U(0.5, 1.5) (positive: valid BN variances)."""
    model = timm.create_model(name, **kwargs)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
    return model


def write_hub_repo(cache: Path, repo: str, model: torch.nn.Module, commit: str = COMMIT) -> dict[str, torch.Tensor]:
    """Put `model` into `cache` as the hub repo `repo` (e.g. timm/resnet18.a1_in1k); returns its tensors."""
    from timm.models import save_for_hf

    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "blobs").mkdir(parents=True, exist_ok=True)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(commit)
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        save_for_hf(model, tmp, safe_serialization=True)
        for file in sorted(Path(tmp).iterdir()):
            data = file.read_bytes()
            blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
            blob.write_bytes(data)
            (snapshot / file.name).symlink_to(Path("..", "..", "blobs", blob.name))
    return {k: v.clone() for k, v in model.state_dict().items()}
