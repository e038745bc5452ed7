"""OrderedASHA (orchestrator/ordered_asha.py) stops the trials that one-at-a-time ASHA stops, at the same
rungs, however the trials' reports interleave; Ray's ASHA does not. The first tests drive the scheduler
as Tune does, with a stand-in controller; the last runs two trials at once through real Tune.
"""

from __future__ import annotations

import random
import sys
import time

import pytest
from ray import cloudpickle, tune
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from orchestrator.ordered_asha import OrderedASHA
from orchestrator.rungs import keeper_for

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import tests/

EPOCHS = 8
SETTINGS = {"time_attr": "epoch", "metric": "score", "mode": "max", "max_t": EPOCHS + 1, "grace_period": 2,
            "reduction_factor": 3}


class _Trial:
    def __init__(self, trial_id: str, status: str = "PENDING"):
        self.trial_id, self.status = trial_id, status


class _Controller:
    """What a scheduler calls back on Tune's controller: stop_trial, which ends the trial (on_trial_complete)."""

    def __init__(self, scheduler):
        self.scheduler, self.stopped, self.last = scheduler, [], {}

    def stop_trial(self, trial) -> None:
        self.stopped.append(trial.trial_id)
        self.scheduler.on_trial_complete(self, trial, self.last.get(trial.trial_id, {}))


def _report(scheduler, controller, trial, epoch: int, score: float) -> str:
    result = {"epoch": epoch, "score": score}
    controller.last[trial.trial_id] = result
    decision = scheduler.on_trial_result(controller, trial, result)
    if decision == TrialScheduler.STOP:
        controller.stop_trial(trial)
    return decision


def _run(scheduler_class, curves: list[list[float]], order: list[int]) -> dict[int, int]:
    """Feed the trials' learning curves to a scheduler, one report at a time in `order` (trial indices, each
    taking its next epoch); a trial stopped or finished reports no more. Returns each trial's last epoch."""
    scheduler = scheduler_class(**SETTINGS)
    controller = _Controller(scheduler)
    trials = [_Trial(f"t{i}") for i in range(len(curves))]
    for trial in trials:
        scheduler.on_trial_add(controller, trial)
    done: set[int] = set()
    epochs = {i: 0 for i in range(len(curves))}
    for i in order:
        if i in done or trials[i].trial_id in controller.stopped:
            done.add(i)
            continue
        epochs[i] += 1
        if _report(scheduler, controller, trials[i], epochs[i], curves[i][epochs[i] - 1]) == TrialScheduler.STOP:
            done.add(i)
        elif epochs[i] == len(curves[i]):
            done.add(i)
            scheduler.on_trial_complete(controller, trials[i], controller.last[trials[i].trial_id])
    return {i: epochs[i] for i in epochs}


def _judged_at(scheduler_class, curves, order) -> dict[int, int]:
    """Each trial's last rung: where it was stopped, or the last epoch for a trial that ran to its end."""
    ran = _run(scheduler_class, curves, order)
    rungs = [2, 6]  # grace 2, reduction factor 3, 8 epochs
    return {i: max([r for r in rungs if r <= e], default=0) if e < EPOCHS else EPOCHS for i, e in ran.items()}


def _sequential(curves) -> list[int]:
    return [i for i in range(len(curves)) for _ in range(EPOCHS)]


def test_a_later_trial_that_reaches_its_rung_first_waits_and_is_stopped_as_one_at_a_time():
    curves = [[0.5, 0.9] + [0.95] * 6, [0.5, 0.6] + [0.99] * 6]  # trial 1 is weaker at epoch 2, the rung
    racing = [1, 1, 1, 0, 0, 1]  # trial 1 reaches epoch 2 (and 3) before trial 0 reaches epoch 2
    assert _judged_at(OrderedASHA, curves, racing + _sequential(curves))[1] == 2
    assert _run(OrderedASHA, curves, racing + _sequential(curves))[1] == 3, "stopped when trial 0 reached its rung"
    # Ray's ASHA compares trial 1 with nothing at its rung, and it runs on past it.
    assert _run(ASHAScheduler, curves, racing + _sequential(curves))[1] == EPOCHS


@pytest.mark.parametrize("seed", range(25))
def test_any_interleaving_stops_the_same_trials_at_the_same_rungs_as_one_at_a_time(seed):
    """Trials at once in 2, 3 or 6 lanes, each reporting at a random pace, a later trial never more than two
    epochs ahead of an earlier one still running (so none ends before its turn at a rung: the one case
    where the decisions can differ, documented in the module)."""
    rng = random.Random(seed)
    curves = [sorted(rng.uniform(0.5, 0.95) for _ in range(EPOCHS)) for _ in range(6)]
    sequential = _judged_at(OrderedASHA, curves, _sequential(curves))
    assert sequential == _judged_at(ASHAScheduler, curves, _sequential(curves))  # one at a time, they agree
    lanes = rng.choice([2, 3, 6])
    order, queue, running, reported = [], list(range(len(curves))), [], {i: 0 for i in range(len(curves))}
    while queue or running:
        while queue and len(running) < lanes:
            running.append(queue.pop(0))
        paced = [t for t in running if all(reported[t] < reported[e] + 2 for e in running if e < t)]
        trial = rng.choice(paced)
        order.append(trial)
        reported[trial] += 1
        if reported[trial] == EPOCHS:  # a trial ASHA stopped passes its turns (see _run) until then
            running.remove(trial)
    assert _judged_at(OrderedASHA, curves, order + _sequential(curves)) == sequential


