"""`sweep NAME --extend RUN_ID`: a new sweep that takes the trials of a finished one as already evaluated.

The earlier sweep's trials are read back from MLflow (their runs' params are their whole configs, their
metrics their last results). They are never retrained and their runs are never changed:
- a grid runs only the points no earlier trial ran;
- an Optuna study starts from them as completed trials (several objectives: added to the study directly,
  since Ray's `evaluated_rewards` path takes one);
- the final table, the task's leaderboard and the Pareto front list them beside the new trials, marked
  as earlier, and the best trial may be one of them.
The new parent run carries `extends=<earlier parent run id>`; extending an extension brings the whole
lineage. Results are comparable only on the same data and fixed settings: another dataset fingerprint,
or a fixed key (an epoch count, a smoke setting) changed, is refused in one line unless `--extend-anyway`.
"""

from __future__ import annotations

import ast
import itertools
import math
from dataclasses import dataclass, field
from typing import Any

from orchestrator.space import is_domain, is_grid
from orchestrator.tracking import KIND_KEY, TRIAL_KEY, Tracking
from trainables.config import TrainConfig
from trainables.errors import UserError

EXTENDS_TAG = "extends"
FROM, EARLIER = "from", "earlier"  # the results' column, and its value for an earlier sweep's trial ("this sweep" otherwise)
NOT_CONFIG = ("weights.source",)  # params a trial's run has besides its config (sweep.trial_params)


@dataclass
class EarlierTrial:
    """A trial of an earlier sweep, read as the final table, the leaderboard and the Pareto front read a
    Tune result (`config`, `metrics`, `error`)."""
    trial_id: str
    run_id: str
    sweep_run_id: str  # the parent run of the sweep that trained it
    config: dict
    metrics: dict
    error: None = None


@dataclass
class Extension:
    """The earlier sweep a new one extends: its parent run, and its trials (and theirs, down the lineage)."""
    parent_id: str
    trials: list[EarlierTrial] = field(default_factory=list)


def earlier_sweep(tracking: Tracking, run_id: str) -> Extension:
    """The finished sweep whose parent run is `run_id`, with every finished trial of it and of the sweeps
    it extended in turn. A trial's run, an unfinished sweep or an unknown id is refused in one line."""
    client = tracking.client
    try:
        parent = client.get_run(run_id)
    except Exception:  # MLflow's own RestException / MlflowException: the id is not a run of this store
        raise UserError(f"--extend {run_id}: no such run in MLflow at {tracking.uri}: pass the parent run id of a "
                        "finished sweep (shown in its header, and as the parent run in the MLflow UI)") from None
    tags = parent.data.tags
    if tags.get(KIND_KEY) != "sweep":
        above = tags.get("mlflow.parentRunId")
        hint = f"; its sweep's parent run is {above}" if above else ""
        raise UserError(f"--extend {run_id}: that run is not a sweep's parent run{hint}: pass the sweep's parent run id")
    if parent.info.status != "FINISHED" or tags.get("status", "finished") != "finished":
        raise UserError(f"--extend {run_id}: that sweep did not finish ({tags.get('status') or parent.info.status}): "
                        "finish it with --resume first, then extend it")
    extension = Extension(run_id, _trials(tracking, parent))
    seen = {run_id}
    older = tags.get(EXTENDS_TAG)
    while older and older not in seen:  # an extension's own earlier trials come along
        seen.add(older)
        run = client.get_run(older)
        extension.trials += _trials(tracking, run)
        older = run.data.tags.get(EXTENDS_TAG)
    return extension


