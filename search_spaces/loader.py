"""A sweep file: a sweep written in YAML outside the package, read and checked into a `Sweep`.

    question: Which backbone and learning rate predict my attributes best?
    task: attributes              # required: attributes | fairface | recognition
    metric: val/macro_f1          # default: the task's usual objective; or several, e.g.
    mode: max                     #   metric: [val/race/accuracy, val/race/group_gap] with mode: [max, min]
    max_gap: 0.05                 # several objectives: the chosen trial's second one is at most this
    seed: 0                       # seeds Optuna and the random draws (default 0): the same seed, the same configs
    search: optuna                # basic (Tune's grids and random draws) or optuna
    scheduler: asha               # asha (stops weak trials early) or none
    grace_period: 1               # evaluations (epochs) before ASHA may stop a trial
    reduction_factor: 3           # ASHA keeps the best 1/3 of the trials at each rung (default 2)
    samples: 8                    # trials per grid point
    workers_per_trial: 2
    space:                        # dotted config keys: a fixed value or a distribution
      model.name: {grid: [resnet18, seresnet18]}
      optim.lr: {loguniform: [1.0e-4, 1.0e-2]}
    real_data:                    # with --data: replaces those keys and fields
      optim.epochs: 20
    smoke:                        # with --smoke, applied last
      samples: 2
      optim.epochs: 1
    first:                        # optuna: points tried first, in order, before Optuna's own draws; each
      - {model.name: resnet18, optim.lr: 1.0e-3}   # sets every key that space: searches

Every field and value of every block is checked when the file is read, whichever blocks apply, so an
error is one line naming the file, the field or key, and the fix, before any trial starts. Relative
paths in the space are relative to the file's folder.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
from pathlib import Path
from typing import Any

import yaml

from ray.tune.search.sample import Domain

from search_spaces import DEFAULT_SEED, SWEEPS, Sweep, objectives_of
from search_spaces.distributions import KINDS, build, parse_call, render, show_yaml, type_name, within
from trainables.config import TrainConfig
from trainables.config_keys import key_help, key_type, path_keys
from trainables.config_values import coerce, with_help
from trainables.errors import UserError
from trainables.tasks import TASKS, get_task

SWEEP_FIELDS = ("samples", "scheduler", "grace_period", "reduction_factor", "workers_per_trial")  # what real_data and smoke may change
FIELDS = ("name", "question", "task", "metric", "mode", "max_gap", "seed", "search", "report", *SWEEP_FIELDS,
          "space", "real_data", "smoke", "first")
BLOCKS = ("space", "real_data", "smoke")
SEARCHES = {"basic": "", "optuna": "optuna"}
SCHEDULERS = ("asha", "none")


def factory(path: str):
    """The sweep factory of a file, called like a built-in's: `factory(real_data=..., smoke=...)`."""
    return functools.partial(load, path)


