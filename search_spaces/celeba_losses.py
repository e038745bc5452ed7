"""Which loss handles CelebA's imbalanced attributes best: BCE, focal or asymmetric?

Optuna (through Tune) picks the loss, focal's gamma and a log-uniform learning rate; ASHA stops
the weak trials early. `loss.gamma` only acts when the loss is focal.
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
            "data.max_train_images": 1200 if smoke else 0,
        },
        metric="val/macro_f1",
        num_samples=2 if smoke else 16 if real_data else 6,
        search="optuna",
        grace_period=1,
    )
