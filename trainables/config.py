"""Typed trial configuration: the dotted-key machinery and the sections every task reads.

A trial's config travels as a flat dict of dotted keys (`model.name`, `optim.lr`, ...): the same keys
appear in sweep files, in `--set` overrides, in these dataclasses and as MLflow params. Every default
lives in its dataclass. A config holds the shared sections (`model`, `optim`, `data`) and exactly the
sections its task declares (e.g. `loss` and `eval` for attributes, `head` and `eval` for recognition),
so a key of a section the task does not read is an error, not a silently ignored value.

Fields marked `path()` hold file or folder paths; the driver makes them absolute (or URIs) once,
before any trial sees them, because a trial's working directory is not the driver's. Fields marked
`bounded()` declare their valid range beside their default; every float must be finite. Both are checked
whenever a config is built, so a sweep file, a `--set`, a built-in sweep and a worker all meet the same
one-line error instead of a NaN loss or a traceback inside every trial.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from trainables.errors import UserError
from trainables.registry import Registry


def path(default: Any = "", help: str = "", **kwargs):
    """A dataclass field that holds a path (or a list of them), with its one-line help."""
    metadata = {"path": True, **({"help": help} if help else {})}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata, **kwargs)
    return field(default=default, metadata=metadata, **kwargs)


def helped(default: Any, help: str, **metadata):
    """A dataclass field with its one-line help, shown by `list --keys`."""
    return field(default=default, metadata={"help": help, **metadata})


@dataclass(frozen=True)
class Range:
    """The values a numeric field accepts: `low`/`high` are None when unbounded on that side."""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    note: str = ""                   # what a special value means, e.g. "0 disables"

    def __contains__(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def __str__(self) -> str:
        if self.low is not None and self.high is not None:
            text = f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        elif self.low is not None:
            text = f"{'above' if self.low_open else 'at least'} {self.low:g}"
        else:
            text = f"{'below' if self.high_open else 'at most'} {self.high:g}"
        return f"{text} ({self.note})" if self.note else text


def bounded(default: float, *, at_least: float | None = None, above: float | None = None,
            at_most: float | None = None, below: float | None = None, note: str = "", help: str = ""):
    """A numeric dataclass field with its valid range, e.g. `bounded(0.9, at_least=0, below=1)` for [0, 1)."""
    low, high = (above if at_least is None else at_least), (below if at_most is None else at_most)
    valid = Range(low, high, low_open=above is not None, high_open=below is not None, note=note)
    return field(default=default, metadata={"range": valid, **({"help": help} if help else {})})


@dataclass
class ModelConfig:
    name: str = helped("resnet18", "any timm model name, or one registered here (mobilefacenet, cbam_resnet*)")
    pretrained: bool = helped(False, "start from timm's pretrained weights, read from the Hugging Face cache "
                                     "(HF_HOME; never downloaded)")
    weights: str = path(help="start from a local .safetensors / .pth file, or local-dir:/folder in timm's layout "
                             "(instead of pretrained)")
    drop_rate: float = bounded(0.0, at_least=0, below=1, help="dropout probability before the classifier")
    attn_layer: str = helped("", "timm's block attention for ResNets, e.g. cbam (CBAM-ResNet); empty: none")
    channels_last: bool = helped(True, "channels-last memory layout on a GPU (ignored on CPU)")
    freeze: str = helped("none", "none | backbone | stages:N (stem + first N stages): frozen parts get no "
                                 "gradient, no optimizer state, and keep their BatchNorm in eval mode")

    def check_relations(self, prefix: str) -> None:
        parse_freeze(self.freeze)


FREEZE_CHOICES = "none, backbone or stages:N (the stem and the first N stages, N >= 0)"


def parse_freeze(value: str) -> tuple[str, int]:
    """`model.freeze` as ("none" | "backbone" | "stages", N); a one-line UserError for anything else."""
    if value in ("none", "backbone"):
        return value, 0
    kind, _, count = value.partition(":")
    if kind == "stages" and count.strip().isdigit():
        return "stages", int(count)
    raise UserError(f"model.freeze={value!r} is not one of {FREEZE_CHOICES}: e.g. --set model.freeze=stages:2")


@dataclass
class OptimConfig:
    name: str = helped("adamw", "any timm.optim optimizer name (adamw, sgd, lamb, ...)")
    lr: float = bounded(2e-3, above=0, help="peak learning rate, reached after the warm-up")
    weight_decay: float = bounded(0.05, at_least=0, help="decoupled weight decay; never on norms, biases or a "
                                                         "model's no_weight_decay() tensors")
    # 1 would never forget a gradient
    momentum: float = bounded(0.9, at_least=0, below=1, help="momentum of sgd-style optimizers")
    scheduler: str = helped("cosine", "any timm.scheduler name: the learning rate's schedule over the epochs")
    warmup_epochs: int = bounded(0, at_least=0, help="epochs of linear warm-up to lr (at most optim.epochs)")
    epochs: int = bounded(3, at_least=1, help="epochs each trial trains (ASHA may stop it sooner)")
    batch_size: int = bounded(64, at_least=1, help="images per step on each DDP worker")
    grad_clip: float = bounded(0.0, at_least=0, note="0 disables", help="largest gradient norm; larger ones are "
                                                                         "scaled down")
    # Each fetch of the losses from the device is a host sync (trainables/loop.py).
    nan_check_every: int = bounded(50, at_least=1, help="steps between checks for a NaN or infinite loss; the "
                                                        "report still names the exact examples before it")
    ema: float = bounded(0.0, at_least=0, below=1, note="0: off", help="decay of an EMA of the weights (timm "
                         "ModelEmaV3), e.g. 0.999; when on, the EMA is what is evaluated, checkpointed and exported")
    patience: int = bounded(0, at_least=0, note="0: off", help="stop the trial when the sweep's metric has not "
                            "improved for this many evaluations; its best checkpoint is kept and exported")
    accum_steps: int = bounded(1, at_least=1, help="batches whose gradients are averaged into each optimizer step "
                               "(effective batch = batch_size x workers x accum_steps); DDP syncs on the last only")

    def check_relations(self, prefix: str) -> None:
        # Equal is allowed: a smoke mode's one epoch meets a searched warmup of 1, and still runs.
        if self.warmup_epochs > self.epochs:
            raise UserError(f"{prefix}warmup_epochs={self.warmup_epochs} must be at most {prefix}epochs={self.epochs} "
                            f"(the learning rate would never reach {prefix}lr): lower {prefix}warmup_epochs or "
                            f"raise {prefix}epochs")


@dataclass
class DataConfig:
    root: str = path(help="a raw dataset folder, its prepared shards, or an s3:// / gs:// URI; empty: the "
                          "task's demo set")
    format: str = helped("", "the raw layout of data.root (see `list`); empty: detected from its files")
    # The backbones downsample by up to 32x.
    image_size: int = bounded(64, at_least=16, help="side of the square images the model sees, in pixels")
    augment: list = field(default_factory=lambda: ["hflip"],
                          metadata={"help": "training augmentations, applied in order: hflip, color_jitter, "
                                                   "resize_crop, cutout, half_face"})
    demo_images: int = bounded(4000, at_least=10, help="size of the synthetic demo set (fewer leaves its splits "
                                                       "empty)")
    cache_dir: str = path(help="where demo sets and prepared shards go; empty: $FACE_ORCHESTRATOR_CACHE or "
                               "~/.cache/face-orchestrator")
    max_train_images: int = bounded(0, at_least=0, note="0: all", help="training images an epoch reads at most "
                                                                       "(a cap for smoke runs)")
    # One cache per DDP worker, which its loader processes share.
    decoded_cache_mb: int = bounded(512, at_least=0, note="0: none", help="MiB of decoded training images kept "
                                                                          "across epochs, per DDP worker")
    # -1 (auto): on a GPU, the worker's CPU threads less one, so JPEG decoding keeps up with the GPU; on CPU, 0
    # (the training process decodes, into the decoded cache).
    loader_workers: int = bounded(-1, at_least=-1, note="-1: auto", help="DataLoader processes per DDP worker "
                                                                         "(auto: the CPU threads less one on a "
                                                                         "GPU, none on CPU)")


@dataclass
class EvalConfig:
    """When a trial evaluates. A task with evaluation settings of its own extends this section."""
    every_steps: int = bounded(0, at_least=0, note="0: once per epoch",
                               help="evaluate, report and checkpoint every this many optimizer steps instead of "
                                    "each epoch (seed 004: 5000); ASHA and patience then count evaluations")


SHARED_SECTIONS: dict[str, type] = {"model": ModelConfig, "optim": OptimConfig, "data": DataConfig,
                                    "eval": EvalConfig}
SCALARS: dict[str, type] = {"task": str, "seed": int}
SCALAR_HELP = {"task": "what the trials learn: attributes | fairface | recognition",
               "seed": "seeds the weights' initialisation, the data order and the augmentations of every trial"}
SEED_RANGE = Range(0)                # numpy's seed sequences refuse a negative seed


# Task name -> the config sections that task reads beyond the shared ones. Each task registers its own
# when its folder is imported (register_task, in the tasks package); this module imports no task:
# the package root (trainables/__init__.py) tells the registry how to import the task folders.
TASK_SECTIONS: Registry[dict[str, type]] = Registry("task", key="task")


def task_sections(task: str) -> dict[str, type]:
    """Every section a config of `task` holds: the shared ones, then the task's own."""
    return {**SHARED_SECTIONS, **TASK_SECTIONS.get(task)}