def load(path: str, real_data: bool = False, smoke: bool = False) -> Sweep:
    """The sweep of file `path`, with its `real_data` block applied for real data and `smoke` last."""
    doc = _read(path)
    _known_fields(path, "", doc, FIELDS)
    if "question" not in doc or "space" not in doc:
        missing = " and ".join(f"`{f}:`" for f in ("question", "space") if f not in doc)
        raise UserError(f"{path}: {missing} missing: a sweep file says the question it answers and its space "
                        f"(see the example in the README)")
    question = _text(path, "question", doc["question"])
    task = _task(path, doc.get("task"))
    folder = Path(path).expanduser().resolve().parent
    blocks = {name: _block(path, name, doc.get(name) or {}, task, folder) for name in BLOCKS}
    fields = {"samples": 1, "scheduler": "asha", "grace_period": 1, "reduction_factor": 2, "workers_per_trial": 2}
    fields.update(_sweep_fields(path, "", doc))
    space = dict(blocks["space"][1])
    for name, applies in (("real_data", real_data), ("smoke", smoke)):
        if applies:
            fields.update(blocks[name][0])
            space.update(blocks[name][1])
    search = _choose(path, "search", doc.get("search", "basic"), list(SEARCHES))
    if search == "optuna" and not any(_varies(v) for v in space.values()):
        raise UserError(f"{path}: search: optuna has nothing to search: give a key of `space:` a distribution "
                        f"(e.g. optim.lr: {show_yaml('loguniform', [1e-4, 1e-2])}), or write search: basic")
    name = doc.get("name", Path(path).stem)
    if not isinstance(name, str) or not re.fullmatch(r"[\w.-]+", name):
        raise UserError(f"{path}: name: {name!r} cannot name an MLflow experiment and a storage folder: "
                        f"use letters, digits, '_', '-' or '.' (default: the file's name)")
    metric, mode = _objectives(path, doc, task)
    first = _first_points(path, doc.get("first"), search, blocks["space"][1], task, folder)
    seed, max_gap = doc.get("seed", DEFAULT_SEED), doc.get("max_gap")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UserError(f"{path}: seed: expects a whole number of at least 0, got {seed!r}")
    if max_gap is not None and (isinstance(max_gap, bool) or not isinstance(max_gap, (int, float)) or max_gap < 0):
        raise UserError(f"{path}: max_gap: expects a number of at least 0 (the largest second objective, e.g. a "
                        f"group gap of 0.05), got {max_gap!r}")
    report = doc.get("report", [])
    if not isinstance(report, list) or not all(isinstance(m, str) for m in report):
        raise UserError(f"{path}: report: expects a list of metric names, e.g. report: [val/mean_accuracy]")
    return Sweep(
        name=name, question=question, param_space=space, task=task, metric=metric, mode=mode, seed=seed,
        max_gap=None if max_gap is None else float(max_gap),
        num_samples=fields["samples"], search=SEARCHES[search],
        grace_period=fields["grace_period"] if fields["scheduler"] == "asha" else 0,
        reduction_factor=fields["reduction_factor"],
        workers_per_trial=fields["workers_per_trial"], report=report, source=str(Path(path).expanduser().resolve()),
        first_points=first,
    )


def _first_points(path: str, raw: Any, search: str, space: dict, task: str, folder: Path) -> list[dict]:
    """`first:`, Optuna's first points: a list of mappings, each setting every key that the `space:` block
    searches (Ray's OptunaSearch takes whole points only) to one value it can draw. A `real_data` or `smoke`
    block, or a --set, that changes the space leaves out the points that no longer fit (the plan line names
    those that are tried)."""
    if raw is None:
        return []
    if search != "optuna":
        raise UserError(f"{path}: first: sets the first points of an Optuna search, and this sweep's search is "
                        f"{search}: write search: optuna, or remove first")
    searched = [k for k, v in space.items() if _varies(v)]
    example = "{" + ", ".join(f"{k}: ..." for k in searched) + "}"
    if not isinstance(raw, list) or not raw:
        raise UserError(f"{path}: first: expects a list of points, one `- {example}` line each")
    defaults = TrainConfig(task).to_flat_dict()
    paths = set(path_keys(task))
    points = []
    for number, point in enumerate(raw, 1):
        where = f"{path}: first: point {number}"
        if not isinstance(point, dict):
            raise UserError(f"{where}: expects a mapping of the searched keys, e.g. - {example}; got {point!r}")
        for key in point:
            if key not in searched:
                what = "is fixed in space:" if key in space else "is not a key of space:"
                raise UserError(f"{where}: {key} {what} a point sets only the keys that space: searches "
                                f"({', '.join(searched)})")
        missing = [k for k in searched if k not in point]
        if missing:
            raise UserError(f"{where}: {', '.join(missing)} missing: a point sets every key that space: searches "
                            f"(Optuna takes whole points): add {' and '.join(f'{k}: ...' for k in missing)}")
        values = {}
        for key in searched:
            if isinstance(point[key], dict):
                raise UserError(f"{where}: {key}: a point holds one value, not a distribution")
            value = _value(f"{where}: {key}", key, point[key], key_type(key, task), folder if key in paths else None,
                           defaults.get(key))
            if not within(space[key], value):
                raise UserError(f"{where}: {key}: {render(value)} is not one that space: can draw "
                                f"({_shown(space[key])}): change the point or the space")
            values[key] = value
        points.append(values)
    return points


def _shown(domain: Any) -> str:
    """A searched key's domain as a person reads it: its grid or choices, or its range."""
    if isinstance(domain, dict):
        return "grid " + ", ".join(map(render, domain["grid_search"]))
    if hasattr(domain, "categories"):
        return "choice " + ", ".join(map(render, domain.categories))
    return f"{render(domain.lower)} to {render(domain.upper)}"


