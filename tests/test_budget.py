"""The compute budget without Ray: `--budget` parsing, trial-hours accounting on a fake clock (workers and
GPUs, time while down not spent, a resume going on from what was spent), and when the sweep stops."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from orchestrator import budget
from orchestrator.state import SweepRun
from trainables.errors import UserError


@pytest.mark.parametrize("text, seconds", [("2h", 7200), ("90m", 5400), ("30s", 30), ("1.5h", 5400), (" 2H ", 7200),
                                           (".5m", 30)])
def test_a_budget_is_a_duration_in_hours_minutes_or_seconds(text, seconds):
    assert budget.parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["2", "2x", "-1h", "0h", "h", "1e400h", "inf h", "nan", "2 hours", ""])
def test_a_bad_budget_is_one_line_naming_the_flag_and_the_fix(text):
    with pytest.raises(UserError, match=r"^--budget .* is not a duration: .* e\.g\. --budget 2h") as caught:
        budget.parse_budget(text)
    assert "\n" not in str(caught.value)


def test_a_trial_costs_its_time_times_its_workers_or_their_gpus():
    cpu = SimpleNamespace(num_workers=2, gpus_per_worker=0.0, use_gpu=False)
    gpu = SimpleNamespace(num_workers=2, gpus_per_worker=4.0, use_gpu=True)
    assert budget.trial_weight(cpu) == 2 and budget.trial_weight(gpu) == 8


def test_spend_counts_running_time_only_and_goes_on_after_a_resume():
    spend = budget.Spend(weight=2)
    spend.start("a", 100)
    spend.start("b", 110)
    spend.charge(120)  # a: 20 s, b: 10 s, both x 2 workers
    spend.end("a", 130)
    assert spend.by_trial == {"a": 60, "b": 40} and spend.spent_s == 100
    spend.charge(130)
    assert spend.spent_s == 100  # nothing more: a charge at the same moment costs nothing
    # The sweep goes down (b stops at 140) and is resumed much later: the time between costs nothing.
    spend.end("b", 140)
    resumed = budget.Spend(weight=2, spent_s=spend.spent_s, by_trial=dict(spend.by_trial))
    resumed.start("b", 10_000)
    resumed.end("b", 10_005)
    assert resumed.by_trial == {"a": 60, "b": 70} and resumed.spent_s == 130 == sum(resumed.by_trial.values())


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _keeper(budget_s, spent_s=0.0):
    clock, saved, recorded, stops = Clock(), [], [], []
    keeper = budget.BudgetKeeper(budget_s, budget.Spend(1, spent_s), save=lambda s: saved.append(s.spent_s),
                                 record=lambda *a: recorded.append(a), say=lambda text: None, clock=clock,
                                 stop=lambda: stops.append(clock.now) or True)
    return keeper, clock, saved, recorded, stops


def _trial(trial_id):
    return SimpleNamespace(trial_id=trial_id, last_result={"epoch": 1})


def _two_running(budget_s):
    """A keeper with trials a and b started at 0, then its clock, saves, records and stops."""
    keeper, clock, saved, recorded, stops = _keeper(budget_s)
    a, b = _trial("a"), _trial("b")
    keeper.on_trial_start(0, [], a)
    keeper.on_trial_start(0, [], b)
    return keeper, clock, saved, recorded, stops, a, b


def test_once_spent_each_running_trial_ends_its_epoch_then_the_sweep_stops():
    keeper, clock, saved, recorded, stops, a, b = _two_running(budget_s=100)
    clock.now = 40
    keeper.on_trial_result(0, [], a, {"epoch": 1})
    assert not keeper.spent and saved[-1] == 80
    clock.now = 60  # 120 trial-seconds: spent while b is mid-epoch
    keeper.on_step_end(0, [])
    assert keeper.spent and not stops  # both are mid-epoch: each ends it first
    clock.now = 70
    a.last_result = {"epoch": 2}  # Tune updates it before the callbacks see the result
    keeper.on_trial_result(0, [], a, a.last_result)
    assert not stops  # b has not reported yet
    clock.now = 75
    keeper.on_trial_result(0, [], b, b.last_result)
    assert stops == [75] and keeper.stopped and saved[-1] == 150
    # Each trial's run gets its own spend, at its last epoch; they add up to the sweep's.
    assert {(t, s): m["budget/trial_hours"] * 3600 for t, s, m in recorded} == {("a", 2): 75, ("b", 1): 75}
    clock.now = 100  # Tune stops the trials now: nothing more is counted, and nothing else is recorded
    keeper.on_step_end(0, [])
    keeper.on_trial_complete(0, [], a)
    assert keeper.spend.spent_s == 150 == sum(keeper.spend.by_trial.values()) and len(recorded) == 2


def test_a_trial_that_ends_after_the_budget_ran_out_stops_the_sweep_before_another_starts():
    keeper, clock, _, _, stops, a, _ = _two_running(budget_s=50)
    clock.now = 30
    keeper.on_step_end(0, [])  # 60: spent, both mid-epoch
    clock.now = 35
    keeper.on_trial_complete(0, [], a)  # its resources would start a pending trial
    assert stops == [35]


def test_no_budget_only_counts_and_a_resume_goes_on_from_what_was_spent():
    keeper, clock, saved, _, stops = _keeper(budget_s=None, spent_s=500)
    keeper.on_trial_start(0, [], _trial("a"))
    clock.now = 10_000
    keeper.on_trial_complete(0, [], _trial("a"))
    assert not stops and saved[-1] == 10_500


def test_a_budget_spent_before_any_trial_runs_stops_at_once():
    keeper, _, _, _, stops = _keeper(budget_s=100, spent_s=100)
    keeper.on_step_end(0, [])
    assert stops == [0]


def test_a_stop_tune_cannot_take_is_said():
    said = []
    keeper = budget.BudgetKeeper(1, budget.Spend(1, 1), save=lambda s: None, say=said.append, stop=lambda: False)
    keeper.on_step_end(0, [])
    assert keeper.stopped and "stop it with Ctrl-C" in said[-1]


def test_a_resume_needs_a_budget_larger_than_what_was_spent(tmp_path):
    run = SweepRun("s", str(tmp_path), budget_s=60, spent_s=75.5)
    with pytest.raises(UserError, match=r"has spent 76 trial-seconds of its --budget of 60 trial-seconds: .* "
                                        r"--resume --budget 151s$"):
        budget.budget_for(None, run, resume=True)
    with pytest.raises(UserError, match="--resume --budget"):
        budget.budget_for("1m", run, resume=True)
    assert budget.budget_for("2m", run, resume=True) == 120
    assert budget.budget_for(None, SweepRun("s", str(tmp_path), budget_s=600, spent_s=5), resume=True) == 600
    assert budget.budget_for(None, run, resume=False) is None


def test_the_spend_survives_in_the_sweeps_state(tmp_path):
    from orchestrator import state

    run = SweepRun("s", str(tmp_path / "s"), budget_s=60, tracking="x")
    (tmp_path / "s").mkdir()
    run.save(status=budget.BUDGET_SPENT, spent_s=61.5, spent_by_trial={"a": 61.5})
    record = state._load(run.path)
    assert record["status"] == "budget spent" and record["spent_s"] == 61.5 and record["budget_s"] == 60
    assert record["spent_by_trial"] == {"a": 61.5}


def test_the_last_line_is_the_resume_command_with_a_larger_budget():
    line = budget.continue_command(3700, 3600, ["x/__main__.py", "sweep", "celeba_backbones", "--budget", "1h",
                                                "--smoke"])
    assert line == ("budget spent: 61.7 trial-minutes of 60 trial-minutes; continue this sweep with: python -m orchestrator "
                    "sweep celeba_backbones --smoke --resume --budget 7400s")
    assert budget.continue_command(60, 60, ["o", "sweep", "x", "--budget=1m"]).endswith("x --resume --budget 2m")
    assert budget.flag_value(7200) == "2h" and budget.flag_value(5400) == "90m"


def test_the_command_a_sweep_keeps_for_its_resume_has_no_budget():
    """A resume without --budget keeps the last one given, and a spent one would stop it again at once."""
    argv = ["x/__main__.py", "sweep", "celeba_backbones", "--budget", "1h", "--smoke", "--budget=2h"]
    assert budget.without_budget(argv) == ["x/__main__.py", "sweep", "celeba_backbones", "--smoke"]


def test_stopping_fit_calls_tunes_own_handler_and_is_no_signal():
    import signal

    from orchestrator import signals

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    called = []
    try:
        signals.install()
        signal.signal(signal.SIGINT, lambda signum, frame: called.append(signum))  # as Tune installs its own
        signals.watch_tune_stop()
        assert signals.stop_fit() and called == [signal.SIGINT]
        assert signals.first_signal() is None  # the sweep is not interrupted: it exits 4, not 130
        signal.signal(signal.SIGINT, signal.default_int_handler)
        assert not signals.stop_fit()  # no Tune handler: nothing to call
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def test_a_store_that_does_not_answer_costs_one_line_and_is_not_asked_again_until_the_stop():
    clock, said, tries = Clock(), [], []

    def save(spend):
        tries.append(clock.now)
        raise OSError("AWS Error NETWORK_CONNECTION during PutObject operation")

    keeper = budget.BudgetKeeper(100, budget.Spend(1), save=save, say=said.append, clock=clock, stop=lambda: True)
    trial = _trial("a")
    keeper.on_trial_start(0, [], trial)
    for clock.now in (10, 50, 90):
        keeper.on_trial_result(0, [], trial, trial.last_result)
    assert tries == [10] and len(said) == 1 and said[0].startswith("[") and "could not be saved" in said[0]
    clock.now = 120  # spent: the stop tries once more, whatever the store did before
    keeper.on_trial_result(0, [], trial, trial.last_result)
    assert tries == [10, 120] and keeper.stopped and len(said) == 2  # the second line: "budget spent"
