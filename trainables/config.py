"""Typed trial configuration: the dotted-key machinery and the sections every task reads.

A trial's config travels as a flat dict of dotted keys (`model.name`, `optim.lr`, ...): the same keys
appear in sweep files, in `--set` overrides, in these dataclasses and as MLflow params. Every default
lives in its dataclass. A config holds the shared sections (`model`, `optim`, `data`) and exactly the
sections its task declares (e.g. `loss` and `eval` for attributes, `head` and `eval` for recognition),
so a key of a section the task does not read is an error, not a silently ignored value.

Fields marked `path()` hold file or folder paths; the driver makes them absolute (or URIs) once,
before any trial sees them, because a trial's working directory is not the driver's.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from trainables.errors import UserError

DEFAULT_TASK = "attributes"


def path(default: Any = "", **kwargs):
    """A dataclass field that holds a path (or a list of them)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"path": True}, **kwargs)
    return field(default=default, metadata={"path": True}, **kwargs)


@dataclass
class ModelConfig:
    name: str = "resnet18"           # any timm model name (or one we register, e.g. mobilefacenet)
    pretrained: bool = False         # timm's pretrained weights, from the Hugging Face cache (HF_HOME; never downloaded)
    weights: str = path()            # a local .safetensors / .pth file, or local-dir:/folder (timm's layout); used instead of pretrained
    drop_rate: float = 0.0
    attn_layer: str = ""             # timm block attention for ResNets, e.g. "cbam" (CBAM-ResNet)
    channels_last: bool = True       # used on GPU only


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
    root: str = path()               # empty: the task's demo set; else a raw dataset folder, a prepared one, or a URI
    format: str = ""                 # the raw layout of `root`; empty: detected from its files
    image_size: int = 64
    augment: list = field(default_factory=lambda: ["hflip"])
    demo_images: int = 4000          # size of the synthetic demo set
    cache_dir: str = path()          # demo sets and prepared shards; empty: $FACE_ORCHESTRATOR_CACHE or ~/.cache/face-orchestrator
    max_train_images: int = 0        # 0: all; a cap for smoke runs on real data


SHARED_SECTIONS: dict[str, type] = {"model": ModelConfig, "optim": OptimConfig, "data": DataConfig}
SCALARS: dict[str, type] = {"task": str, "seed": int}


def task_sections(task: str) -> dict[str, type]:
    """Every section a config of `task` holds: the shared ones, then the task's own."""
    from trainables.tasks import get_task  # the task registry imports this module

    return {**SHARED_SECTIONS, **get_task(task).sections}


def all_sections() -> dict[str, list[str]]:
    """Section name -> the tasks that read it (for telling a foreign section from a typo)."""
    from trainables.tasks import TASKS

    out: dict[str, list[str]] = {name: list(TASKS.names()) for name in SHARED_SECTIONS}
    for name, task in TASKS.items():
        for section in task.sections:
            out.setdefault(section, []).append(name)
    return out


class TrainConfig:
    """A trial's config: its task, its seed, and exactly the sections that task reads (as attributes:
    `cfg.model.name`, `cfg.loss.gamma`)."""

    def __init__(self, task: str = DEFAULT_TASK, seed: int = 0, **sections: Any):
        classes = task_sections(task)
        for name in sections:
            if name not in classes:
                raise foreign_section_error(f"{name}.*", task, classes)
        self.task, self.seed = task, seed
        self.sections = {name: sections.get(name) or cls() for name, cls in classes.items()}

    def __getattr__(self, name: str):
        sections = self.__dict__.get("sections", {})
        if name in sections:
            return sections[name]
        raise AttributeError(f"task {self.__dict__.get('task')!r} has no config section {name!r}")

    def __eq__(self, other) -> bool:
        return isinstance(other, TrainConfig) and self.to_flat_dict() == other.to_flat_dict()

    def __repr__(self) -> str:
        return f"TrainConfig({self.to_flat_dict()!r})"

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> "TrainConfig":
        """Build from flat dotted keys or nested dicts; unknown keys, keys of sections the task does not
        read, and bad types are UserErrors."""
        flat = flatten(config)
        task = coerce("task", flat.pop("task", DEFAULT_TASK), str)
        classes = task_sections(task)
        seed = coerce("seed", flat.pop("seed", 0), int)
        values: dict[str, dict[str, Any]] = {}
        for key, value in flat.items():
            section, _, name = key.partition(".")
            if not name:
                raise unknown_key_error(key, task)
            if section not in classes:
                raise foreign_section_error(key, task, classes)
            values.setdefault(section, {})[name] = value
        built = {name: _build(section_cls, values.get(name, {}), name + ".", task)
                 for name, section_cls in classes.items()}
        return cls(task, seed, **built)

    def to_flat_dict(self) -> dict[str, Any]:
        return {"task": self.task, "seed": self.seed,
                **flatten({name: dataclasses.asdict(section) for name, section in self.sections.items()})}


