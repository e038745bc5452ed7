"""A sweep's param space: applying `--set` overrides, and checking every name before any trial runs.

Keys are the config's dotted keys, for the sweep's task (a key of a section the task does not read is
an error). An override replaces that key's value or Tune domain with a fixed value, parsed to the key's
declared type; a comma-separated value for a non-list key becomes a grid
(`--set model.name=resnet18,seresnet18`), and a distribution (`--set optim.lr=loguniform(1e-4,1e-2)`,
`choice(a,b)`, `uniform(0,1)`, `randint(1,5)`, `grid(a,b)`) becomes its Tune domain. Path values are made
absolute here, once, in the driver. Optuna samples every key itself, so on an Optuna sweep a grid
becomes a categorical choice (`GridChoice`, which the sweep's first lines mention).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

from ray import tune
from ray.tune.search.sample import Categorical, Domain, Float, Integer, LogUniform

from search_spaces.distributions import build, parse_call, show_call, within
from trainables.config import TrainConfig
from trainables.config_keys import key_acts, key_help, key_range, key_type, path_keys
from trainables.config_values import absolute, coerce, range_problem, with_help
from trainables.data.transforms import build_augment
from trainables.errors import UserError
from trainables.models import check_model_name
from trainables.models.weights import locate as locate_weights
from trainables.optim import check_optim_names
from trainables.tasks import get_task


def task_of(space: dict[str, Any]) -> str:
    if "task" not in space:
        raise UserError("a sweep's space names its task (`task:`), and this one does not: every sweep says which "
                        "task its trials learn")
    task = space["task"]
    if is_domain(task):
        raise UserError("`task` cannot vary within one sweep: run one sweep per task")
    get_task(task)
    return task


def parse_override(text: str, task: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UserError(f"--set expects key=value (e.g. --set optim.lr=0.01), got '{text}'")
    if key == "task":
        raise UserError("--set task=... is not allowed: a sweep's task is part of the sweep; run a sweep of that task")
    typ = key_type(key, task)
    try:
        return key, _parse_value(key, raw, typ, text)
    except UserError as err:  # a known key's bad value: the line says what the key is for
        raise UserError(with_help(str(err), key, key_help(key, task))) from None


def _parse_value(key: str, raw: str, typ: Any, text: str) -> Any:
    """The value of `--set key=raw`: a Tune domain, a grid of a comma list, or one value of the key's type."""
    spec = parse_call(raw)
    if spec:
        return build(*spec, key=key, typ=typ, where=f"--set {text}",
                     show=lambda kind, args: f"--set {key}={show_call(kind, args)}")
    if typ is not list and "," in raw:
        return tune.grid_search([coerce(key, part.strip(), typ) for part in raw.split(",")])
    return coerce(key, raw, typ)