def test_an_earlier_trial_that_fails_lets_the_later_one_be_judged():
    scheduler = OrderedASHA(**SETTINGS)
    controller = _Controller(scheduler)
    first, second = _Trial("a"), _Trial("b")
    for trial in (first, second):
        scheduler.on_trial_add(controller, trial)
    _report(scheduler, controller, second, 1, 0.5)
    _report(scheduler, controller, second, 2, 0.6)  # waits for "a" at epoch 2
    scheduler.on_trial_error(controller, first)
    assert dict(scheduler._brackets[0]._rungs)[2] == {"b": 0.6}


def test_after_resume_a_trial_that_had_ended_before_a_rung_does_not_hold_the_later_ones_there():
    """--resume adds every saved trial again, ended ones too: one that ASHA stopped at epoch 2 never records at
    epoch 6, and a later trial's epoch 6 must not wait for it (it would train on, never stopped)."""
    scheduler = OrderedASHA(**SETTINGS)
    controller = _Controller(scheduler)
    stopped_before, leader, later = _Trial("a", "TERMINATED"), _Trial("b", "TERMINATED"), _Trial("c")
    for trial in (stopped_before, leader, later):
        scheduler.on_trial_add(controller, trial)
    rungs = dict(scheduler._brackets[0]._rungs)
    rungs[2].update({"a": 0.5, "b": 0.9})  # what RungKeeper restores
    rungs[6].update({"b": 0.95})
    assert _report(scheduler, controller, later, 2, 0.92) == TrialScheduler.CONTINUE
    assert _report(scheduler, controller, later, 6, 0.5) == TrialScheduler.STOP


def test_the_rung_keeper_saves_and_restores_ordered_asha_rungs():
    saved, restored = OrderedASHA(**SETTINGS), OrderedASHA(**SETTINGS)
    controller = _Controller(saved)
    trial = _Trial("a")
    saved.on_trial_add(controller, trial)
    _report(saved, controller, trial, 2, 0.7)
    (keeper,), (restorer,) = keeper_for(saved), keeper_for(restored)
    restorer.set_state(keeper.get_state())
    assert dict(restored._brackets[0]._rungs)[2] == {"a": 0.7}


def _trainable(config):
    for epoch in range(1, EPOCHS + 1):
        time.sleep(config["seconds_per_epoch"])
        tune.report({"epoch": epoch, "score": config["score"]})


@pytest.mark.ray
def test_two_trials_at_once_the_later_one_reaching_its_rung_first_is_stopped_there(local_ray, tmp_path):
    """Trial "good" (created first) is slow; "weak" reaches epoch 2 well before it. Ray's ASHA would compare
    "weak" with no record at epoch 2 and at epoch 6, and it would run all 8 epochs."""
    space = {"name": tune.grid_search(["good", "weak"])}
    space["score"] = tune.sample_from(lambda spec: 0.9 if spec.config["name"] == "good" else 0.1)
    space["seconds_per_epoch"] = tune.sample_from(lambda spec: 2.0 if spec.config["name"] == "good" else 1.0)
    results = tune.Tuner(
        tune.with_resources(_trainable, {"CPU": 1}), param_space=space,
        tune_config=tune.TuneConfig(scheduler=OrderedASHA(**SETTINGS), max_concurrent_trials=2),
        run_config=tune.RunConfig(name="ordered", storage_path=str(tmp_path / "runs"), verbose=0),
    ).fit()
    epochs = {r.config["name"]: r.metrics["epoch"] for r in results}
    assert epochs["good"] == EPOCHS
    assert epochs["weak"] < EPOCHS, "the weak trial ran on past its rung"
    assert epochs["weak"] >= 2


def test_only_rays_unhandled_error_line_for_a_discarded_trial_call_is_dropped():
    import logging

    from orchestrator.ordered_asha import UNRETRIEVED_LOG, QuietDiscardedTrialCalls

    quiet = QuietDiscardedTrialCalls()

    def record(text: str) -> logging.LogRecord:
        return logging.LogRecord(UNRETRIEVED_LOG, logging.ERROR, __file__, 1, text, None, None)

    discarded = ("Unhandled error (suppress with 'RAY_IGNORE_UNHANDLED_ERRORS=1'): ray::ImplicitFunc.train() "
                 "(pid=1, actor_id=ab, repr=train_driver_fn)\nray.train.WorkerGroupError: a worker health check failed")
    assert not quiet.filter(record(discarded))
    assert quiet.filter(record("Unhandled error (suppress with 'RAY_IGNORE_UNHANDLED_ERRORS=1'): ray::load_shard()"))
    assert quiet.filter(record("ray::ImplicitFunc.train() failed: shown"))


def test_a_sweep_installs_that_filter_once_on_rays_unretrieved_error_logger():
    import logging
    import signal

    from orchestrator.ordered_asha import UNRETRIEVED_LOG, QuietDiscardedTrialCalls
    from orchestrator.sweep import SweepOptions, run_sweep
    from trainables.errors import UserError

    log = logging.getLogger(UNRETRIEVED_LOG)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}  # a sweep installs its own
    try:
        for _ in range(2):  # stops at its unknown name, after the filters are in place
            with pytest.raises(UserError):
                run_sweep(SweepOptions("no_such_sweep"))
    finally:
        for number, handler in handlers.items():
            signal.signal(number, handler)
    assert sum(isinstance(f, QuietDiscardedTrialCalls) for f in log.filters) == 1
