"""Every file name of a checkpoint, a trial, a sweep and an export, and every column prefix.

Workers write these names, the orchestrator copies them into MLflow, and `export` and `predict`
read them back: one module says what each is called, so the three can never drift apart.
"""

# A checkpoint (written by rank 0 every epoch).
MODEL_WEIGHTS = "model.pt"                 # the model's state_dict
TRAIN_STATE = "train_state.pt"             # criterion, optimizer and scheduler state
CHECKPOINT_META = "meta.json"              # epoch, flat config, metrics reported with it
WEIGHTS_REPORT = "weights.json"            # where the starting weights came from, and which tensors were not loaded

# The files a task writes beside its checkpoint (each task declares which of these it writes).
THRESHOLDS = "thresholds.json"             # attributes: per strategy, per attribute
PER_ATTRIBUTE = "per_attribute.csv"        # attributes: the test split's per-attribute table
PREDICTIONS = "predictions"                # folder of <split>.parquet: scores and labels per example
PER_GROUP = "per_group.csv"                # fairface: accuracy per task and group
GROUP_PLOT = "group_accuracy.png"          # fairface
VERIFICATION_THRESHOLD = "verification_threshold.json"  # recognition: the exported same/different rule
VERIFICATION = "verification"              # recognition: <target>.parquet per verification set, and ROC_PLOT
ROC_PLOT = "roc.png"
PR_PLOT = "pr_curves.png"                  # attributes: rendered by the driver from predictions/test.parquet


def predictions_file(split: str) -> str:
    return f"{PREDICTIONS}/{split}.parquet"


# A trial's Train run, in the sweep's storage.
TRAIN_RUNS = "train_runs"                  # <storage>/train_runs/train-<trial id>/
DIVERGED_MARKER = "diverged.txt"           # a trial whose loss became NaN: never retried

# A sweep's parent run.
TRIALS_TABLE = "trials.csv"
LEADERBOARD_CSV, LEADERBOARD_MD = "leaderboard.csv", "leaderboard.md"
PARETO_TABLE, PARETO_PLOT = "pareto.csv", "pareto.png"  # a sweep of several objectives

# An export folder: timm's own layout (`timm.create_model("local-dir:DIR", pretrained=True)` reads
# TIMM_CONFIG and EXPORT_WEIGHTS), plus the files `predict` reads.
EXPORT_WEIGHTS = "model.safetensors"
TIMM_CONFIG = "config.json"                # timm's schema: architecture, num_classes, label_names, pretrained_cfg
EXPORT_CONFIG = "trial_config.json"        # the trial's flat config (TrainConfig.to_flat_dict): predict rebuilds from it
EXPORT_LABELS = "labels.json"
MODEL_CARD = "MODEL_CARD.md"
SWEEP_MODEL = "model"                      # a sweep's parent run: the best trial's export folder, as artifacts

# Column and metric prefixes.
SCORE, LABEL = "score/", "label/"          # predictions/<split>.parquet: one column of each per output
VAL, TEST, TRAIN, BEST = "val/", "test/", "train/", "best/"
TAG = "tag/"                               # a reported text value: the trial's MLflow run gets it as a tag
RESUMED = "resumed"                        # 1 on a result reported again from the checkpoint an attempt resumes from
STOPPED = TAG + "stopped"                  # "patience" on the last result of a trial that optim.patience stopped
OBJECTIVE = "_objective"                   # the sweep's {"metric", "mode"}, handed to the workers beside the config
