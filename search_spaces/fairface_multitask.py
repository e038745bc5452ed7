"""Which backbone and formulation predict FairFace's race, gender and age best, and how evenly across groups?

`fairface_multitask`: a grid of backbone (an EfficientNet as in seed 000, a ResNet, an SE-ResNet) x
formulation (one head per task | seed 000's single 18-way sigmoid output); age.mode (bins | regression)
and the loss weighting (fixed | Kendall uncertainty) are drawn per trial, so the demo sweep is 3 x 2 = 6
trials rather than the 24 of a full grid (real data: 2 draws per grid point, 12 trials). Each trial also
reports val/<task>/group_gap and worst_group_accuracy beside the objective. Real data gets deeper
variants at 160 px; `--smoke` runs 2 trials (resnet18, each formulation) of 2 epochs on a slice.

`fairface_fair_frontier`: the same question as a trade-off, with two objectives, race accuracy (max)
and the race group gap (min: best group's accuracy minus the worst's, race and gender groups pooled),
over the full grid backbone x formulation x loss weighting (demo 2 x 2 x 2 = 8 trials, real data 12).
The sweep ends with its Pareto front (pareto.csv, pareto.png, `pareto=true` runs); its best run is the
most accurate front member. No ASHA: it would stop trials by accuracy alone, and a stopped trial is
never on the front. `--smoke`: resnet18, 4 trials of 1 epoch on a slice.
"""

from ray import tune

from search_spaces import Sweep, register

REAL = ["efficientnet_b3", "resnet50", "seresnet50"]
DEMO = ["efficientnet_b0", "resnet18", "legacy_seresnet18"]
SMOKE = ["resnet18"]


def _settings(real_data: bool, smoke: bool, smoke_epochs: int) -> dict:
    """The training settings both sweeps share."""
    return {
        "optim.lr": 1e-3 if real_data else 3e-3,
        "optim.epochs": smoke_epochs if smoke else 20 if real_data else 4,
        "optim.batch_size": 64 if real_data else 32,
        "data.image_size": 160 if real_data else 48 if smoke else 64,
        "data.demo_images": 3600,                        # demo: 3000 train / 600 val
        "data.max_train_images": 600 if smoke else 0,    # smoke: a slice of the same data
    }


@register("fairface_multitask")
def fairface_multitask(real_data: bool, smoke: bool) -> Sweep:
    """Which backbone and formulation predict FairFace's race, gender and age best, and how evenly across groups?"""
    return Sweep(
        name="fairface_multitask",
        question=fairface_multitask.__doc__,
        task="fairface",
        param_space={
            **_settings(real_data, smoke, smoke_epochs=2),
            "model.name": tune.grid_search(SMOKE if smoke else REAL if real_data else DEMO),
            "multitask.formulation": tune.grid_search(["multihead", "onehot18"]),
            "age.mode": tune.choice(["bins", "regression"]),
            "multitask.weighting": tune.choice(["fixed", "uncertainty"]),
        },
        metric="val/mean_task_accuracy",
        report=["val/race/accuracy", "val/gender/accuracy", "val/age/accuracy", "val/race/group_gap",
                "val/gender/group_gap", "val/age/mae_years"],
        num_samples=2 if real_data and not smoke else 1,
        grace_period=1 if smoke else 2,
    )


@register("fairface_fair_frontier")
def fairface_fair_frontier(real_data: bool, smoke: bool) -> Sweep:
    """Which FairFace models are accurate on race and fair across groups: the Pareto front of the two."""
    return Sweep(
        name="fairface_fair_frontier",
        question=fairface_fair_frontier.__doc__,
        task="fairface",
        param_space={
            **_settings(real_data, smoke, smoke_epochs=1),
            "model.name": tune.grid_search(SMOKE if smoke else REAL if real_data else DEMO[1:]),
            "multitask.formulation": tune.grid_search(["multihead", "onehot18"]),
            "multitask.weighting": tune.grid_search(["fixed", "uncertainty"]),
            "age.mode": "bins",
        },
        metric=["val/race/accuracy", "val/race/group_gap"],
        mode=["max", "min"],
        report=["val/race/worst_group_accuracy", "val/mean_task_accuracy", "val/gender/group_gap"],
        grace_period=0,  # no ASHA: see the docstring
    )
