"""What `export`, `predict` and `serve` show for a face-recognition model: embeddings, and for two photos their
cosine similarity and same/different at the threshold from the trial's verification results.

The exported model is the trial's `EmbeddingNet` wrapped as verification uses it (verification.py): the
embedding of a face plus that of its horizontal flip, L2-normalised. Its outputs are that unit vector, so the
dot product of two photos' outputs is their cosine similarity, and the squared L2 distance verification
thresholds is 2 - 2 cos. `verification_threshold.json` (written beside each checkpoint, copied by `export`)
holds the pooled best-accuracy distance threshold t and its similarity form 1 - t / 2.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from trainables import artifacts
from trainables.errors import UserError
from trainables.tasks import Reader, TaskOutputs

EMBEDDING = "embedding/"


class FlipSummedEmbedding(nn.Module):
    """forward(x) -> L2-normalise(net(x) + net(flip(x))): the embedding verification compares."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    @property
    def pretrained_cfg(self) -> dict:  # the backbone's mean and std, for input_normalization
        return self.net.pretrained_cfg

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.with_features(x)[0]

    def with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(forward(x), the last feature map of x, that of its mirror image): the embedding, with the maps it is
        computed from, for Grad-CAM."""
        plain, mirrored = self.net.forward_features(x), self.net.forward_features(torch.flip(x, dims=[3]))
        return F.normalize(self.net.forward_head(plain) + self.net.forward_head(mirrored), dim=1), plain, mirrored


def load_model(cfg, state: dict) -> nn.Module:
    """The trial's embedding network (without downloading any pretrained weights) with the saved state."""
    from trainables.models.embedding import EmbeddingNet

    kwargs = {"block_args": {"attn_layer": cfg.model.attn_layer}} if cfg.model.attn_layer else {}
    net = EmbeddingNet(cfg.model.name, cfg.head.embedding_size, cfg.model.drop_rate, **kwargs)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0][:200]
        raise UserError(f"the saved weights do not fit embedding network {cfg.model.name} with embedding_size "
                        f"{cfg.head.embedding_size} ({first}): export the run again") from None
    return FlipSummedEmbedding(net).eval()


def output_names(cfg, read: Reader) -> dict:
    return {"outputs": [f"{EMBEDDING}{i}" for i in range(cfg.head.embedding_size)]}


def describe(outputs: np.ndarray, exported, strategy: str) -> pd.DataFrame:
    """One column per embedding dimension: each photo's unit-length embedding, as predictions.csv holds it."""
    values = np.asarray(outputs, dtype=np.float32)
    return pd.DataFrame({name: values[:, k] for k, name in enumerate(exported.output_names)})


def decision(exported) -> dict:
    """verification_threshold.json of the export; a UserError naming the fix when the export has none."""
    path = exported.folder / artifacts.VERIFICATION_THRESHOLD
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        raise UserError(f"{exported.folder} has no readable {artifacts.VERIFICATION_THRESHOLD}, so two faces cannot "
                        "be called the same person: export a checkpoint of a recognition trial that verified "
                        "(orchestrator export --run RUN_ID)") from None


def compare(exported, a: np.ndarray, b: np.ndarray) -> dict:
    """Two photos' outputs -> their cosine similarity, and same when it is above the exported similarity
    threshold (exactly when their squared L2 distance is below the verification threshold)."""
    rule = decision(exported)
    left, right = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    similarity = float(left @ right / max(np.linalg.norm(left) * np.linalg.norm(right), 1e-12))
    same = similarity > float(rule["similarity"])
    return {"similarity": similarity, "same": same, "threshold": float(rule["similarity"]),
            "target": rule["target"], "sections": [{"title": "pair", "items": [
                {"name": "cosine similarity", "score": similarity,
                 "decision": "same person" if same else "different people"}]}]}


def explain_pair(model: FlipSummedEmbedding, x: torch.Tensor, others: torch.Tensor) -> tuple[torch.Tensor, list]:
    """Per photo, the cosine similarity `compare` decides by, of its embedding to the other photo's (`others`, held
    fixed), differentiable through the whole embedding; and both passes' feature maps, the mirror image's marked.
    Both, because the embedding is the sum of both passes: the map (`inference.explain`) averages the photo's own
    pass's map with the mirrored pass's flipped back, so it shows all the evidence the similarity rests on; the
    unflipped pass alone would show half of it and miss what the mirrored pass finds."""
    embedding, plain, mirrored = model.with_features(x)
    return (embedding * F.normalize(others.detach(), dim=1)).sum(dim=1), [(plain, False), (mirrored, True)]


def present(row: pd.Series, scores: dict) -> list[dict]:
    return [{"title": "embedding", "items": [
        {"name": "embedding size", "score": float(len(scores)), "decision": "send two photos to compare them"}]}]


def card_lines(strategies: list[str], strategy: str) -> list[str]:
    return [f"- **Outputs:** a unit-length face embedding (the embedding of the face plus that of its mirror "
            f"image, L2-normalised, as verification computed it); `predict` writes it per photo. Two photos are the "
            f"same person when the cosine similarity of their embeddings is above the threshold in "
            f"{artifacts.VERIFICATION_THRESHOLD} (the best-accuracy threshold on the trial's verification pairs)."]


RECOGNITION_OUTPUTS = TaskOutputs(
    card_metrics=lambda strategy: ["val/mean_verification_accuracy"],
    output_names=output_names, describe=describe, captions=lambda row: [],
    export_files=(artifacts.VERIFICATION_THRESHOLD,), card_lines=card_lines, present=present,
    load_model=load_model, compare=compare, explain_pair=explain_pair,
)
