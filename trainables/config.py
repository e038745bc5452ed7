"""Typed trial configuration: the one place where every default lives.

A trial's config travels as a flat dict of dotted keys (`model.name`, `optim.lr`, ...): the same keys
appear in sweep files, in `--set` overrides, in these dataclasses and as MLflow params. `from_dict`
accepts that flat form (or nested dicts), rejects unknown keys, and coerces strings from the command
line to each field's declared type.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from trainables.errors import UserError


@dataclass
class ModelConfig:
    name: str = "resnet18"           # any timm model name (or one we register, e.g. mobilefacenet)
    pretrained: bool = False         # no hub downloads on our machines; use `weights` for a local file
    weights: str = ""                # path to a local .safetensors / .pth file of backbone weights
    drop_rate: float = 0.0
    attn_layer: str = ""             # timm block attention for ResNets, e.g. "cbam" (CBAM-ResNet)
    channels_last: bool = True       # used on GPU only


@dataclass
class LossConfig:
    name: str = "bce"
    pos_weight: bool = False         # bce: weight positives by (1-p)/p from the training priors
    alpha: float = -1.0              # focal: negative disables alpha balancing
    gamma: float = 2.0               # focal
    gamma_neg: float = 4.0           # asl
    gamma_pos: float = 0.0           # asl
    clip: float = 0.05               # asl


@dataclass
class OptimConfig:
    name: str = "adamw"              # any timm.optim optimizer name
    lr: float = 2e-3
    weight_decay: float = 0.05
    momentum: float = 0.9
    scheduler: str = "cosine"        # any timm.scheduler name
    warmup_epochs: int = 0
    epochs: int = 3
    batch_size: int = 64             # per worker
    grad_clip: float = 0.0           # 0 disables


@dataclass
class DataConfig:
    root: str = ""                   # empty: the synthetic demo set; else a CelebA root folder
    format: str = "celeba"
    image_size: int = 64
    augment: list = field(default_factory=lambda: ["hflip"])
    demo_images: int = 4000          # size of the synthetic demo set
    cache_dir: str = ""              # where the demo set is built; empty: ~/.cache/face-orchestrator
    max_train_images: int = 0        # 0: all; a cap for smoke runs on real data


@dataclass
class EvalConfig:
    threshold: float = 0.5           # the fixed decision threshold reported per epoch
    targets: list = field(default_factory=list)  # recognition: verification sets (LFW trees, .bin files); empty: demo pairs


@dataclass
class MultitaskConfig:
    """FairFace: how race, gender and age are learned together (seeds 000 and 001)."""
    formulation: str = "multihead"   # multihead: one head per task | onehot18: one 18-way sigmoid output (seed 000)
    weighting: str = "fixed"         # fixed: the weights below | uncertainty: learned log-variances (Kendall et al.)
    race_weight: float = 1.0
    gender_weight: float = 1.0
    age_weight: float = 1.0


@dataclass
class AgeConfig:
    mode: str = "bins"               # bins: 9-way cross-entropy | regression: L1 on the bin midpoint / scale
    scale: float = 80.0              # seed 001 divides ages by 80


@dataclass
class HeadConfig:
    """Face recognition: the margin head over L2-normalised embeddings (seed 004)."""
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
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    multitask: MultitaskConfig = field(default_factory=MultitaskConfig)
    age: AgeConfig = field(default_factory=AgeConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    task: str = "celeba_attributes"  # celeba_attributes | fairface | face_recognition
    seed: int = 0

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> "TrainConfig":
        """Build from flat dotted keys or nested dicts; unknown keys and bad types are UserErrors."""
        sections: dict[str, dict[str, Any]] = {}
        top: dict[str, Any] = {}
        for key, value in flatten(config).items():
            section, _, name = key.partition(".")
            if name:
                sections.setdefault(section, {})[name] = value
            else:
                top[key] = value
        kwargs: dict[str, Any] = {
            name: _build(section_cls, sections.pop(name, {}), prefix=name + ".")
            for name, section_cls in SECTIONS.items()
        }
        for name in [k for k in top if k not in SECTIONS and k in _scalar_fields()]:
            kwargs[name] = coerce(name, top.pop(name), _field_type(cls, name))
        leftovers = [f"{s}.{k}" for s, d in sections.items() for k in d] + list(top)
        if leftovers:
            raise unknown_key_error(leftovers[0])
        return cls(**kwargs)

    def to_flat_dict(self) -> dict[str, Any]:
        return flatten(dataclasses.asdict(self))


SECTIONS: dict[str, type] = {
    f.name: f.default_factory for f in dataclasses.fields(TrainConfig) if dataclasses.is_dataclass(f.default_factory)
}


def _scalar_fields() -> set[str]:
    return {f.name for f in dataclasses.fields(TrainConfig)} - set(SECTIONS)


def known_keys() -> list[str]:
    """Every dotted key a config accepts, in declaration order."""
    return list(TrainConfig().to_flat_dict())


def key_type(key: str) -> Any:
    """The declared type of a dotted key (for parsing `--set`)."""
    section, _, name = key.partition(".")
    if not name:
        if section not in _scalar_fields():
            raise unknown_key_error(key)
        return _field_type(TrainConfig, section)
    section_cls = SECTIONS.get(section)
    if section_cls is None or name not in typing.get_type_hints(section_cls):
        raise unknown_key_error(key)
    return _field_type(section_cls, name)


def unknown_key_error(key: str) -> UserError:
    close = difflib.get_close_matches(key, known_keys(), n=3)
    hint = f"did you mean {', '.join(close)}?" if close else "run `python -m orchestrator list --keys` for all keys"
    return UserError(f"unknown config key '{key}': {hint}")


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def coerce(key: str, value: Any, typ: Any) -> Any:
    """Convert `value` (often a string from the CLI) to `typ`, or raise a one-line UserError."""
    origin = typing.get_origin(typ) or typ
    try:
        if origin is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("true", "1", "yes", "on"):
                return True
            if text in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if origin is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value) if not isinstance(value, str) else int(value.strip())
        if origin is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if origin is list:
            if isinstance(value, (list, tuple)):
                return list(value)
            text = str(value).strip()
            if text.startswith("["):
                return list(json.loads(text))
            return [part for part in (p.strip() for p in text.split(",")) if part]
        if origin is str:
            if not isinstance(value, str):
                raise ValueError
            return value
    except (ValueError, TypeError, json.JSONDecodeError):
        pass
    else:
        return value
    name = getattr(origin, "__name__", str(typ))
    raise UserError(f"config key '{key}' expects {name}, got {value!r}: fix the value (e.g. --set {key}=...)")


def _build(section_cls: type, values: dict[str, Any], prefix: str) -> Any:
    names = {f.name for f in dataclasses.fields(section_cls)}
    for key in values:
        if key not in names:
            raise unknown_key_error(prefix + key)
    return section_cls(**{k: coerce(prefix + k, v, _field_type(section_cls, k)) for k, v in values.items()})


def _field_type(cls: type, name: str) -> Any:
    hints = typing.get_type_hints(cls)
    if name not in hints:
        raise unknown_key_error(name)
    typ = hints[name]
    if isinstance(typ, types.UnionType):
        typ = next(t for t in typing.get_args(typ) if t is not type(None))
    return typ
