"""`run_sweep()`: a named sweep, through Ray Tune and Ray Train DDP workers, into MLflow.

Ray Train V2 cannot be tuned directly (`Tuner(TorchTrainer)` fails), so each Tune trial runs
`runners.train_driver_fn`, a tiny function that builds and fits one `TorchTrainer`; Train's
`TuneReportCallback` forwards rank 0's (already all-reduced) metrics to Tune.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field

from ray import tune
from ray.tune.search.basic_variant import BasicVariantGenerator

from orchestrator import (accounting, budget, cluster, driver_lease, extend, logged_model, ordered_asha, outbox, report,
                          rungs, signals, state, store_outage, sweep_settings)
from orchestrator.runners import RUNNERS, TRAIN, train_driver_fn
from orchestrator.preflight import Preflight
from orchestrator.space import (describe, evaluation_interval, first_points_note, grid_note, max_epochs,
                                search_algorithm, starting_points, varying_keys)
from orchestrator.tracking import KIND_KEY, SWEEP_KEY, DatasetRecord, redact
from orchestrator.trial_runs import MlflowTrialCallback, OneLineUserErrors
from orchestrator.progress import ProgressPrinter
from orchestrator.placement import PlacementGroupCleanup
from trainables import storage_fs
from trainables.config import TrainConfig
from trainables.errors import UserError, filter_once
from trainables.models.weights import source_of as weights_source
from trainables.tasks import get_task


@dataclass
class SweepOptions:
    name: str
    data: str | None = None
    overrides: list[str] = field(default_factory=list)
    smoke: bool = False
    num_workers: int | None = None
    gpus_per_worker: float | None = None
    max_concurrent: int | None = None
    storage: str = "runs"
    tracking_uri: str | None = None
    address: str | None = None
    resume: bool = False
    run_name: str | None = None
    max_failures: int = 1
    from_run: str | None = None
    early_stopping: bool = True  # False: no ASHA, every trial runs all its epochs (the full grid)
    register: str | None = None  # the best model's registered name (logged_model.py)
    register_if: str | None = None  # ... only when this condition on its metric holds
    metric: list[str] = field(default_factory=list)  # --metric, repeatable: replaces the sweep's objectives
    mode: list[str] = field(default_factory=list)    # --mode, one per --metric
    seed: int | None = None  # --seed: replaces the sweep's seed (search_spaces.DEFAULT_SEED unless it declares one)
    budget: str | None = None  # --budget: trial-hours the sweep may spend, e.g. "2h" (budget.py)
    extend: str | None = None  # --extend: the parent run id of a finished sweep whose trials count as run (extend.py)
    extend_anyway: bool = False  # --extend-anyway: even when its data or fixed settings differ


# ASHA's max_t when it counts evaluations (eval.every_steps): far beyond any trial, which ends with its epochs.
EVALUATIONS_UNBOUNDED = 10**6


class MaxFailures(tune.Callback):
    """This invocation's --max-failures for every trial, also those restored on --resume (Tune keeps
    each restored trial's own count from the first run otherwise)."""

    def __init__(self, max_failures: int):
        self.max_failures = max_failures

    def on_trial_start(self, iteration, trials, trial, **info):
        trial.max_failures = self.max_failures


def trial_params(config: dict) -> dict:
    """A child run's params: its flat config, and where its starting weights come from (`weights.source`:
    timm:resnet18.a1_in1k, file:/abs/path, local-dir:/abs/path or scratch)."""
    cfg = TrainConfig.from_dict(config)
    return {**cfg.to_flat_dict(), "weights.source": weights_source(cfg.model)}


def asha_words(grace_period: int, reduction_factor: int, every: int, epochs: int) -> str:
    """The plan line's words for ASHA. A first rung at or after a trial's last epoch (`--set optim.epochs=1`
    on a sweep whose grace period is 2) stops nothing: the line says so rather than promise a stop."""
    if not every and grace_period >= epochs:
        return (f"every trial runs all its epochs: ASHA's first rung, epoch {grace_period}, is not before the "
                f"last ({epochs})")
    unit = f"evaluation {grace_period} (one every {every} optimizer steps)" if every else f"epoch {grace_period}"
    return f"ASHA stops a trial at {unit} (and at each later rung) unless it is in the best 1/{reduction_factor} so far"


