"""ASHA's rungs survive a restore (orchestrator/rungs.py): a trial that runs only after `Tuner.restore`
is compared with the rung records of the trials that ran before it, and stopped where an uninterrupted
sweep would stop it.

Two trials, one at a time, through real Tune: trial "good" reports 0.9 at every epoch, trial "weak"
0.1. In the first run "weak" fails at once (as if the sweep had been stopped before it ran); the
restored run retries it. With the rungs restored ASHA stops it at epoch 1; with empty rungs (what Ray
2.60 restores on its own) it runs all four epochs.
"""

from __future__ import annotations

import os
import sys

import pytest
from ray import cloudpickle, tune
from ray.tune.schedulers import ASHAScheduler

from orchestrator.rungs import RungKeeper, keeper_for

pytestmark = pytest.mark.ray
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import tests/

EPOCHS = 4


def _trainable(config):
    if config["name"] == "weak" and os.path.exists(config["fail_flag"]):
        raise RuntimeError("the first run stops before this trial")
    for epoch in range(1, EPOCHS + 1):
        tune.report({"epoch": epoch, "score": 0.9 if config["name"] == "good" else 0.1})


def test_a_trial_run_after_restore_is_stopped_by_the_rungs_recorded_before(local_ray, tmp_path):
    fail_flag = tmp_path / "fail-weak"
    fail_flag.write_text("1")
    space = {"name": tune.grid_search(["good", "weak"]), "fail_flag": str(fail_flag)}
    scheduler = ASHAScheduler(time_attr="epoch", max_t=EPOCHS + 1, grace_period=1, reduction_factor=2)
    first = tune.Tuner(
        tune.with_resources(_trainable, {"CPU": 1}), param_space=space,
        tune_config=tune.TuneConfig(metric="score", mode="max", scheduler=scheduler, max_concurrent_trials=1),
        run_config=tune.RunConfig(name="rungs", storage_path=str(tmp_path / "runs"), verbose=0,
                                  callbacks=keeper_for(scheduler)),
    ).fit()
    assert sorted(r.config["name"] for r in first if r.error) == ["weak"]
    assert [r.metrics["epoch"] for r in first if not r.error] == [EPOCHS]

    fail_flag.unlink()
    tuner = tune.Tuner.restore(str(tmp_path / "runs" / "rungs"), trainable=tune.with_resources(_trainable, {"CPU": 1}),
                               resume_errored=True)
    local = tuner._local_tuner  # as orchestrator/sweep.py does: this run's callbacks on the restored config
    local._run_config.callbacks = keeper_for(local._tune_config.scheduler)
    results = {r.config["name"]: r for r in tuner.fit()}
    assert results["good"].metrics["epoch"] == EPOCHS
    assert results["weak"].error is None
    assert results["weak"].metrics["epoch"] == 1, "the weak trial ran on: the rungs were empty after the restore"


def test_state_round_trip_keeps_each_rung_and_this_process_values():
    saved = ASHAScheduler(time_attr="epoch", max_t=9, grace_period=1, reduction_factor=2)
    rungs = dict(saved._brackets[0]._rungs)
    assert sorted(rungs) == [1, 2, 4, 8]  # Ray's private layout that RungKeeper reads
    rungs[1]["a"], rungs[2]["a"], rungs[1]["b"] = 0.5, 0.6, 0.2
    restored = ASHAScheduler(time_attr="epoch", max_t=9, grace_period=1, reduction_factor=2)
    dict(restored._brackets[0]._rungs)[1]["b"] = 0.3  # recorded in this process before the restore
    RungKeeper(restored).set_state(RungKeeper(saved).get_state())
    assert dict(restored._brackets[0]._rungs) == {8: {}, 4: {}, 2: {"a": 0.6}, 1: {"a": 0.5, "b": 0.3}}
    assert keeper_for(None) == [] and keeper_for(tune.schedulers.FIFOScheduler()) == []