def _trials(tracking: Tracking, parent) -> list[EarlierTrial]:
    """The finished trials under a sweep's parent run, with their configs typed again from their params."""
    query = (f"tags.`mlflow.parentRunId` = '{parent.info.run_id}' and tags.`{KIND_KEY}` = 'trial' "
             "and attributes.status = 'FINISHED'")
    runs, token = [], None
    while True:
        page = tracking.client.search_runs([parent.info.experiment_id], query, max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            break
    trials = []
    for run in runs:
        params = {k: _param(v) for k, v in run.data.params.items() if k not in NOT_CONFIG}
        config = TrainConfig.from_dict(params).to_flat_dict()
        trial_id = run.data.tags.get(TRIAL_KEY, run.info.run_id)
        metrics = {k: int(v) if k == "epoch" and float(v).is_integer() else v for k, v in run.data.metrics.items()}
        trials.append(EarlierTrial(trial_id, run.info.run_id, parent.info.run_id, config,
                                   {**metrics, "trial_id": trial_id}))
    return sorted(trials, key=lambda t: t.trial_id)


def _param(text: str) -> Any:
    """A param as MLflow keeps it (the str() of the value) back to a value the config types: None, and
    lists and dicts from their Python spelling; anything else stays text for the config to convert."""
    if text == "None":
        return None
    if text[:1] in "[{(":
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
    return text


def check_comparable(extension: Extension, tracking: Tracking, task: str, space: dict, fingerprint: str,
                     locations: tuple[str, ...] = ()) -> None:
    """Refuse, in one line naming `--extend-anyway`, an extension whose results would not be comparable:
    another task, another dataset fingerprint, or a fixed key of the earlier sweep (one all its trials
    share) that the new sweep fixes to another value. `locations`: keys that say where the data is,
    compared by the fingerprint instead."""
    anyway = "; pass --extend-anyway to extend it all the same"
    what = f"--extend {extension.parent_id}"
    tasks = {t.config.get("task") for t in extension.trials}
    if tasks and tasks != {task}:
        raise UserError(f"{what}: that sweep trained the {', '.join(sorted(map(str, tasks)))} task, and this one "
                        f"the {task} task: extend a sweep of the same task")
    earlier = _fingerprint(tracking, extension.parent_id)
    if earlier and fingerprint and earlier != fingerprint:
        raise UserError(f"{what}: that sweep trained on another dataset (fingerprint {earlier}, this one "
                        f"{fingerprint}), so its results are not comparable{anyway}")
    changed = []
    for key, value in sorted(space.items()):
        if is_domain(value) or key in locations or not extension.trials:
            continue
        values = {_comparable(t.config.get(key)) for t in extension.trials}
        if len(values) == 1 and values != {_comparable(value)}:
            changed.append(f"{key} {extension.trials[0].config.get(key)!r} -> {value!r}")
    if changed:
        raise UserError(f"{what}: this sweep changes fixed settings of that one ({'; '.join(changed)}), so its "
                        f"results are not comparable{anyway}")


def _fingerprint(tracking: Tracking, run_id: str) -> str:
    inputs = tracking.client.get_run(run_id).inputs
    datasets = [d.dataset for d in (inputs.dataset_inputs if inputs else [])]
    return datasets[0].digest if datasets else ""


def _comparable(value: Any) -> Any:
    """One spelling per value: 3 and 3.0 and "3" are one value, as are [1, 2] and "[1, 2]"."""
    if isinstance(value, bool) or value is None:
        return str(value)
    try:
        number = float(value)
        return number if math.isfinite(number) else str(value)
    except (TypeError, ValueError):
        return str(value)


def grid_keys(space: dict) -> list[str]:
    return [k for k, v in space.items() if is_grid(v)]


def new_points(space: dict, earlier: list[EarlierTrial], num_samples: int) -> list[dict]:
    """For a grid (Tune's variant generator): each grid point no earlier trial ran, `num_samples` times
    (its other keys are drawn as usual). Earlier trials are matched on the grid's keys only."""
    keys = grid_keys(space)
    ran = {tuple(_comparable(t.config.get(k)) for k in keys) for t in earlier}
    points = []
    for values in itertools.product(*(space[k]["grid_search"] for k in keys)):
        if tuple(_comparable(v) for v in values) not in ran:
            points += [dict(zip(keys, values))] * num_samples
    return points


def evaluated_points(space: dict, earlier: list[EarlierTrial],
                     objectives: list[tuple[str, str]]) -> tuple[list[dict], list]:
    """For an Optuna study: (each earlier trial's values of the searched keys, its objective value, or
    its list of values for several objectives). Trials without every objective are left out."""
    keys = [k for k, v in space.items() if is_domain(v)]
    points, values = [], []
    for trial in earlier:
        scores = [trial.metrics.get(m) for m, _ in objectives]
        if any(s is None or not math.isfinite(float(s)) for s in scores) or any(k not in trial.config for k in keys):
            continue
        points.append({k: trial.config[k] for k in keys})
        values.append(scores if len(objectives) > 1 else scores[0])
    return points, values


def resumed_extension(tracking: Tracking, parent_id: str) -> Extension | None:
    """A resumed sweep that extends another (its parent run's `extends` tag) takes its earlier trials again."""
    earlier = tracking.client.get_run(parent_id).data.tags.get(EXTENDS_TAG)
    return earlier_sweep(tracking, earlier) if earlier else None


def describe(extension: Extension, points: list | None) -> str:
    """The sweep header's line."""
    count = len(extension.trials)
    new = (f"; only the grid's {len(points)} new point{'s train' if len(points) != 1 else ' trains'}"
           if points else "")
    return (f"extends sweep {extension.parent_id}: its {count} trial{'s' if count != 1 else ''} count as run and "
            f"are listed as `{EARLIER}`{new}")


def earlier_best_line(summary: dict, sweep_run_id: str) -> str:
    """What a sweep whose best trial an earlier sweep trained says of its model (it logs none of its own)."""
    return (f"model: the best trial ({summary.get('best')}) was trained by the earlier sweep {sweep_run_id}, whose "
            f"runs stay as they are; export it with: python -m orchestrator export --run "
            f"{summary.get('best_run_id')} --out DIR")