def _objectives(path: str, doc: dict, task: str) -> tuple[list[str], list[str]]:
    """`metric` and `mode`: one of each, or two lists of equal length (several objectives), checked."""
    usual = get_task(task).metric
    metric = doc.get("metric", usual)
    metrics = metric if isinstance(metric, list) else [_text(path, "metric", metric)]
    mode = doc.get("mode", "max" if not isinstance(metric, list) else None)
    if mode is None:
        raise UserError(f"{path}: mode: missing: with several objectives give one mode per metric, e.g. "
                        f"mode: [max, min]")
    modes = mode if isinstance(mode, list) else [mode]
    modes = [str(m).strip().lower() for m in modes]
    try:
        pairs = objectives_of(metrics, modes, "metric", "mode")
    except UserError as err:
        raise UserError(f"{path}: {err}") from None
    for name, _ in pairs:
        if not name.startswith("val/"):
            raise UserError(f"{path}: metric: {name!r} is not a validation metric: the objective is one of the "
                            f"val/ metrics a trial reports, e.g. {usual} (task {task}'s usual one)")
    if doc.get("max_gap") is not None and (len(pairs) < 2 or pairs[1][1] != "min"):
        raise UserError(f"{path}: max_gap: limits the second objective, which must be minimised: name two objectives "
                        f"with the second's mode min (e.g. mode: [max, min]), or remove max_gap")
    return [m for m, _ in pairs], [d for _, d in pairs]


