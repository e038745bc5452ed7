"""`orchestrator export --run RUN_ID --out DIR [--register NAME [--register-if COND]]`: the command line of
export. What it writes, and how the best checkpoint is chosen, is orchestrator/export.py's.
"""

from __future__ import annotations

from pathlib import Path

from trainables.errors import UserError


def add_export_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "export", help="write a trial's best checkpoint as a model folder for `predict`",
        description="Pick a trial's best checkpoint by a metric's per-epoch history in MLflow and write "
                    "model.safetensors and config.json (loadable with timm.create_model('local-dir:DIR', "
                    "pretrained=True)), trial_config.json, labels.json, MODEL_CARD.md and the task's decision "
                    "files to --out.")
    parser.add_argument("--run", required=True, metavar="RUN_ID",
                        help="an MLflow trial run id, or a sweep's parent run id (its best trial is exported)")
    parser.add_argument("--out", required=True, metavar="DIR", help="the folder to write (created if needed)")
    parser.add_argument("--tracking-uri", metavar="URI",
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db here)")
    parser.add_argument("--metric", metavar="NAME",
                        help="choose the checkpoint by this metric (default: the trial's task's usual objective)")
    parser.add_argument("--mode", choices=("max", "min"),
                        help="whether the metric's maximum or minimum is best (default: min for losses, errors "
                             "and gaps, else max)")
    add_register_arguments(parser)


def add_register_arguments(parser) -> None:
    """--register and --register-if, the same on `sweep` and `export` (logged_model.py)."""
    parser.add_argument("--register", metavar="NAME",
                        help="also log the model as an MLflow LoggedModel of its trial's run, register it as NAME "
                             "and point the alias 'champion' at it (models:/NAME@champion)")
    parser.add_argument("--register-if", metavar="CONDITION",
                        help="register only when the chosen epoch's metric satisfies CONDITION, "
                             "e.g. 'val/race/group_gap<0.05' (ops: < <= > >= ==)")


def cmd_export(args) -> int:
    from orchestrator import logged_model
    from orchestrator.export import export_run
    from orchestrator.tracking import Tracking

    wanted = logged_model.registration(args.register, args.register_if)  # a bad condition fails before any work
    tracking = Tracking.holding(args.tracking_uri, f"MLflow run '{args.run}'")
    summary = export_run(args.run, args.out, metric=args.metric, mode=args.mode, tracking=tracking)
    print(f"exported run {summary['run_id']} epoch {summary['epoch']} ({summary['metric']} "
          f"{summary['value']:.4f}, best of epochs {summary['epochs']}) to {summary['out']}\n"
          f"predict with: python -m orchestrator predict --model {summary['out']} --images PATH --out DIR\n"
          + timm_line(summary["timm"], summary["out"]))
    if wanted is not None:
        lines, error = logged_model.publish(tracking, Path(summary["out"]), summary, wanted)
        print("\n".join(lines), flush=True)
        if error:
            raise UserError(error)
    return 0


def timm_line(timm_load, out: str) -> str:
    if not timm_load.ok:
        return f"timm cannot rebuild this model from a config ({timm_load.reason}); MODEL_CARD.md says how to load it"
    after = f" after `import {timm_load.needs_import}`" if timm_load.needs_import else ""
    return f"load with timm{after}: timm.create_model(\"local-dir:{out}\", pretrained=True)"
