"""Which decision-threshold policy gives the best macro-F1, with no retraining?

Runs on a finished trial's stored validation and test scores (`--from-run RUN_ID`): Optuna picks a
calibration strategy, a smoothing of each threshold toward 0.5 and a global offset on validation;
the chosen policy is reported on test. Each trial takes milliseconds.
"""

from ray import tune

from search_spaces import Sweep, register


@register("celeba_thresholds")
def celeba_thresholds(real_data: bool, smoke: bool) -> Sweep:
    """Which decision-threshold policy gives the best macro-F1, with no retraining?"""
    from trainables.tasks.attributes.metrics import THRESHOLD_STRATEGIES  # torch's import: not for `list`

    return Sweep(
        name="celeba_thresholds",
        question=celeba_thresholds.__doc__,
        task="attributes",
        param_space={
            "policy.strategy": tune.choice(list(THRESHOLD_STRATEGIES)),
            "policy.smoothing": tune.uniform(0.0, 1.0),
            "policy.offset": tune.uniform(-0.15, 0.15),
        },
        metric="val/macro_f1",
        report=["test/macro_f1", "val/mean_accuracy", "test/mean_accuracy"],  # chosen on val, reported on test
        num_samples=8 if smoke else 40,
        search="optuna",
        grace_period=0,
        runner="policies",
    )
