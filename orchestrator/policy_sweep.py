"""A policy sweep on a finished trial's stored scores (a sweep with `runner="policies"`, `--from-run`).

No model is loaded and no Ray is started: the source trial's task says which of its stored files it
needs and how a policy is scored on them (`Task.policy`). Scoring one policy is a few numpy passes, so
the policies run one after another in this process, drawn by the sweep's search (Optuna's sampler
through Tune's `Searcher` interface, or Tune's grid and random draws). Each policy is one child run of
a new run nested under the source trial's sweep, so the UI shows them together.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

from mlflow.artifacts import download_artifacts

from orchestrator import report
from orchestrator.space import count_trials, describe, search_algorithm, varying_keys
from orchestrator.tracking import KIND_KEY, SWEEP_KEY, TRIAL_KEY, Tracking
from orchestrator.trial_runs import is_metric
from trainables.errors import UserError
from trainables.tasks import get_task


class PolicyDraws:
    """The sweep's policies, one at a time: `next()` draws a config, `tell()` gives the search its result
    (Optuna's next draw depends on it)."""

    def __init__(self, sweep):
        self.searcher = search_algorithm(sweep.search, sweep.seed, sweep.objectives) if sweep.search else None
        if self.searcher is not None:
            self.searcher.set_search_properties(sweep.metric, sweep.mode, sweep.param_space)
            self._drawn = iter(())
        else:  # Tune's basic generator: the whole grid once per sample, its random values drawn anew each time
            import numpy as np
            from ray.tune.search.variant_generator import generate_variants

            rng = np.random.default_rng(sweep.seed)  # one stream for all samples: the same seed, the same draws
            self._drawn = (config for _ in range(sweep.num_samples)
                           for _, config in generate_variants(sweep.param_space, random_state=rng))

    def next(self, trial_id: str) -> dict:
        return self.searcher.suggest(trial_id) if self.searcher is not None else next(self._drawn)

    def tell(self, trial_id: str, metrics: dict) -> None:
        if self.searcher is not None:
            self.searcher.on_trial_complete(trial_id, metrics)


class PolicyResults(list):
    """The policies' results as the sweep's report reads a Tune result grid: each with `config`, `metrics`
    and `error` (the report picks the best, as for trials: orchestrator/ranking.py)."""


def run_policy_sweep(opts, sweep) -> dict:
    started = time.time()
    if not getattr(opts, "from_run", None):
        raise UserError(f"sweep {sweep.name} scores a finished trial's predictions: pass --from-run RUN_ID")
    if opts.overrides:
        raise UserError(f"sweep {sweep.name} takes no --set overrides; its policy space is fixed in the sweep file")
    tracking = Tracking.holding(opts.tracking_uri, f"MLflow run '{opts.from_run}'")
    source = tracking.trial_run(opts.from_run)
    task = get_task(source.data.params.get("task", ""))
    policy = task.policy
    if policy is None:
        raise UserError(f"run {source.info.run_id} is a {task.name} trial, whose stored files no policy sweep "
                        f"reads: pass a trial of a task with one")
    with tempfile.TemporaryDirectory() as tmp:
        for path in policy.files:
            try:
                download_artifacts(run_id=source.info.run_id, artifact_path=path, dst_path=tmp,
                                   tracking_uri=tracking.uri)
            except Exception:
                raise UserError(f"run {source.info.run_id} has no stored '{path}': pass a finished {task.name} "
                                f"trial (its run has {', '.join(policy.files)})") from None
        stored = policy.load(Path(tmp))

    total = count_trials(sweep.param_space, sweep.num_samples)
    keys = varying_keys(sweep.param_space)

    def name_of(config: dict) -> str:
        """A policy's short name, less the keys that do not act on it (`strategy=fixed offset=0.05`)."""
        inert = policy.inert(config)
        return describe(config, [k for k in keys if k not in inert], task.name)

    experiment_id = source.info.experiment_id
    sweep_parent = source.data.tags.get("mlflow.parentRunId")
    # Each run of a policy sweep is its own parent run, even two started within one second.
    key = f"policies:{source.info.run_id}:{uuid.uuid4().hex}"
    tags = {KIND_KEY: "sweep", "sweep": sweep.name, "source_run": source.info.run_id}
    if sweep_parent:
        tags["mlflow.parentRunId"] = sweep_parent
    parent_id, _ = tracking.find_or_create_run(experiment_id, {SWEEP_KEY: key}, f"{sweep.name} of {source.info.run_name}", tags)
    tracking.log(parent_id, params={"sweep": sweep.name, "source_run": source.info.run_id, "trials": total})
    print(f"Sweep {sweep.name}: {sweep.question}\n  {total} policies on the stored scores of run "
          f"{source.info.run_id} ({source.info.run_name}), scored in this process; MLflow parent run {parent_id}",
          flush=True)

    draws, results, run_ids = PolicyDraws(sweep), PolicyResults(), {}
    for index in range(total):
        trial_id = f"policy_{index + 1:03d}"
        config = draws.next(trial_id)
        metrics = {**policy.evaluate(stored, config), "epoch": 1, "trial_id": trial_id, "config": config}
        draws.tell(trial_id, metrics)
        results.append(SimpleNamespace(config=config, metrics=metrics, error=None))
        name = name_of(config)
        run_ids[trial_id], _ = tracking.find_or_create_run(
            experiment_id, {SWEEP_KEY: key, TRIAL_KEY: trial_id}, f"{trial_id} {name}",
            {"mlflow.parentRunId": parent_id, KIND_KEY: "trial"})
        tracking.log(run_ids[trial_id], step=1, params=config,
                     metrics={k: v for k, v in metrics.items() if is_metric(k, v)})
        tracking.set_terminated(run_ids[trial_id], status="FINISHED")
        value = metrics.get(sweep.metric)
        leader = report.best_of(results, sweep.metric, sweep.mode)  # the final pick's rule, on the policies so far
        shown = f"{sweep.metric} {value:.4f}" if value is not None else "no result"
        print(f"[{time.strftime('%H:%M:%S')}] policy {index + 1}/{total} {name}: {shown}"
              + (f"  | best {leader.metrics[sweep.metric]:.4f} ({name_of(leader.config)})" if leader else ""),
              flush=True)
    return report.finish_sweep(results, sweep, task, tracking, parent_id, {}, name_of, started,
                               child_run=run_ids.get)