def known_tasks() -> list[str]:
    """The names of every registered task."""
    return TASK_SECTIONS.names()


def all_sections() -> dict[str, list[str]]:
    """Section name -> the tasks that read it (for telling a foreign section from a typo)."""
    out: dict[str, list[str]] = {name: known_tasks() for name in SHARED_SECTIONS}
    for name, sections in TASK_SECTIONS.items():
        for section in sections:
            readers = out.setdefault(section, [])
            if name not in readers:  # a task's own `eval` extends the shared one: listed once
                readers.append(name)
    return out


class TrainConfig:
    """A trial's config: its task, its seed, and exactly the sections that task reads (as attributes:
    `cfg.model.name`, `cfg.loss.gamma`)."""

    def __init__(self, task: str, seed: int = 0, **sections: Any):
        classes = task_sections(task)
        for name in sections:
            if name not in classes:
                raise foreign_section_error(f"{name}.*", task, classes)
        self.task, self.seed = task, seed
        self.sections = {name: sections.get(name) or cls() for name, cls in classes.items()}
        check_values(self)

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
        if "task" not in flat:
            raise UserError(f"a config names its task, and this one has no `task` key: add task: one of "
                            f"{', '.join(known_tasks())} (e.g. task: attributes)")
        task = coerce("task", flat.pop("task"), str)
        classes = task_sections(task)
        seed = helped_coerce("seed", flat.pop("seed", 0), int, SCALAR_HELP["seed"])
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