class _Twice(yaml.MarkedYAMLError):
    """A key written twice in one block."""


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key written twice in one block (it would keep the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise _Twice(None, None, f"'{key}' appears twice in one block: keep one", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read(path: str) -> dict:
    file = Path(path).expanduser()
    if not file.exists():
        stem = file.name.removesuffix(".yaml").removesuffix(".yml")
        builtin = f", or name the built-in sweep without a path: `{stem}`" if stem in SWEEPS else ""
        raise UserError(f"sweep file not found: {path}: check the path{builtin} (built-in sweeps: "
                        f"`python -m orchestrator list`)")
    if not file.is_file():
        raise UserError(f"sweep file {path} is a folder: give the path of a .yaml file in it")
    try:
        doc = yaml.load(file.read_text(encoding="utf-8"), Loader=_Loader)  # a SafeLoader: no object tags
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = f":{mark.line + 1}" if mark else ""
        problem = " ".join(str(err.problem or err.context or "syntax error").split())
        if isinstance(err, _Twice):
            raise UserError(f"{path}{line}: {problem}") from None
        opened = err.context_mark if err.context and mark else None  # e.g. where an unclosed `{` began
        where = (f", {err.context.removeprefix('while ')} from line {opened.line + 1}"
                 if opened and opened.line != mark.line else "")
        raise UserError(f"{path}{line}: not valid YAML: {problem}"
                        + (f" (column {mark.column + 1}{where})" if mark else "") + ": fix the syntax there") from None
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as err:
        raise UserError(f"{path}: cannot be read as YAML: {' '.join(str(err).split())}") from None
    if not isinstance(doc, dict):
        got = "nothing" if doc is None else f"a {type(doc).__name__}"
        raise UserError(f"{path}: a sweep file is a mapping of fields (question:, task:, space:, ...), got {got}")
    return doc


def _known_fields(path: str, where: str, doc: dict, known: tuple[str, ...]) -> None:
    for key in doc:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean `{close[0]}`? " if close else ""
            if not close and "." in str(key):
                hint = "config keys go in the `space:` block; "
            raise UserError(f"{path}: {where}unknown field `{key}`: {hint}the fields are {', '.join(known)}")


def _task(path: str, task: Any) -> str:
    """The file's `task:`, which every sweep file names: no task is assumed."""
    if task is None:
        raise UserError(f"{path}: `task:` missing: a sweep file names the task its trials learn: add e.g. "
                        f"`task: attributes` (the tasks: {', '.join(TASKS.names())})")
    try:
        get_task(str(task))
    except UserError as err:
        raise UserError(f"{path}: task: {err}") from None
    return str(task)


def _text(path: str, field: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"{path}: {field}: expects text, got {value!r}")
    return value.strip()


def _choose(path: str, field: str, value: Any, known: list[str]) -> str:
    text = "none" if value is None else str(value).strip().lower()
    if text not in known:
        close = difflib.get_close_matches(text, known, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise UserError(f"{path}: {field}: unknown {field} {value!r}: {hint}write one of {', '.join(known)}")
    return text


def _sweep_fields(path: str, where: str, values: dict) -> dict:
    """The sweep-level fields among `values` (samples, scheduler, grace_period, reduction_factor,
    workers_per_trial), checked."""
    out: dict[str, Any] = {}
    for field in SWEEP_FIELDS:
        if field not in values:
            continue
        value = values[field]
        if field == "scheduler":
            out[field] = _choose(path, where + field, value, list(SCHEDULERS))
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{path}: {where}{field}: expects a whole number of at least 1, got {value!r}")
        if field == "reduction_factor" and value < 2:
            raise UserError(f"{path}: {where}{field}: expects a whole number of at least 2 (ASHA keeps 1/{field} "
                            f"of the trials at each rung), got {value!r}")
        out[field] = value
    for field in ("grace_period", "reduction_factor"):
        if field in out and out.get("scheduler") == "none":
            raise UserError(f"{path}: {where}{field}: only ASHA has a {field.replace('_', ' ')}, and scheduler is "
                            f"none: remove {field}, or write scheduler: asha")
    return out


def _block(path: str, name: str, block: Any, task: str, folder: Path) -> tuple[dict, dict]:
    """(sweep fields, config keys -> values or Tune domains) of one block: `space`, `real_data` or `smoke`."""
    if not isinstance(block, dict):
        raise UserError(f"{path}: {name}: expects a block of `key: value` lines, got {block!r}")
    fields = {}
    if name != "space":
        others = [k for k in block if k in FIELDS and k not in SWEEP_FIELDS]
        if others:
            raise UserError(f"{path}: {name}: `{others[0]}` cannot change in {name}: only {', '.join(SWEEP_FIELDS)} "
                            f"and config keys can")
        fields = _sweep_fields(path, f"{name}.", block)
    defaults = TrainConfig(task).to_flat_dict()
    paths = set(path_keys(task))
    space = {}
    for key, raw in block.items():
        if key in SWEEP_FIELDS and name != "space":
            continue
        where = f"{path}: {name}: {key}"
        if not isinstance(key, str):
            raise UserError(f"{path}: {name}: {key!r}: a key is a dotted config key such as optim.lr")
        if key == "task":
            raise UserError(f"{where}: the task is the top-level field `task:`, the same for every trial")
        try:
            typ = key_type(key, task)
        except UserError as err:
            raise UserError(f"{path}: {name}: {err}") from None
        try:
            space[key] = _value(where, key, raw, typ, folder if key in paths else None, defaults.get(key))
        except UserError as err:  # a known key's bad value: the line says what the key is for
            raise UserError(with_help(str(err), key, key_help(key, task))) from None
    return fields, space


def _value(where: str, key: str, raw: Any, typ: Any, folder: Path | None, default: Any) -> Any:
    """A fixed value parsed to the key's type, or the Tune domain of a distribution."""
    spec = _spec(where, raw)
    if spec:
        kind, args = spec
        if folder is not None and isinstance(args, list):
            args = [_beside(folder, a) for a in args]
        return build(kind, args, key, typ, where, show_yaml)
    if folder is not None:
        raw = _beside(folder, raw)
    try:
        return coerce(key, raw, typ)
    except UserError:
        shown = render(default) if default not in ("", None) else '""'
        raise UserError(f"{where}: expects {type_name(typ)}, got {raw!r}: write e.g. {key}: {shown} "
                        f"(its default)") from None


def _spec(where: str, raw: Any) -> tuple[str, Any] | None:
    """(kind, args) when `raw` is a distribution: `{loguniform: [1e-4, 1e-2]}` (or --set's `loguniform(...)`)."""
    if isinstance(raw, dict):
        if len(raw) != 1:
            raise UserError(f"{where}: a block value is one distribution, such as {show_yaml('choice', ['a', 'b'])}; "
                            f"the kinds are {', '.join(KINDS)} (write nested keys as dotted keys: optim.lr)")
        return next(iter(raw.items()))
    if isinstance(raw, str):
        return parse_call(raw)
    return None


def _beside(folder: Path, value: Any) -> Any:
    """A relative path in a sweep file is relative to the file; URIs, absolute paths and "" stay."""
    if isinstance(value, list):
        return [_beside(folder, v) for v in value]
    if not isinstance(value, str) or not value or re.match(r"^[A-Za-z][\w+.-]*:", value):
        return value
    expanded = os.path.expanduser(value)
    return expanded if os.path.isabs(expanded) else str(folder / expanded)


def _varies(value: Any) -> bool:
    return isinstance(value, Domain) or (isinstance(value, dict) and "grid_search" in value)
