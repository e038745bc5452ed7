"""The console's progress lines (orchestrator/progress.py), and the plan line's words for ASHA: a trial keeps
its number in the sweep, and the best so far includes the trials that ended before a `--resume` and is the best
by each trial's latest value, as the sweep's final pick is."""

from __future__ import annotations

import io
from types import SimpleNamespace

from orchestrator.progress import ProgressPrinter


def _trial(trial_id: str, model: str, status: str = "PENDING", value: float | None = None):
    result = {"val/acc": value, "epoch": 2} if value is not None else {}
    return SimpleNamespace(trial_id=trial_id, config={"model": model}, status=status, last_result=result)


def test_a_resumed_sweep_numbers_each_trial_by_its_place_and_remembers_the_best():
    out = io.StringIO()
    printer = ProgressPrinter("val/acc", "max", 3, 2, lambda config: config["model"], stream=out)
    first = _trial("a", "resnet18", "TERMINATED", 0.8)
    second, third = _trial("b", "seresnet18", "RUNNING"), _trial("c", "densenet121")
    trials = [first, second, third]
    printer.on_trial_start(0, trials, second)
    printer.on_trial_result(0, trials, second, {"val/acc": 0.7, "epoch": 1})
    printer.on_trial_start(0, trials, third)
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("start  trial 2/3 seresnet18"), lines
    assert "trial 2/3 seresnet18  epoch 1/2" in lines[1] and lines[1].endswith("best 0.8000 (resnet18)"), lines
    assert lines[2].endswith("start  trial 3/3 densenet121"), lines


def test_a_short_trial_is_called_stopped_by_asha_only_when_asha_runs():
    for stopper, expected in (("ASHA", "stopped early by ASHA after epoch 1"), (None, "ended after epoch 1 of 3")):
        out = io.StringIO()
        printer = ProgressPrinter("val/acc", "max", 1, 3, lambda config: config["model"], stream=out, stopper=stopper)
        trial = _trial("a", "resnet18", "TERMINATED")
        trial.last_result = {"val/acc": 0.7, "epoch": 1}
        printer.on_trial_start(0, [trial], trial)
        printer.on_trial_complete(0, [trial], trial)
        assert out.getvalue().splitlines()[-1].split(": ", 1)[1].startswith(f"val/acc 0.7000, {expected},"), out.getvalue()


def test_the_best_so_far_is_by_each_trials_latest_value_as_the_final_pick_is():
    """A trial's peak it has since left is not the best: the FairFace demo's progress named EfficientNet-B0 best
    at 0.4706 (its epoch 3), which ended at 0.4617 and was not the sweep's pick by last values."""
    out = io.StringIO()
    printer = ProgressPrinter("val/acc", "max", 2, 3, lambda config: config["model"], stream=out)
    a, b = _trial("a", "efficientnet_b0", "RUNNING"), _trial("b", "resnet18", "RUNNING")
    for trial, value in ((a, 0.40), (a, 0.47), (b, 0.45), (a, 0.44)):
        printer.on_trial_result(0, [a, b], trial, {"val/acc": value, "epoch": 1})
    ends = [line.rsplit("| ", 1)[1] for line in out.getvalue().splitlines()]
    assert ends == ["best 0.4000 (efficientnet_b0)", "best 0.4700 (efficientnet_b0)", "best 0.4700 (efficientnet_b0)",
                    "best 0.4500 (resnet18)"], ends
    minimizing = ProgressPrinter("val/loss", "min", 2, 3, lambda config: config["model"], stream=io.StringIO())
    for trial, value in ((a, 0.5), (b, 0.5), (a, 0.6)):
        minimizing.on_trial_result(0, [a, b], trial, {"val/loss": value, "epoch": 1})
    assert minimizing.best == (0.5, "resnet18")


def test_the_plan_line_promises_no_asha_stop_when_the_first_rung_is_not_before_the_last_epoch():
    """`sweep face_recognition_losses --set optim.epochs=1` (grace period 2) said 'ASHA stops a trial at epoch 2'
    of a one-epoch trial."""
    from orchestrator.sweep import asha_words

    assert asha_words(2, 2, 0, 1) == ("every trial runs all its epochs: ASHA's first rung, epoch 2, is not before "
                                      "the last (1)")
    assert asha_words(2, 2, 0, 2).startswith("every trial runs all its epochs")  # a rung at the last epoch stops nothing
    assert asha_words(2, 3, 0, 8) == ("ASHA stops a trial at epoch 2 (and at each later rung) unless it is in the "
                                      "best 1/3 so far")
    assert asha_words(1, 2, 50, 1).startswith("ASHA stops a trial at evaluation 1 (one every 50 optimizer steps)")
