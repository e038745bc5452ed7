"""Which loss handles CelebA's imbalanced attributes best: BCE, focal or asymmetric?

Each loss trains once first, at one learning rate (bce, focal, asl); then Optuna (through Tune) picks the
loss, focal's gamma and a log-uniform learning rate; ASHA stops the weak trials early. `loss.gamma` only acts
when the loss is focal.
"""

from ray import tune

from search_spaces import Sweep, register


@register("celeba_losses")
def celeba_losses(real_data: bool, smoke: bool) -> Sweep:
    """Which loss handles CelebA's imbalanced attributes best: BCE, focal or asymmetric?"""
    return Sweep(
        name="celeba_losses",
        question=celeba_losses.__doc__,
        task="attributes",
        param_space={
            "loss.name": tune.choice(["bce", "focal", "asl"]),
            "loss.gamma": tune.choice([1.0, 2.0]),
            "optim.lr": tune.loguniform(3e-4, 1e-2),
            "model.name": "seresnet50" if real_data else "resnet18",
            "optim.epochs": 2 if smoke else 12 if real_data else 4,
            "optim.batch_size": 64 if real_data else 32,
            "data.image_size": 128 if real_data else 64,
            "data.max_train_images": 480 if smoke else 0,
        },
        metric="val/macro_f1",
        num_samples=2 if smoke else 16 if real_data else 6,
        search="optuna",
        # Each loss once, at one learning rate, before Optuna's own draws: seed 0's six draws on the demo were
        # four focal and two ASL (TPE's random start-up; (2/3)^6, about 9%), and the sweep never trained BCE.
        first_points=[{"loss.name": loss, "loss.gamma": 2.0, "optim.lr": 1e-3 if real_data else 3e-3}
                      for loss in ("bce", "focal", "asl")],
        grace_period=1,
    )
