"""`train_driver_fn`: what one Tune trial runs, namely one Ray Train trainer of DDP workers; and `RUNNERS`, the
table of what a sweep's `runner` names.

This runs in the trial's own Ray actor, which imports this module before the trial's first step, so
it imports only Ray and the worker's light entry point: no MLflow, pandas or plotting (the driver's
`sweep.py` imports those, and a trial start used to pay seconds for them), and no torch: the trainer is
Ray's `DataParallelTrainer` with `trainables.process_group`, the torch-free twin of `TorchTrainer`'s config.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass

import ray
import ray.train
from ray import tune
from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from orchestrator import cluster, local_scaling, placement, state
from orchestrator.store_outage import store_error
from trainables import storage_fs
from trainables.artifacts import DIVERGED_MARKER, OBJECTIVE, TRAIN_RUNS
from trainables.errors import UserError
from trainables.process_group import ProcessGroup
from trainables.worker import train_fn_per_worker


USER_ERROR = "UserError: "


@dataclass(frozen=True)
class Runner:
    """How a sweep's trials run. "train" is sweep.py's own Tune pipeline of Train workers; any other names a
    function `(opts, sweep) -> summary` that runs the whole sweep instead, imported only when chosen (this
    module stays light: each Tune trial's actor imports it)."""
    trains_models: bool             # its trials leave checkpoints a model can be exported from and registered
    entry: str = ""                 # "module:function" for a runner other than training
    what: str = ""                  # for messages: what its trials do

    def run(self, opts, sweep) -> dict:
        module, _, function = self.entry.partition(":")
        return getattr(importlib.import_module(module), function)(opts, sweep)


TRAIN, POLICIES = "train", "policies"
RUNNERS: dict[str, Runner] = {
    TRAIN: Runner(trains_models=True, what="trials train models"),
    # any task that declares a `Task.policy`: its policies scored on a finished trial's stored files
    POLICIES: Runner(trains_models=False, entry="orchestrator.policy_sweep:run_policy_sweep",
                     what="a policy sweep scores a finished trial's stored predictions"),
}


class TrialTrainer(DataParallelTrainer):
    """Ray Train's trainer (a `TorchTrainer` is one, given a torch config), less three actors that Train 2.60
    starts for every run and a trial of ours does not need, each one more process that imports Ray as the
    workers start:
    - Ray Data's `DatasetManager`, started given datasets or not: our workers read their own shards, so a run
      given no datasets starts none;
    - a detached `PlacementGroupCleaner`, which asks Ray's state API every second whether the controller is
      alive, to remove the worker group's placement group if it died. The sweep's driver does that for every
      ended trial (`placement.PlacementGroupCleanup`, which also removes the groups Ray left behind with its
      cleaner running), and Ray itself removes a group once both its creator actor and its job are gone;
    and on a local Ray, Ray Data's detached `AutoscalingCoordinator`, which only an autoscaler needs."""

    def _create_default_callbacks(self):
        from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
        from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

        unneeded = (PlacementGroupCleanerCallback,) + (() if self.datasets else (DatasetsCallback,))
        return [c for c in super()._create_default_callbacks() if not isinstance(c, unneeded)]

    def _initialize_and_run_controller(self, **controller_init_kwargs):
        """On a local Ray, the controller's scaling policy sends no autoscaler requests (local_scaling.py)."""
        policy = controller_init_kwargs.get("scaling_policy")
        if policy is not None:
            controller_init_kwargs["scaling_policy"] = local_scaling.for_this_ray(policy)
        return super()._initialize_and_run_controller(**controller_init_kwargs)


def worker_group(resources: cluster.TrialResources) -> dict:
    """The trainer arguments that shape a trial's workers: NCCL on GPUs (gloo on CPU), and each
    worker's CPUs and GPUs as planned."""
    worker = {"CPU": resources.cpus_per_worker}
    if resources.use_gpu:
        worker["GPU"] = resources.gpus_per_worker
    return {"backend_config": ProcessGroup(backend="nccl" if resources.use_gpu else "gloo"),
            "scaling_config": ray.train.ScalingConfig(num_workers=resources.num_workers, use_gpu=resources.use_gpu,
                                                      resources_per_worker=worker)}


def loop_config(config: dict, data: dict, metric: str, mode: str) -> dict:
    """What a trial's workers are given: its config, with the data's prepared roots where this invocation has
    them. A resumed trial's saved config names them where they were when it started (another machine's cache, a
    cache since moved, a cluster's copy made anew); the resume's settings check made sure they hold the same data
    (orchestrator/sweep_settings.py)."""
    return {**config, **data, OBJECTIVE: {"metric": metric, "mode": mode}}


def train_driver_fn(config: dict, *, resources: cluster.TrialResources, metric: str, mode: str, storage: str,
                    data: dict | None = None) -> None:
    """One Tune trial: fit one trainer whose workers run `train_fn_per_worker(config)`.

    The Train run lives in the sweep's storage (not Tune's local staging folder), under a name fixed
    by the trial id, so a retried or resumed trial finds its checkpoints on any node. `data`: this
    invocation's prepared roots (`loop_config`).
    """
    name = f"train-{tune.get_context().get_trial_id()}"
    runs = f"{storage}/{TRAIN_RUNS}"
    marker = f"{runs}/{name}/{DIVERGED_MARKER}"
    reason = state.read_text(marker)
    if reason:  # retrying a diverged trial would only diverge again
        raise RuntimeError(reason)
    # Ray Train's controller (started by fit() below) reads the bound from this process's environment.
    os.environ[cluster.START_TIMEOUT_ENV] = f"{resources.start_timeout_s:g}"
    placement.record_run(name)
    group = worker_group(resources)
    runs_path, runs_fs = storage_fs.ray_storage(runs)  # bounded retries for every checkpoint read and write
    if runs_fs is not None:  # Train's controller dies with a traceback on a store that does not answer
        storage_fs.check_answers(runs_fs, runs_path, runs)
    trainer = TrialTrainer(
        train_fn_per_worker,
        train_loop_config=loop_config(config, data or {}, metric, mode),
        **group,
        run_config=ray.train.RunConfig(
            # Same name and storage on a restart: Train resumes from the trial's last checkpoint.
            name=name,
            storage_path=runs_path,
            storage_filesystem=runs_fs,
            callbacks=[TuneReportCallback()],
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=1, checkpoint_score_attribute=metric, checkpoint_score_order=mode
            ),
            # Tune retries the whole trial. A controller failure (its workers not placed within the
            # bound) ends the run too: Ray's default retries it without end, queueing a new group each time.
            failure_config=ray.train.FailureConfig(max_failures=0, controller_failure_limit=0),
            logging_config=ray.LoggingConfig(log_level="WARNING"),  # per-report INFO lines drown progress
        ),
    )
    try:
        trainer.fit()
    except Exception as err:
        text = str(err)
        if "DivergedError" in text:
            reason = "diverged: " + text.split("DivergedError:", 1)[-1].strip().splitlines()[0]
            state.write_text(marker, reason)
            raise RuntimeError(reason) from None
        if type(getattr(err, "controller_failure", None)).__name__ == "WorkerGroupStartupTimeoutError":
            scaling = group["scaling_config"]
            raise RuntimeError(placement.explain_unplaced(
                name, scaling.num_workers, scaling.resources_per_worker, resources.start_timeout_s)) from None
        if USER_ERROR in text:  # a user's mistake found on a worker: its one line, not every worker's traceback
            raise UserError(text.rsplit(USER_ERROR, 1)[-1].strip().splitlines()[0]) from None
        reason = store_error(text)
        if reason:  # the store went away under Train itself (its controller, its checkpoint manager)
            raise UserError(f"the sweep's storage {runs} does not answer ({reason}); the trial is retried from its "
                            "last checkpoint (or continue with --resume once the store answers)") from None
        raise