def known_keys(task: str) -> list[str]:
    """Every dotted key a config of `task` accepts, in declaration order."""
    return list(TrainConfig(task).to_flat_dict())


def key_type(key: str, task: str) -> Any:
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


def path_keys(task: str) -> list[str]:
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


def check_values(cfg: "TrainConfig") -> None:
    """Every float finite, every `bounded()` range held, and each section's own `check_relations`
    (rules between its fields): a one-line UserError naming the key, the value and the range."""
    if (problem := range_problem("seed", cfg.seed, SEED_RANGE)):
        raise UserError(with_help(f"{problem}: fix the value, e.g. --set seed=0", "seed", SCALAR_HELP["seed"]))
    for name, section in cfg.sections.items():
        for f in dataclasses.fields(section):
            key, value = f"{name}.{f.name}", getattr(section, f.name)
            problem = range_problem(key, value, f.metadata.get("range"))
            if problem:
                example = f"{f.default:g} (its default)" if isinstance(f.default, (int, float)) else "..."
                raise UserError(with_help(f"{problem}: fix the value, e.g. --set {key}={example}", key,
                                          f.metadata.get("help", "")))
        relations = getattr(section, "check_relations", None)
        if relations is not None:
            relations(name + ".")


def range_problem(key: str, value: Any, valid: Range | None) -> str:
    """What is wrong with `value` for `key` ("" when nothing): not finite, or outside `valid`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return ""
    if not math.isfinite(value):
        return f"{key}={value} is not a finite number" + (f"; {key} must be {valid}" if valid else "")
    if valid is not None and value not in valid:
        return f"{key}={value:g} is out of range: {key} must be {valid}"
    return ""


def key_help(key: str, task: str) -> str:
    """The one-line help a dotted key declares ("" when none)."""
    if key in SCALAR_HELP:
        return SCALAR_HELP[key]
    section, _, name = key.partition(".")
    cls = task_sections(task).get(section)
    found = [f for f in dataclasses.fields(cls) if f.name == name] if cls else []
    return found[0].metadata.get("help", "") if found else ""


def key_range(key: str, task: str) -> Range | None:
    """The declared range of a dotted key for `task` (None when it declares none)."""
    if key == "seed":
        return SEED_RANGE
    section, _, name = key.partition(".")
    cls = task_sections(task).get(section)
    found = [f for f in dataclasses.fields(cls) if f.name == name] if cls else []
    return found[0].metadata.get("range") if found else None


def with_help(message: str, key: str, help: str) -> str:
    """An error line about a value of `key`, ending with what the key does (its declared help), so a
    mistake in a sweep file or a `--set` says what the key is for."""
    return f"{message}; {key}: {help}" if help else message


def helped_coerce(key: str, value: Any, typ: Any, help: str) -> Any:
    """`coerce`, whose one-line error also quotes the key's help."""
    try:
        return coerce(key, value, typ)
    except UserError as err:
        raise UserError(with_help(str(err), key, help)) from None


def unknown_key_error(key: str, task: str) -> UserError:
    close = difflib.get_close_matches(key, known_keys(task), n=3)
    hint = (f"did you mean {', '.join(close)}?" if close
            else "run `python -m orchestrator list --keys` for the keys of each task")
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
    fields = {f.name: f for f in dataclasses.fields(section_cls)}
    for key in values:
        if key not in fields:
            raise unknown_key_error(prefix + key, task)
    return section_cls(**{k: helped_coerce(prefix + k, v, _field_type(section_cls, k, task),
                                           fields[k].metadata.get("help", "")) for k, v in values.items()})


def _field_type(cls: type, name: str, task: str) -> Any:
    hints = typing.get_type_hints(cls)
    if name not in hints:
        raise unknown_key_error(name, task)
    typ = hints[name]
    if isinstance(typ, types.UnionType):
        typ = next(t for t in typing.get_args(typ) if t is not type(None))
    return typ
