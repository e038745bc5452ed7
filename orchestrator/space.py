"""A sweep's param space: applying `--set` overrides, and checking every name before any trial runs.

Keys are the config's dotted keys. An override replaces that key's value or Tune domain with a
fixed value, parsed to the key's declared type; a comma-separated value for a non-list key
becomes a grid (`--set model.name=resnet18,seresnet18`).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.search.sample import Categorical, Domain

from trainables.config import TrainConfig, coerce, key_type
from trainables.errors import UserError
from trainables.tasks.attributes.losses import LOSSES
from trainables.tasks import task_spec
from trainables.models import check_model_name
from trainables.optim import check_optim_names
from trainables.data.transforms import build_augment


def parse_override(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UserError(f"--set expects key=value (e.g. --set optim.lr=0.01), got '{text}'")
    typ = key_type(key)
    if typ is not list and "," in raw:
        return key, tune.grid_search([coerce(key, part.strip(), typ) for part in raw.split(",")])
    return key, coerce(key, raw, typ)


def apply_overrides(space: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    out = dict(space)
    for text in overrides:
        key, value = parse_override(text)
        out[key] = value
    return out


def choices(value: Any) -> list[Any]:
    """Every value a param-space entry can take (a fixed value, a grid, or a categorical domain)."""
    if isinstance(value, dict) and set(value) == {"grid_search"}:
        return list(value["grid_search"])
    if isinstance(value, Categorical):
        return list(value.categories)
    if isinstance(value, Domain):
        return [value.sample()]  # numeric ranges: one sample checks the type
    return [value]


def check_space(space: dict[str, Any]) -> None:
    """Parse every combination of the categorical choices, and check every name they use."""
    keys = list(space)
    checked: set[tuple] = set()
    for combo in itertools.islice(itertools.product(*(choices(space[k]) for k in keys)), 512):
        cfg = TrainConfig.from_dict(dict(zip(keys, combo)))
        task_spec(cfg.task).check(cfg)
        names = (cfg.model.name, cfg.loss.name, cfg.optim.name, cfg.optim.scheduler, tuple(cfg.data.augment))
        if names in checked:
            continue
        checked.add(names)
        check_model_name(cfg.model.name)
        if cfg.model.weights and not Path(cfg.model.weights).expanduser().is_file():
            raise UserError(f"model.weights file not found: {cfg.model.weights}: give the path of a local "
                            ".safetensors or .pth file (weights cannot be downloaded here)")
        if cfg.loss.name not in LOSSES:
            raise UserError(f"unknown loss '{cfg.loss.name}' (loss.name); known: {', '.join(sorted(LOSSES))}")
        check_optim_names(cfg.optim)
        build_augment(cfg.data.augment, cfg.data.image_size)
        if cfg.optim.epochs < 1 or cfg.optim.batch_size < 1 or cfg.data.image_size < 16:
            raise UserError("optim.epochs and optim.batch_size must be at least 1, and data.image_size at least 16")


def max_epochs(space: dict[str, Any]) -> int:
    values = choices(space.get("optim.epochs", TrainConfig().optim.epochs))
    return max(int(v) for v in values)


def varying_keys(space: dict[str, Any]) -> list[str]:
    """The keys whose value differs between trials: what names a trial in tables and run names."""
    return [k for k, v in space.items() if is_domain(v)]



def is_domain(value: Any) -> bool:
    return isinstance(value, Domain) or (isinstance(value, dict) and "grid_search" in value)


def count_trials(space: dict[str, Any], num_samples: int) -> int:
    grid = 1
    for value in space.values():
        if isinstance(value, dict) and "grid_search" in value:
            grid *= len(value["grid_search"])
    return grid * num_samples


def describe(config: dict[str, Any], keys: list[str]) -> str:
    """A trial's short name: the values of the keys that vary (`seresnet18`, `focal lr=3e-3`)."""
    parts = []
    for key in keys:
        value = config.get(key)
        text = f"{value:.3g}" if isinstance(value, float) else str(value)
        parts.append(text if key.endswith(".name") else f"{key.split('.')[-1]}={text}")
    return " ".join(parts) or str(config.get("model.name", "default"))  # nothing varies: name the backbone


def search_algorithm(name: str):
    """The Tune search algorithm a sweep declares ("" keeps Tune's grid/random variant generator)."""
    if not name:
        return None
    if name == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch()
    raise ValueError(f"sweep declares unknown search '{name}'; known: optuna")
