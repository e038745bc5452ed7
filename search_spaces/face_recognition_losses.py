"""Which ArcFace margin and which extras (center loss, focal, label smoothing) verify faces best?

Seed 004's ablation as one table: MobileFaceNet with ArcFace (s=64), m in {0.3, 0.5} x center-loss weight
in {0, 0.005, 0.03} x focal (gamma 0 or 2) x label smoothing (0 or 0.1), trained as InsightFace does
(SGD, momentum 0.9, weight decay 5e-4, cosine annealing) with hflip, Cutout and half-face occlusion. Real
data runs the full 2x3x2x2 = 24-trial grid. The demo set grids m and lambda and draws focal and smoothing
at random (tune.choice): 6 trials of 4 epochs. --smoke: lambda 0 vs 0.03 with focal and smoothing on, 1
epoch on 192 images, one worker per trial and both trials at once: 12 SGD steps each, 0.777 and 0.678
through the CLI in 60 s. With two DDP workers their global batch of 32 made it 6 steps, and both trials
ended at chance (0.50, tied) in 87 s; the CelebA smoke sweep exercises two-worker DDP. The objective is
the mean 10-fold verification accuracy over eval.targets. On the demo's LFW-format pairs an untrained
MobileFaceNet scores 0.8867 with its initial BatchNorm statistics (mean 0, variance 1; each demo identity
keeps its colours), but 0.50 once an epoch's batches have passed through it in train mode with no weight
update (an epoch at learning rate 0). The smoke's 12 steps take seed 0 to 0.70 (measured in-process, same
pairs; no focal or smoothing 0.753, also m=0 0.765, SGD lr 0.001 0.50, AdamW lr 1e-3 0.50 with or without
them): above the untrained weights, below the untrained net's initial score. The 6-trial demo sweep took
27 min on 2 CPUs and its trials reached 0.955-0.980, i.e. training cut the verification error from about
12% to 2-4.5%. Two one-worker trials at once (celeba_backbones' demo layout) were measured against it on
2 cores, with one epoch per trial and the same global batch (32): 520 s against 616 s for the six trials,
but 32 img/s of training against 26-30; the gain is mostly trial starts overlapping, about a tenth at 4
epochs. The demo keeps its two DDP workers per trial (and the figures above).
"""

from ray import tune

from search_spaces import Sweep, register


@register("face_recognition_losses")
def face_recognition_losses(real_data: bool, smoke: bool) -> Sweep:
    """Which ArcFace margin and which extras (center loss, focal, label smoothing) verify faces best?"""
    full = tune.grid_search if real_data else tune.choice  # the demo samples what real data grids
    return Sweep(
        name="face_recognition_losses",
        question=face_recognition_losses.__doc__,
        task="recognition",
        param_space={
            "model.name": "mobilefacenet",
            "head.name": "arcface",
            "head.s": 64.0,
            "head.m": 0.5 if smoke else tune.grid_search([0.3, 0.5]),
            "head.center_lambda": tune.grid_search([0.0, 0.03] if smoke else [0.0, 0.005, 0.03]),
            "head.focal_gamma": 2.0 if smoke else full([0.0, 2.0]),
            "head.label_smoothing": 0.1 if smoke else full([0.0, 0.1]),
            "optim.name": "sgd",
            "optim.scheduler": "cosine",
            "optim.momentum": 0.9,
            "optim.weight_decay": 5e-4,
            "optim.lr": 0.1 if real_data else 0.01,      # demo: 0.05 and 0.1 fell below the untrained net
            "optim.epochs": 1 if smoke else 15 if real_data else 4,
            "optim.batch_size": 128 if real_data else 16,  # per worker
            "data.image_size": 112,                      # MobileFaceNet's only input size
            "data.augment": ["hflip", "cutout", "half_face"],
            "data.max_train_images": 192 if smoke else 0,   # smoke: a slice of the same data
        },
        metric="val/mean_verification_accuracy",
        grace_period=1 if smoke else 2,
        workers_per_trial=1 if smoke and not real_data else 2,  # see the module's docstring
    )
