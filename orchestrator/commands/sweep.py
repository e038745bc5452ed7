"""`orchestrator sweep NAME|FILE.yaml [options]`: run a built-in sweep or a sweep file. Its options, grouped
as `--help` shows them, are also `doctor`'s (add_sweep_arguments)."""

from __future__ import annotations

import argparse

from orchestrator.commands import EXIT_USER_ERROR
from orchestrator.commands.export import add_register_arguments
from orchestrator.commands.sync import EXIT_STILL_DOWN


def add_sweep_parser(commands) -> None:
    sweep = commands.add_parser("sweep", help="run a built-in sweep or a sweep file",
                                description="Run a built-in sweep, or a sweep file of your own (my_sweep.yaml).")
    add_sweep_arguments(sweep)


def add_sweep_arguments(sweep: argparse.ArgumentParser) -> None:
    """The options of `sweep` and `doctor`, in groups as `--help` shows them (as timm's train.py groups its own)."""
    data = sweep.add_argument_group("data")
    search = sweep.add_argument_group("search", "what the trials try, and how they are judged")
    resources = sweep.add_argument_group("resources", "where and how wide the trials run")
    storage = sweep.add_argument_group("storage and tracking")
    sweep.add_argument("name", metavar="NAME|FILE.yaml",
                       help="a built-in sweep (see `orchestrator list`) or the path of a sweep file of your own")
    data.add_argument("--data", metavar="PATH",
                       help="the dataset: a folder in its distributed layout, a `prepare`d folder, or a URI of one "
                            "(s3://, gs://, file://); without it, a synthetic demo set in the same format is used")
    search.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key, e.g. --set optim.lr=0.01 or --set model.name=resnet18,seresnet18 "
                            "(a comma list becomes a grid), or draw it: loguniform(1e-4,1e-2), uniform(0,1), "
                            "randint(1,5) (5 excluded), choice(a,b), grid(a,b); repeatable")
    data.add_argument("--smoke", action="store_true", help="the smallest run that exercises every part (minutes)")
    resources.add_argument("--num-workers", type=int, metavar="N", help="DDP workers per trial (default: the sweep's, usually 2)")
    resources.add_argument("--gpus-per-worker", type=float, metavar="G",
                       help="GPUs per worker (default: 1 when the cluster has GPUs, else 0); NCCL is used on GPUs")
    resources.add_argument("--max-concurrent", type=int, metavar="K",
                       help="trials at once (default: as many as the cluster's resources fit)")
    storage.add_argument("--storage", default="runs", metavar="PATH",
                       help="where Tune state and checkpoints go: a folder or a URI such as s3://bucket/runs (default: ./runs)")
    storage.add_argument("--tracking-uri", metavar="URI",
                       help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db here)")
    resources.add_argument("--budget", metavar="DURATION",
                       help="trial-hours the sweep may spend (wall time x workers, x GPUs per worker on GPUs), e.g. 2h, "
                            "90m, 30s, 1.5h: once spent no trial starts and running ones stop after their epoch; "
                            "--resume counts what was spent and takes a larger --budget (exit status 4)")
    resources.add_argument("--address", metavar="ADDR",
                       help="Ray cluster to attach to (default: $RAY_ADDRESS, else a local Ray)")
    storage.add_argument("--resume", action="store_true", help="continue the interrupted sweep of this name and storage")
    storage.add_argument("--name", dest="run_name", metavar="NAME",
                       help="name of this sweep run under --storage (default: the sweep's name)")
    search.add_argument("--from-run", metavar="RUN_ID",
                       help="for a policy sweep (runner policies): the MLflow run (a trial, or a sweep for its best trial) whose stored scores to use")
    resources.add_argument("--max-failures", type=int, default=1, metavar="N",
                       help="times a failed trial is retried from its last checkpoint (default: 1)")
    search.add_argument("--no-early-stopping", dest="early_stopping", action="store_false",
                       help="run every trial to its last epoch (no ASHA): the full grid, to compare against")
    search.add_argument("--metric", action="append", default=[], metavar="METRIC",
                       help="the objective, replacing the sweep's (e.g. val/race/accuracy); repeat it for several "
                            "objectives, whose non-dominated trials form a Pareto front (Tune and ASHA rank by the first)")
    search.add_argument("--mode", action="append", default=[], choices=["max", "min"],
                       help="max or min for each --metric, in the same order; repeatable")
    search.add_argument("--seed", type=int, metavar="N",
                       help="seeds Optuna's sampler and Tune's random draws (default: the sweep's, else 0): the same "
                            "seed draws the same configs")
    search.add_argument("--extend", metavar="RUN_ID",
                       help="the parent run of a finished sweep of the same task: its trials count as run (a grid "
                            "trains only its new points, an Optuna study starts from them) and are listed beside the "
                            "new ones; the new parent run is tagged extends=RUN_ID")
    search.add_argument("--extend-anyway", action="store_true",
                       help="extend even when the earlier sweep's dataset or fixed settings differ from this one's")
    add_register_arguments(sweep.add_argument_group("model registry"))


def cmd_sweep(args) -> int:
    import search_spaces

    factory = search_spaces.get(args.name)  # a mistyped name is its one line in a second, before torch, Tune and MLflow load
    if args.data and "://" not in args.data:  # so is a --data folder that is not there (3 s, not 9, on 2 cores)
        from trainables.data.hints import DATA_HINTS, existing_folder

        sweep = factory(real_data=True, smoke=args.smoke)
        if sweep.runner == "train" and sweep.task in DATA_HINTS:
            existing_folder(args.data, DATA_HINTS[sweep.task])
    from orchestrator.budget import EXIT_BUDGET_SPENT
    from orchestrator.sweep import SweepOptions, run_sweep

    from orchestrator import signals

    options = SweepOptions(**{k: v for k, v in vars(args).items() if k != "command"})
    summary = run_sweep(options)
    if summary.get("budget_spent"):
        return EXIT_BUDGET_SPENT
    if summary.get("interrupted"):
        return signals.exit_status()
    if summary.get("unrecorded"):
        return EXIT_STILL_DOWN
    if summary.get("register_error"):  # the sweep is recorded; the registration it asked for was a mistake
        return EXIT_USER_ERROR
    return 1 if summary.get("trials") and summary.get("failed") == summary.get("trials") else 0