def known_keys(task: str = DEFAULT_TASK) -> list[str]:
    """Every dotted key a config of `task` accepts, in declaration order."""
    return list(TrainConfig(task).to_flat_dict())


def key_type(key: str, task: str = DEFAULT_TASK) -> Any:
    """The declared type of a dotted key for `task` (for parsing `--set`)."""
    if key in SCALARS:
        return SCALARS[key]
    section, _, name = key.partition(".")
    classes = task_sections(task)
    if name and section not in classes:
        raise foreign_section_error(key, task, classes)
    section_cls = classes.get(section)
    if section_cls is None or name not in typing.get_type_hints(section_cls):
        raise unknown_key_error(key, task)
    return _field_type(section_cls, name, task)


def path_keys(task: str = DEFAULT_TASK) -> list[str]:
    """The dotted keys whose values are paths, which the driver makes absolute."""
    return [f"{name}.{f.name}" for name, cls in task_sections(task).items()
            for f in dataclasses.fields(cls) if f.metadata.get("path")]


def absolute(value: Any) -> Any:
    """A path made absolute against the driver's working directory; URIs and "" unchanged."""
    if isinstance(value, (list, tuple)):
        return [absolute(v) for v in value]
    if not isinstance(value, str) or not value or "://" in value:
        return value
    if value.startswith("local-dir:"):  # timm's folder scheme (models/weights.py): the folder after it is the path
        return "local-dir:" + absolute(value[len("local-dir:"):])
    return os.path.abspath(os.path.expanduser(value))


def unknown_key_error(key: str, task: str = DEFAULT_TASK) -> UserError:
    close = difflib.get_close_matches(key, known_keys(task), n=3)
    hint = (f"did you mean {', '.join(close)}?" if close
            else f"run `python -m orchestrator list --keys` for the keys of each task")
    return UserError(f"unknown config key '{key}' for task '{task}': {hint}")


def foreign_section_error(key: str, task: str, classes: dict[str, type]) -> UserError:
    section = key.partition(".")[0]
    readers = all_sections().get(section)
    if not readers:
        return unknown_key_error(key, task)
    return UserError(f"config key '{key}' belongs to the '{section}' section, which task '{task}' does not read "
                     f"(only {', '.join(readers)} do); task '{task}' reads {', '.join(classes)}: remove the key "
                     f"or run a sweep of another task")


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


def _build(section_cls: type, values: dict[str, Any], prefix: str, task: str) -> Any:
    names = {f.name for f in dataclasses.fields(section_cls)}
    for key in values:
        if key not in names:
            raise unknown_key_error(prefix + key, task)
    return section_cls(**{k: coerce(prefix + k, v, _field_type(section_cls, k, task)) for k, v in values.items()})


def _field_type(cls: type, name: str, task: str) -> Any:
    hints = typing.get_type_hints(cls)
    if name not in hints:
        raise unknown_key_error(name, task)
    typ = hints[name]
    if isinstance(typ, types.UnionType):
        typ = next(t for t in typing.get_args(typ) if t is not type(None))
    return typ
