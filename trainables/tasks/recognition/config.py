"""The config sections only the face-recognition task reads: `head` and `eval`."""

from __future__ import annotations

from dataclasses import dataclass

from trainables.config_fields import bounded, helped, path
from trainables.config_sections import EvalConfig as SharedEvalConfig


@dataclass
class HeadConfig:
    """The margin head over L2-normalised embeddings (seed 004)."""
    name: str = helped("arcface", "the margin head: softmax | arcface | cosface | combined")
    s: float = bounded(64.0, above=0, help="scale of the cosine logits (seed 004: 64)")
    m: float = bounded(0.5, at_least=0, help="arcface's angular margin / cosface's cosine margin (seed 004: 0.5)")
    m1: float = bounded(1.0, above=0, help="combined: the angle's factor in cos(m1*theta + m2) - m3")
    m2: float = bounded(0.3, at_least=0, help="combined: the angular margin in cos(m1*theta + m2) - m3")
    m3: float = bounded(0.2, at_least=0, help="combined: the cosine margin in cos(m1*theta + m2) - m3")
    easy_margin: bool = helped(False, "arcface: apply the margin only where cos(theta) > 0")
    embedding_size: int = bounded(128, at_least=1, help="length of the face embedding")
    label_smoothing: float = bounded(0.0, at_least=0, below=1, help="label smoothing of the identity loss")
    focal_gamma: float = bounded(0.0, at_least=0, note="0 disables focal", help="focal exponent on the identity "
                                                                                 "loss")
    center_lambda: float = bounded(0.0, at_least=0, note="0 disables center loss", help="weight of center loss "
                                                                                         "beside the margin loss")
    center_lr: float = bounded(0.5, above=0, help="the class centers' own learning rate")


@dataclass
class EvalConfig(SharedEvalConfig):
    # faces_emore ships lfw.bin, cfp_fp.bin, agedb_30.bin beside train.rec.
    targets: list = path([], help="verification sets: LFW folders, InsightFace .bin files or folders of them, or "
                                  "prepared pair shards; empty: the training data's own pair sets, else the demo pairs")
