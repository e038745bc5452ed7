"""The command line: `python -m orchestrator sweep|list ...` (also installed as `orchestrator`).

A mistake the user can fix (a `UserError`) is printed as one line with a non-zero exit and no
traceback; anything else is a bug and keeps its traceback. Everything the process prints, a library's
text included, passes one redaction (orchestrator/redaction.py): no credential reaches a console or a job log.

Exit statuses: 0 done; 1 every trial failed; 2 a user's mistake; 3 the sweep finished but its MLflow
server was still down at the end (its records are kept in the storage: `sync` writes them); 4 the
sweep's --budget was spent (`--resume --budget LARGER` continues); 130 and 143 interrupted by SIGINT and
SIGTERM (`--resume` continues).
"""

from __future__ import annotations

import argparse
import signal
import sys

from orchestrator.budget import EXIT_BUDGET_SPENT
from orchestrator.commands.serve import add_serve_parser, cmd_serve
from orchestrator.commands.sync import EXIT_STILL_DOWN, add_sync_parser, cmd_sync
from orchestrator.export import add_export_parser, add_register_arguments, cmd_export
from orchestrator.predict import add_predict_parser, cmd_predict
from orchestrator.prepare_cli import add_prepare_parser, cmd_prepare
from orchestrator.redaction import install_on_std_streams
from trainables.errors import UserError

EXIT_USER_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orchestrator", description="Face-analysis sweeps on Ray Tune + Ray Train, recorded in MLflow."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    listing = commands.add_parser("list", help="show the named sweeps and the question each answers")
    listing.add_argument("--keys", action="store_true", help="also list every config key with its default")

    sweep = commands.add_parser("sweep", help="run a built-in sweep or a sweep file",
                                description="Run a built-in sweep, or a sweep file of your own (my_sweep.yaml).")
    add_sweep_arguments(sweep)
    doctor = commands.add_parser(
        "doctor", help="check a sweep's set-up without running it",
        description="Run the checks that `sweep` runs before any trial (names, MLflow, storage, data, Ray, "
                    "resources) and print each with its fix.")
    add_sweep_arguments(doctor)
    add_prepare_parser(commands)
    add_export_parser(commands)
    add_predict_parser(commands)
    add_sync_parser(commands)
    add_serve_parser(commands)
    return parser


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
                       help="for a threshold-policy sweep: the MLflow run (a trial, or a sweep for its best trial) whose stored scores to use")
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
    add_register_arguments(sweep.add_argument_group("model registry"))


def cmd_list(args) -> int:
    import search_spaces
    from trainables.data.plans import FORMATS
    from trainables.tasks import TASKS

    for name in search_spaces.names():
        print(f"{name:<24} {search_spaces.question(name)}")
    print(f"\ndataset layouts (for --data and prepare): {', '.join(FORMATS.names())}")
    if args.keys:
        from trainables.config import TrainConfig, key_help, key_range

        for task_name, task in TASKS.items():
            print(f"\nconfig keys of task '{task_name}' ({task.title}); use with --set KEY=VALUE:")
            for key, value in TrainConfig(task_name).to_flat_dict().items():
                if key != "task":
                    valid = key_range(key, task_name)
                    note = key_help(key, task_name) + (f" [{valid}]" if valid is not None else "")
                    print(f"  {key:<24} {value!r}  # {note}")
    return 0


def cmd_sweep(args) -> int:
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


def cmd_doctor(args) -> int:
    from orchestrator.preflight import Preflight
    from orchestrator.sweep import SweepOptions

    from orchestrator.logged_model import registration

    options = SweepOptions(**{k: v for k, v in vars(args).items() if k != "command"})
    registration(options.register, options.register_if)  # a bad --register-if is a one-line error here too
    ok = Preflight(options).report()
    print("all checks passed: `sweep` would start" if ok else "fix the ✗ lines above, then run the sweep")
    return 0 if ok else EXIT_USER_ERROR


COMMANDS = {"list": cmd_list, "sweep": cmd_sweep, "doctor": cmd_doctor, "prepare": cmd_prepare,
            "export": cmd_export, "predict": cmd_predict, "sync": cmd_sync,
            "serve": cmd_serve}


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `orchestrator list | head` ends quietly
    install_on_std_streams(sys.argv[1:] if argv is None else argv)  # every line printed here is redacted
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:  # at any moment of a sweep: start-up, a second Ctrl-C, the final report
        from orchestrator import accounting, signals

        accounting.abort()  # the parent KILLED and the state `interrupted`, if the sweep got that far
        sys.stdout.flush()
        print(accounting.last_line(), file=sys.stderr, flush=True)
        return signals.exit_status()


if __name__ == "__main__":
    sys.exit(main())
