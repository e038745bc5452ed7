"""`orchestrator prepare FORMAT --src PATH --out PATH [--strict]`: pack a dataset into Parquet shards.

Progress goes to stderr as one rewritten line; the summary is one line on stdout. A user mistake
(bad path, malformed label file, a bad record or image under --strict, an --out that cannot be
written) arrives as a `UserError`, which the CLI's main prints as one line.
"""

from __future__ import annotations

import time


def add_prepare_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "prepare", help="pack a dataset into Parquet shards for training",
        description="Read a dataset in its distributed layout, check every image, and write Parquet shards "
                    "(OUT/<split>/part-*.parquet) plus OUT/metadata.json, which is switched last: OUT holds the "
                    "old dataset until the new one is complete, and files of your own in OUT are kept. "
                    "A re-run on unchanged inputs is skipped.")
    parser.add_argument("format", metavar="FORMAT",
                        help="the layout of --src, or 'auto' to detect it (`python -m orchestrator list` names the layouts)")
    parser.add_argument("--src", required=True, metavar="PATH", help="the dataset folder (or .bin file) as distributed")
    parser.add_argument("--out", required=True, metavar="PATH",
                        help="output folder: a local path or a pyarrow URI (s3://bucket/x, gs://..., file:///...)")
    parser.add_argument("--strict", action="store_true",
                        help="stop at the first missing or corrupt image or record instead of skipping it")
    parser.add_argument("--row-group-rows", type=int, default=1000, metavar="N",
                        help="rows per Parquet row group (default 1000)")
    parser.add_argument("--max-file-mib", type=int, default=64, metavar="MIB",
                        help="largest shard file (default 64 MiB)")


def cmd_prepare(args) -> int:
    from trainables.data.plans import FORMATS
    from trainables.data.prepare import StderrProgress, detect_format, prepare
    from trainables.errors import UserError

    fmt = detect_format(args.src) if args.format == "auto" else args.format
    FORMATS.get(fmt)  # an unknown layout: one line with the known ones
    if args.row_group_rows < 1 or args.max_file_mib < 1:
        raise UserError("--row-group-rows and --max-file-mib must be at least 1 (nothing was changed)")
    if fmt == "prepared":
        raise UserError(f"{args.src} is already a prepared dataset; train from it directly (--data {args.src})")
    start = time.monotonic()
    info = prepare(fmt, args.src, args.out, strict=args.strict, progress=StderrProgress(),
                   row_group_rows=args.row_group_rows, max_file_bytes=args.max_file_mib << 20)
    if info.already_prepared:
        print(f"already prepared: {args.out} ({fmt}, fingerprint {info.fingerprint[:12]}); nothing to do")
        return 0
    counts = ", ".join(f"{split} {rows}" for split, rows in info.counts.items())
    print(f"prepared {fmt} into {args.out}: {counts} rows; skipped {len(info.skipped)} bad images or records "
          f"(listed in metadata.json); {time.monotonic() - start:.1f} s")
    return 0
