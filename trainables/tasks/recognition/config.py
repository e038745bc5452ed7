"""The config sections only the face-recognition task reads: `head` and `eval`."""

from __future__ import annotations

from dataclasses import dataclass

from trainables.config import path


@dataclass
class HeadConfig:
    """The margin head over L2-normalised embeddings (seed 004)."""
    name: str = "arcface"            # softmax | arcface | cosface | combined
    s: float = 64.0
    m: float = 0.5
    m1: float = 1.0                  # combined margin cos(m1*theta + m2) - m3
    m2: float = 0.3
    m3: float = 0.2
    easy_margin: bool = False
    embedding_size: int = 128
    label_smoothing: float = 0.0
    focal_gamma: float = 0.0         # 0 disables focal
    center_lambda: float = 0.0       # 0 disables center loss
    center_lr: float = 0.5


@dataclass
class EvalConfig:
    # Verification sets: LFW folders, InsightFace .bin files or folders of them, or prepared pair shards.
    # Empty: the pair splits of the training data (faces_emore ships lfw.bin ... beside train.rec), else the demo pairs.
    targets: list = path([])
