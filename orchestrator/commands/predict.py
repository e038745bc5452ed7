"""`orchestrator predict --model DIR --images PATH --out DIR`: the command line of predict. What it writes
and draws is orchestrator/predict.py's; the model side is trainables/inference.py's.
"""

from __future__ import annotations


def add_predict_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict", help="label face images with an exported model",
        description="Run an exported model (see `orchestrator export`) on an image or a folder of images "
                    "(.jpg/.jpeg/.png), preprocessed exactly as in the trial's evaluation. Writes predictions.csv "
                    "and grid.png to --out, and Grad-CAM overlays with --explain.")
    parser.add_argument("--model", required=True, metavar="DIR", help="a folder written by `orchestrator export`")
    parser.add_argument("--images", required=True, metavar="PATH", help="an image file, or a folder of images")
    parser.add_argument("--out", required=True, metavar="DIR", help="the folder to write (created if needed)")
    parser.add_argument("--decision", metavar="NAME",
                        help="for a model whose task decides by one of several named rules (see its MODEL_CARD.md): "
                             "which one labels its outputs (default: the task's own choice)")
    parser.add_argument("--explain", metavar="NAME",
                        help="Grad-CAM for this output (any name in labels.json, such as Smiling); for a model that "
                             "compares two photos, the reference photo's file name (as predictions.csv's file "
                             "column has it): each face is explained by its similarity to it")
    parser.add_argument("--limit", type=int, default=16, metavar="N",
                        help="faces drawn in the grids and explained (default 16); predictions.csv has every image")
    parser.add_argument("--device", metavar="DEVICE", help="torch device (default: cuda when available, else cpu)")


def cmd_predict(args) -> int:
    from orchestrator.predict import run_predict

    summary = run_predict(args.model, args.images, args.out, decision=args.decision,
                          explain=args.explain, limit=args.limit, device=args.device)
    skipped = f"; skipped {len(summary['skipped'])} undecodable" if summary["skipped"] else ""
    count = summary["images"]
    print(f"{count} image{'s' if count != 1 else ''} -> {summary['out']}/predictions.csv and grid.png{skipped}"
          + (f"; Grad-CAM of {summary['explained']} in {summary['explain_dir']}" if args.explain else ""))
    return 0
