"""Which backbone family predicts CelebA's 40 attributes best with plain BCE?

One backbone per family of seed 002 (ResNet, SE, SK, GC, CBAM, DenseNet, EfficientNet), all
through timm, each with ImageNet weights for `--set model.pretrained=true` (SE is timm's
legacy_seresnet*: its seresnet18/101 have none). Real data gets the seed's deep variants at 128 px, each
trial trained by two DDP workers. The demo set gets the small member of each family at 48 px, 1,280
images an epoch for 8 epochs, with ASHA stopping the weak ones after two epochs; its trials have one
worker each, as many at once as there are cores (on 2 cores, two one-worker trials train 1.2x the images
per second of one two-worker trial, and one trial's start overlaps the other's training).
"""

from ray import tune

from search_spaces import Sweep, register

REAL = ["resnet101", "resnet152", "legacy_seresnet101", "skresnext50_32x4d", "gcresnet50t",
        "cbam_resnet101", "densenet121", "efficientnet_b3"]
# Seed 002's own family, SE-ResNet, runs first. ASHA judges the trials at each rung in the order they were
# created (orchestrator/ordered_asha.py), as if they ran one after another: the first trains all 8 epochs, and
# so does any later trial that beats everything before it at a rung. With SE (the grid's best at epoch 2 as at
# epoch 8 on the demo set) first, ASHA stops each other family at epoch 2: 18 trial-epochs of the grid's 48,
# and the grid's winner (benchmarks/asha_efficiency.py).
# Two trials train at once: SE's 8 epochs take one core while the others take turns on the second, two epochs
# each. EfficientNet-B0 (the fastest here, channels-last on CPU) comes last, to follow SE on its core: both
# cores then finish together, where DenseNet-121 (the slowest) following SE ended the sweep alone.
DEMO = ["legacy_seresnet18", "resnet18", "skresnet18", "gcresnext26ts", "densenet121", "efficientnet_b0"]
SMOKE = ["resnet18", "legacy_seresnet18"]


@register("celeba_backbones")
def celeba_backbones(real_data: bool, smoke: bool) -> Sweep:
    """Which backbone family predicts CelebA's 40 attributes best with plain BCE?"""
    backbones = SMOKE if smoke else REAL if real_data else DEMO
    return Sweep(
        name="celeba_backbones",
        question=celeba_backbones.__doc__,
        task="attributes",
        param_space={
            "model.name": tune.grid_search(backbones),
            "loss.name": "bce",
            "optim.name": "adamw",
            "optim.lr": 1e-3 if real_data else 3e-3,
            "optim.epochs": 2 if smoke else 20 if real_data else 8,
            "optim.batch_size": 64 if real_data else 32,
            "data.image_size": 128 if real_data else 48,
            "data.augment": ["hflip"],
            # Demo: 1,280 images an epoch (40 batches; about 70 img/s per trial, two trials at once, on 2 cores).
            # --smoke: 480, about a minute on 2 cores (1,200 took 80 s), and ASHA stops SE-ResNet-18 at epoch 1.
            "data.max_train_images": 0 if real_data else 480 if smoke else 1280,
        },
        metric="val/mean_accuracy",
        # ASHA keeps the best third at each rung: on the demo, epochs 2 and 6 of 8. After one epoch the
        # ranking misleads (the eventual best, SE, was 4th of 6); after two it holds. The full grid would
        # cost 48 trial-epochs; benchmarks/asha_efficiency.py measures what ASHA spends and what it costs.
        grace_period=1 if smoke else 2,  # --smoke trains 2 epochs: it still shows a stop
        reduction_factor=3,
        # The demo trains small models on small images: two DDP workers on 2 cores spend a sixth of their time
        # in gloo's all-reduce. Real data and --smoke (which exercises DDP) keep two workers per trial.
        workers_per_trial=1 if not (real_data or smoke) else 2,
    )
