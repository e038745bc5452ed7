"""A policy sweep on a finished trial's stored scores (a sweep with `runner="thresholds"`, `--from-run`).

No model is loaded: the source trial's task says which of its stored files it needs and how a
policy is scored on them (`Task.policy`); each Tune trial scores one policy, and the stored data
travels to the trials once through Ray's object store. The trials become child
runs of a new run nested under the source trial's sweep, so the UI shows them together.
"""

from __future__ import annotations

import functools
import tempfile
import time
from pathlib import Path

from mlflow.artifacts import download_artifacts
from ray import tune

from orchestrator import cluster, report
from orchestrator.space import count_trials, describe, search_algorithm, varying_keys
from orchestrator.tracking import KIND_KEY, SWEEP_KEY, TRIAL_KEY, MlflowTrialCallback, Tracking
from orchestrator.progress import ProgressPrinter
from trainables.errors import UserError
from trainables.tasks import PolicySearch, get_task

TRIAL_CPUS = 0.25  # a trial is a few numpy passes over the scores


def policy_trial(config: dict, stored: object, policy: PolicySearch) -> None:
    tune.report({**policy.evaluate(stored, config), "epoch": 1})


def run_threshold_sweep(opts, sweep) -> dict:
    started = time.time()
    if not getattr(opts, "from_run", None):
        raise UserError(f"sweep {sweep.name} scores a finished trial's predictions: pass --from-run RUN_ID")
    if opts.overrides:
        raise UserError(f"sweep {sweep.name} takes no --set overrides; its policy space is fixed in the sweep file")
    tracking = Tracking(opts.tracking_uri)
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

    cluster.connect(opts.address)
    total = count_trials(sweep.param_space, sweep.num_samples)
    name_of = functools.partial(describe, keys=varying_keys(sweep.param_space))
    experiment_id = source.info.experiment_id
    sweep_parent = source.data.tags.get("mlflow.parentRunId")
    key = f"thresholds:{source.info.run_id}:{int(started)}"
    tags = {KIND_KEY: "sweep", "sweep": sweep.name, "source_run": source.info.run_id}
    if sweep_parent:
        tags["mlflow.parentRunId"] = sweep_parent
    parent_id, _ = tracking.find_or_create_run(experiment_id, {SWEEP_KEY: key}, f"{sweep.name} of {source.info.run_name}", tags)
    tracking.log(parent_id, params={"sweep": sweep.name, "source_run": source.info.run_id, "trials": total})
    print(f"Sweep {sweep.name}: {sweep.question}\n  {total} policies on the stored scores of run "
          f"{source.info.run_id} ({source.info.run_name}); MLflow parent run {parent_id}", flush=True)

    callbacks = [
        MlflowTrialCallback(tracking, experiment_id, parent_id, key, name_of, params_of=dict,
                            on_finish=lambda *args: None),
        ProgressPrinter(sweep.metric, sweep.mode, total, 1, name_of),
    ]
    with tempfile.TemporaryDirectory() as storage:
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(policy_trial, stored=stored, policy=policy), {"CPU": TRIAL_CPUS}),
            param_space=sweep.param_space,
            tune_config=tune.TuneConfig(metric=sweep.metric, mode=sweep.mode, num_samples=sweep.num_samples,
                                        search_alg=search_algorithm(sweep.search), reuse_actors=True),
            run_config=tune.RunConfig(name=sweep.name, storage_path=storage, callbacks=callbacks, verbose=0),
        )
        results = tuner.fit()
        summary = report.finish_sweep(results, sweep, task, tracking, parent_id, {}, name_of, started,
                                      child_run=lambda trial_id: tracking.find_run(
                                          experiment_id, {SWEEP_KEY: key, TRIAL_KEY: trial_id}))
    return summary
