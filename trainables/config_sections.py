"""The config sections every task reads (`model`, `optim`, `data`, `eval`), and which sections a config of
each task holds.

A config holds the shared sections and exactly the sections its task declares (e.g. `loss` and `eval` for
attributes, `head` and `eval` for recognition), so a key of a section the task does not read is an error,
not a silently ignored value. Each task registers its own sections into TASK_SECTIONS when its folder is
imported; this module imports no task (the package root, trainables/__init__.py, tells the registry how
to import the task folders).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trainables.config_fields import Range, bounded, helped, path
from trainables.errors import UserError
from trainables.registry import Registry


@dataclass
class ModelConfig:
    name: str = helped("resnet18", "any timm model name, or one registered here (mobilefacenet, cbam_resnet*)")
    pretrained: bool = helped(False, "start from timm's pretrained weights, read from the Hugging Face cache "
                                     "(HF_HOME; never downloaded)")
    weights: str = path(help="start from a local .safetensors / .pth file, or local-dir:/folder in timm's layout "
                             "(instead of pretrained)")
    drop_rate: float = bounded(0.0, at_least=0, below=1, help="dropout probability before the classifier")
    attn_layer: str = helped("", "timm's block attention for ResNets, e.g. cbam (CBAM-ResNet); empty: none")
    channels_last: bool = helped(True, "channels-last memory layout for training and evaluation: faster "
                                       "convolutions on a GPU, and on CPU with oneDNN (1.1x to 1.6x the images/s of "
                                       "the demo's backbones, SK-ResNet aside)")
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
    decoded_cache_mb: int = bounded(512, at_least=0, note="0: none", help="MiB of decoded images kept across "
                                                                          "epochs, per DDP worker: the training "
                                                                          "images', then the evaluation splits'")
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
SEED_HELP = "seeds the weights' initialisation, the data order and the augmentations of every trial"
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