def run_sweep(opts: SweepOptions) -> dict:
    started = time.time()
    signals.install()  # from the start: a Ctrl-C or SIGTERM in the start-up is an interrupt too (see accounting.abort)
    filter_once("ray.tune.execution.tune_controller", OneLineUserErrors)
    filter_once(ordered_asha.UNRETRIEVED_LOG, ordered_asha.QuietDiscardedTrialCalls)  # a trial it stops mid-epoch
    wanted = logged_model.registration(opts.register, opts.register_if)  # a bad flag costs no training
    pre = Preflight(opts)
    pre.check_sweep()
    runner = RUNNERS[pre.sweep.runner]
    if wanted is not None:
        logged_model.check_registrable(runner, get_task(pre.base.task) if runner.trains_models else None)
    if pre.sweep.runner != TRAIN:
        return runner.run(opts, pre.sweep)
    pre.run_all()
    with driver_lease.held(pre.run.path, opts.resume):  # one driver per sweep: a second is refused while this runs
        return _train(opts, pre, wanted, started)


def _train(opts: SweepOptions, pre: Preflight, wanted, started: float) -> dict:
    """The checked sweep's trials, from its MLflow parent run to its final report."""
    sweep, space, tracking, run, data, resources = pre.sweep, pre.space, pre.tracking, pre.run, pre.data, pre.resources
    task = get_task(pre.base.task)
    space.update(data.settings)  # trials read the prepared shards, never the raw files
    epochs = max_epochs(space)
    name_of = functools.partial(describe, keys=varying_keys(space), task=task.name)
    total = pre.trial_count()

    experiment_id = tracking.experiment_id(sweep.name)
    parent_id = run.parent_run_id or tracking.find_or_create_run(
        experiment_id, {SWEEP_KEY: run.path, KIND_KEY: "sweep"},
        run_name=run.name, tags={"sweep": sweep.name, "smoke": str(opts.smoke),
                                 **({extend.EXTENDS_TAG: pre.extension.parent_id} if pre.extension else {})},
    )[0]
    extension = pre.extension or (extend.resumed_extension(tracking, parent_id) if opts.resume else None)  # a
    # resumed extension keeps its earlier trials (its parent's tag); a new sweep pays no MLflow call for it
    run.budget_s, run.began = pre.budget_s, started  # its minutes go on from its earlier invocations'
    if not opts.resume:  # a new sweep keeps what a resume must match, and the command that resumes it
        run.settings, run.command = pre.settings(), sweep_settings.command_that_resumes()
    run.save(parent_run_id=parent_id, status="running")
    accounting.opened(tracking, run, parent_id)
    dataset = DatasetRecord.of(data)
    if not opts.resume:  # an input is logged once per run
        tracking.log_dataset(parent_id, dataset)
    tracking.log(parent_id, metrics=data.baseline, params={
        "sweep": sweep.name, "data.root": data.root, "data.source": opts.data or "synthetic demo set",
        "smoke": opts.smoke, "trials": total, "seed": sweep.seed,
        "objectives": ", ".join(f"{m} ({d})" for m, d in sweep.objectives),
        "resources": resources.describe(), "storage": run.path,
        "budget": budget.hours(pre.budget_s) if pre.budget_s else "none",
        **{f"override.{o.split('=')[0]}": o.split("=", 1)[-1] for o in opts.overrides},
    })
    note = grid_note(space)
    # Optuna's set first points (a new sweep's: an extended one starts from its earlier trials instead).
    offered = sweep.first_points if sweep.search == "optuna" and not pre.evaluated else []
    fitting = starting_points(space, offered)
    first, left_out = fitting[:total], len(offered) - len(fitting)
    note = "; ".join(filter(None, [note, first_points_note(first, total, name_of, left_out)]))
    asha = sweep.grace_period and opts.early_stopping
    every = evaluation_interval(space, bool(asha))
    stopping = asha_words(sweep.grace_period, sweep.reduction_factor, every, epochs) if asha else \
        "every trial runs all its epochs"
    several = len(sweep.objectives) > 1
    if several:
        stopping = (f"objectives {', '.join(f'{m} ({d})' for m, d in sweep.objectives)}: a Pareto front; Tune "
                    f"ranks by the first, {sweep.metric}\n  " + stopping
                    + (f", by {sweep.metric} alone; a trial it stops is never on the front" if asha else ""))
    print(f"Sweep {sweep.name}: {sweep.question}" + (f"\n  from {sweep.source}" if sweep.source else "")
          + f"\n  {total} trial{'s' if total != 1 else ''}, {epochs} epoch{'s' if epochs != 1 else ''} each" + (f", evaluated every {every} steps" if every else "")
          + f"; {resources.describe()}\n  {stopping}"
          + (f"\n  {note}" if note else "") + "".join(f"\n  {line}" for line in pre.notes)
          + f"\n  seed {sweep.seed}: the same seed draws the same configs"
          + (f"\n  {extend.describe(extension, pre.points)}" if extension else "")
          + (f"\n  budget {budget.hours(pre.budget_s)} (trial time x {budget.trial_weight(resources):g}), "
             f"{budget.hours(run.spent_s)} spent before" if pre.budget_s else "")
          + f"\n  storage {redact(run.path)}; MLflow {redact(tracking.uri)} (experiment '{sweep.name}', parent run {parent_id})"
          + ("\n  resuming: finished trials are kept, unfinished ones continue from their last checkpoint"
             if opts.resume else ""), flush=True)

    trainable = tune.with_resources(
        tune.with_parameters(train_driver_fn, resources=resources, metric=sweep.metric, mode=sweep.mode,
                             storage=run.path, data=data.settings if run.settings else {}),  # a resume: checked data
        {"CPU": cluster.DRIVER_CPUS},
    )
    store_outage.install(redact(run.path))  # Ray's tracebacks of failed state saves become one line
    # From here on a tracking server that goes away costs no record: they are kept in the storage (spool.py) and replayed (outbox.py).
    trial_files = functools.partial(report.log_trial_files, tracking, task, storage=run.path)
    outbox.keep_records(tracking, run.path, experiment_id, run.path, on_files=trial_files)
    recorder = MlflowTrialCallback(tracking, experiment_id, parent_id, run.path, name_of, params_of=trial_params,
                                   on_finish=trial_files,
                                   dataset=dataset)
    ledger = accounting.TrialLedger(total)  # which trials ended for good: decides whether the sweep finished
    keeper = budget.keeper_for(run, pre.budget_s, resources, recorder.outbox.submit)  # what the trials spend
    callbacks = [  # record in MLflow first, then announce: a line on screen means it is stored
        ledger,
        MaxFailures(opts.max_failures),
        recorder,
        ProgressPrinter(sweep.metric, sweep.mode, total, epochs, name_of, stopper="ASHA" if asha else None),
        keeper,  # after the epoch's line: "budget spent" follows the report that spent it
        PlacementGroupCleanup(),  # last: an ended trial's files are recorded before its workers go
    ]
    if opts.resume:
        path, filesystem = storage_fs.ray_storage(run.path)
        try:
            tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True,
                                       param_space=space, storage_filesystem=filesystem)
        except (AttributeError, ModuleNotFoundError, ImportError) as err:  # its pickled state names code that moved
            raise UserError(f"cannot resume the sweep at {redact(run.path)}: its saved Tune state was written by "
                            f"another version of this code ({err}); finish it with that version, or start it "
                            "again with --name NEW_NAME") from None
        # The restored run config is the pickled one: this invocation's callbacks (today's MLflow store),
        # --max-failures and --max-concurrent apply instead. Ray 2.60 keeps both configs on its TunerInternal.
        local = tuner._local_tuner
        restored = local._tune_config.search_alg  # keeps its seed and its draws so far
        if isinstance(restored, BasicVariantGenerator):  # Tune applies --max-concurrent to a Searcher only
            restored.max_concurrent = resources.max_concurrent or 0
        # ASHA's rungs come back from the callbacks' saved state (rungs.py): the same list as the first run's.
        local._run_config.callbacks = callbacks + rungs.keeper_for(local._tune_config.scheduler)
        local._run_config.failure_config = tune.FailureConfig(max_failures=opts.max_failures)
        local._tune_config.max_concurrent_trials = (None if isinstance(restored, BasicVariantGenerator)
                                                    else resources.max_concurrent)
    else:
        scheduler = None
        if sweep.grace_period and opts.early_stopping:
            # Every N steps, ASHA counts evaluations; how many a trial makes depends on its data, so no max_t
            # stops it: it ends with its epochs.
            scheduler = ordered_asha.OrderedASHA(time_attr="evaluation" if every else "epoch",
                                                 max_t=EVALUATIONS_UNBOUNDED if every else epochs + 1,
                                                 grace_period=sweep.grace_period,
                                                 reduction_factor=sweep.reduction_factor)
        storage_path, storage_filesystem = storage_fs.ray_storage(run.path.rsplit("/", 1)[0])
        tuner = tune.Tuner(
            trainable,
            param_space=space,
            tune_config=tune.TuneConfig(
                metric=sweep.metric, mode=sweep.mode, scheduler=scheduler,
                num_samples=len(pre.points) if pre.points is not None else sweep.num_samples,
                search_alg=search_algorithm(sweep.search, sweep.seed, sweep.objectives, resources.max_concurrent,
                                            points=pre.points, evaluated=pre.evaluated, first=first),
                max_concurrent_trials=resources.max_concurrent if sweep.search else None,
            ),
            run_config=tune.RunConfig(
                name=run.name, storage_path=storage_path, storage_filesystem=storage_filesystem,
                callbacks=callbacks + rungs.keeper_for(scheduler), verbose=0,
                failure_config=tune.FailureConfig(max_failures=opts.max_failures),
            ),
        )
    fit_started = time.time()
    try:
        results = tuner.fit()
    except KeyboardInterrupt:  # a second Ctrl-C: stop at once; Tune's saved state still resumes
        accounting.abort()
        raise
    except BaseException:
        if not recorder.run_ids:  # failed before any trial started: nothing to resume, nothing to block
            tracking.set_terminated(parent_id, status="FAILED")
            run.save(status=state.FAILED_START)
            accounting.finished()
        raise
    signals.take_back()  # a Ctrl-C during the report below is an interrupt too
    # Tune returns normally from an interrupt (Ctrl-C, SIGTERM) at any moment: finished only when our own
    # records account for every trial the search produces.
    interrupted = not ledger.complete()
    spent = interrupted and keeper.stopped and signals.first_signal() is None  # stopped by the budget, not a signal
    child_run = recorder.child_run
    try:
        tracking.log(parent_id, metrics=budget.parent_records(keeper), tags={  # a resume that finishes overwrites it
            "status": budget.BUDGET_SPENT if spent else "interrupted" if interrupted else "finished"})
        summary = report.finish_sweep(results, sweep, task, tracking, parent_id, data.baseline, name_of, run.clock(),
                                      child_run=child_run, interrupted=interrupted, status_of=ledger.status,
                                      total=total, closing_later=True, full_epochs=epochs,
                                      why="its budget was spent" if spent else "the sweep was interrupted",
                                      earlier=extension.trials if extension else [])
        if spent:
            run.save(status=budget.BUDGET_SPENT)
            accounting.finished()
            print(budget.continue_command(keeper.spend.spent_s, keeper.budget_s), flush=True)
        elif interrupted:
            run.save(status="interrupted")
            accounting.finished()
            print(accounting.last_line(), flush=True)
        else:
            from orchestrator.export import log_best_model  # the results are stored: a failure here loses nothing

            if summary.get("best_is_earlier"):  # its model is that sweep's: no earlier run is changed
                print(extend.earlier_best_line(summary, summary["best_is_earlier"]), flush=True)
            else:
                log_best_model(tracking, parent_id, summary, task, sweep.metric, sweep.mode, completed=True,
                               wanted=wanted)
            report.close_sweep(tracking, parent_id, summary)  # best/* and FINISHED: the very last records
            run.save(status="finished")
            accounting.finished()
            print(summary["closing"], flush=True)  # the last line: where to look at the runs
            summary["unrecorded"] = tracking.outbox.finish(accounting.sync_command(opts, run, tracking))
            if summary["unrecorded"]:  # the server is still down: the one line that says how to finish the record
                print(summary["unrecorded"], flush=True)
    except KeyboardInterrupt:  # during the report: recorded as interrupted; a --resume writes it again
        accounting.abort()
        raise
    summary.update(fit_started=fit_started, results=results, parent_run_id=parent_id, storage=run.path,
                   interrupted=interrupted, data_root=data.root, budget_spent=spent)
    return summary
