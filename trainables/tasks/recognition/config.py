"""The config sections only the face-recognition task reads: `head` and `eval`."""

from __future__ import annotations

from dataclasses import dataclass

from trainables.config import bounded, path


@dataclass
class HeadConfig:
    """The margin head over L2-normalised embeddings (seed 004)."""
    name: str = "arcface"            # softmax | arcface | cosface | combined
    s: float = bounded(64.0, above=0)            # the logits' scale
    m: float = bounded(0.5, at_least=0)          # arcface's angular / cosface's cosine margin
    m1: float = bounded(1.0, above=0)            # combined margin cos(m1*theta + m2) - m3
    m2: float = bounded(0.3, at_least=0)
    m3: float = bounded(0.2, at_least=0)
    easy_margin: bool = False
    embedding_size: int = bounded(128, at_least=1)
    label_smoothing: float = bounded(0.0, at_least=0, below=1)
    focal_gamma: float = bounded(0.0, at_least=0, note="0 disables focal")
    center_lambda: float = bounded(0.0, at_least=0, note="0 disables center loss")
    center_lr: float = bounded(0.5, above=0)     # the centers' own learning rate


@dataclass
class EvalConfig:
    # Verification sets: LFW folders, InsightFace .bin files or folders of them, or prepared pair shards.
    # Empty: the pair splits of the training data (faces_emore ships lfw.bin ... beside train.rec), else the demo pairs.
    targets: list = path([])