def apply_overrides(space: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """The space with each `--set` applied, and every path value made absolute."""
    out = dict(space)
    task = task_of(out)
    for text in overrides:
        key, value = parse_override(text, task)
        out[key] = value
    for key in path_keys(task):
        if key in out:
            value = out[key]
            out[key] = _absolute_value(value)
    return out


def _absolute_value(value: Any) -> Any:
    if is_grid(value):
        return tune.grid_search(absolute(value["grid_search"]))
    if isinstance(value, Categorical):  # a choice of paths
        return tune.choice(absolute(list(value.categories)))
    return absolute(value)


class GridChoice(Categorical):
    """A grid that an Optuna sweep samples as a categorical choice (Optuna cannot take a grid); it
    remembers where it came from, so the sweep can say so."""


def grids_as_choices(space: dict[str, Any], search: str) -> dict[str, Any]:
    """The space a sweep's search can take: on an Optuna sweep each grid becomes a categorical choice."""
    if search != "optuna":
        return space
    out = {k: GridChoice(v["grid_search"]).uniform() if is_grid(v) else v for k, v in space.items()}
    if not any(isinstance(v, Domain) for v in out.values()):
        raise UserError("this Optuna sweep has nothing left to search (every key is fixed): give a key a "
                        "distribution, e.g. --set optim.lr=loguniform(1e-4,1e-2)")
    return out


def grid_note(space: dict[str, Any]) -> str:
    """What the sweep's first lines say of the grids Optuna samples as choices ("" when none)."""
    keys = [k for k, v in space.items() if isinstance(v, GridChoice)]
    if not keys:
        return ""
    grids = "; ".join(f"{k} from {', '.join(map(str, space[k].categories))}" for k in keys)
    return f"Optuna takes no grid, so each trial draws {grids} (a categorical choice)"


def is_grid(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"grid_search"}


def choices(value: Any) -> list[Any]:
    """Every value a param-space entry can take (a fixed value, a grid, or a categorical domain)."""
    if is_grid(value):
        return list(value["grid_search"])
    if isinstance(value, Categorical):
        return list(value.categories)
    if isinstance(value, (Float, Integer)):
        return numeric_bounds(value)  # a range's extremes: the largest batch or epoch count, the values out of range
    if isinstance(value, Domain):
        return [value.sample()]
    return [value]


def numeric_bounds(value: Float | Integer) -> list:
    """The smallest and largest values a uniform, loguniform or randint domain draws (Tune draws from
    [lower, upper): randint's upper is excluded, a float range's upper approached)."""
    if isinstance(value, Integer):
        return [value.lower, value.upper - 1]
    return [value.lower, math.nextafter(value.upper, value.lower)]


def check_bounds(space: dict[str, Any], task: str) -> None:
    """Each distribution's extremes lie in its key's declared range (`bounded()` in the config)."""
    for key, value in space.items():
        if not isinstance(value, (Float, Integer)):
            continue
        valid = key_range(key, task)
        for bound in numeric_bounds(value):
            if range_problem(key, bound, valid):
                kind = "randint" if isinstance(value, Integer) else (
                    "loguniform" if isinstance(value.get_sampler(), LogUniform) else "uniform")
                allowed = f"{key} must be {valid}" if valid else f"{key} must be a finite number"
                raise UserError(with_help(f"{key}={kind}({value.lower:g}, {value.upper:g}) can draw {bound:g}, "
                                          f"but {allowed}: narrow the distribution's bounds", key,
                                          key_help(key, task)))


def check_space(space: dict[str, Any]) -> None:
    """Parse every combination of the categorical choices and of the numeric ranges' extremes (each built
    as a TrainConfig, which checks every value's declared range), and check every name they use."""
    keys = list(space)
    check_bounds(space, task_of(space))
    checked: set[tuple] = set()
    for combo in itertools.islice(itertools.product(*(choices(space[k]) for k in keys)), 512):
        cfg = TrainConfig.from_dict(dict(zip(keys, combo)))
        get_task(cfg.task).check(cfg)
        names = (cfg.model.name, cfg.model.pretrained, cfg.model.weights, cfg.optim.name, cfg.optim.scheduler,
                 tuple(cfg.data.augment))
        if names in checked:
            continue
        checked.add(names)
        check_model_name(cfg.model.name)
        locate_weights(cfg.model)  # every backbone's starting weights are found before compute is spent
        check_optim_names(cfg.optim)
        build_augment(cfg.data.augment, cfg.data.image_size)


def batch_sizes(space: dict[str, Any]) -> list[int]:
    return [int(v) for v in choices(_value_or_default(space, "optim.batch_size"))]


def max_epochs(space: dict[str, Any]) -> int:
    return max(int(v) for v in choices(_value_or_default(space, "optim.epochs")))


def _value_or_default(space: dict[str, Any], key: str) -> Any:
    """The space's value of `key`, else its default for the space's task."""
    return space[key] if key in space else TrainConfig(task_of(space)).to_flat_dict()[key]


def evaluation_interval(space: dict[str, Any], early_stopping: bool) -> int:
    """`eval.every_steps` of every trial (0: they evaluate once per epoch). ASHA compares trials at the same
    count of evaluations, so with ASHA the interval must be the same for all of them."""
    value = space.get("eval.every_steps", 0)
    if is_domain(value):
        if early_stopping:
            raise UserError("eval.every_steps varies between trials, so ASHA would compare evaluations of different "
                            "lengths: give it one value, or run without ASHA (--no-early-stopping)")
        return 0
    return int(value)


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


def describe(config: dict[str, Any], keys: list[str], task: str = "") -> str:
    """A trial's short name: the values of the keys that vary (`seresnet18`, `focal gamma=2 lr=3e-3`), less those
    that do not act on this trial (`asl lr=3e-3`: only focal reads loss.gamma; config_keys.key_acts)."""
    parts = []
    for key in keys:
        if task and not key_acts(key, task, config):
            continue
        value = config.get(key)
        text = f"{value:.3g}" if isinstance(value, float) else str(value)
        parts.append(text if key.endswith(".name") else f"{key.split('.')[-1]}={text}")
    return " ".join(parts) or str(config.get("model.name", "default"))  # nothing varies: name the backbone


def starting_points(space: dict[str, Any], points: list[dict]) -> list[dict]:
    """A sweep's `first_points` that this space can search: each reduced to the searched keys, and left out when
    it lacks one of them or holds a value outside its domain (a `--set` may fix a key, add one or narrow a
    choice)."""
    domains = {k: v for k, v in space.items() if isinstance(v, Domain)}
    return [{k: point[k] for k in domains} for point in points
            if domains and all(k in point and within(d, point[k]) for k, d in domains.items())]


def first_points_note(first: list[dict], total: int, name_of, left_out: int = 0) -> str:
    """The plan line's words for the set first points ("" when none), and for the `left_out` ones that fall
    outside the space as --set, --data or --smoke leave it."""
    if not first and not left_out:
        return ""
    words = []
    if first:
        rest = "; Optuna draws the rest" if total > len(first) else ""
        which = f"first {len(first)} trials are" if len(first) > 1 else "first trial is"
        words.append(f"the {which} set: {', '.join(name_of(p) for p in first)}{rest}")
    if left_out:
        some = f"{left_out} of the sweep's set first points" if first else "the sweep's set first points"
        words.append(f"{some} {'are' if left_out > 1 or not first else 'is'} left out, outside this space "
                     f"(changed by --set, --data or --smoke)")
    return "; ".join(words)


def search_algorithm(name: str, seed: int, objectives: list[tuple[str, str]] | None = None,
                     max_concurrent: int | None = None, points: list[dict] | None = None,
                     evaluated: tuple[list[dict], list] | None = None, first: list[dict] | None = None):
    """The Tune search algorithm a sweep declares, seeded, so that the same sweep draws the same configs:
    "" is Tune's grid and random variant generator (its `random_state`), "optuna" Optuna's TPE sampler
    (`seed`). With several `objectives` Optuna searches them all (a multi-objective study); Tune itself
    ranks by the first. `max_concurrent` goes to the variant generator (Tune's `max_concurrent_trials`
    only wraps a `Searcher`: the caller passes it there for Optuna).

    An extended sweep (extend.py) passes the grid `points` still to run (the variant generator runs those
    alone, given as many samples), or the `evaluated` (points, values) its Optuna study starts from. Else
    Optuna tries the sweep's `first` points (starting_points) before its own draws."""
    if not name:
        from ray.tune.search.basic_variant import BasicVariantGenerator

        return BasicVariantGenerator(max_concurrent=max_concurrent or 0, random_state=seed,
                                     points_to_evaluate=points)
    if name == "optuna":
        import logging

        from orchestrator.optuna_objectives import ObjectivesOptunaSearch

        # Optuna logs "[I ...] A new study created in memory with name: optuna" when the study is made: a log
        # line among the sweep's own console lines that says nothing the plan line does not.
        logging.getLogger("optuna").setLevel(logging.WARNING)
        several = bool(objectives and len(objectives) > 1)
        given, values = evaluated or (first, None)
        return ObjectivesOptunaSearch(metric=[m for m, _ in objectives] if several else None,
                                      mode=[d for _, d in objectives] if several else None, seed=seed,
                                      points_to_evaluate=given or None, evaluated_rewards=values or None)
    raise UserError(f"sweep declares unknown search '{name}': use optuna, or none for Tune's grid and random draws")
