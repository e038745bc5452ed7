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
import atexit
import os
import signal
import sys
import threading

from orchestrator import cluster
from orchestrator.redaction import error_text
from orchestrator.commands import EXIT_USER_ERROR
from orchestrator.commands.doctor import add_doctor_parser, cmd_doctor
from orchestrator.commands.export import add_export_parser, cmd_export
from orchestrator.commands.list import add_list_parser, cmd_list
from orchestrator.commands.predict import add_predict_parser, cmd_predict
from orchestrator.commands.prepare import add_prepare_parser, cmd_prepare
from orchestrator.commands.serve import add_serve_parser, cmd_serve
from orchestrator.commands.sweep import add_sweep_parser, cmd_sweep
from orchestrator.commands.sync import add_sync_parser, cmd_sync
from orchestrator.redaction import install_on_std_streams
from trainables.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orchestrator", description="Face-analysis sweeps on Ray Tune + Ray Train, recorded in MLflow."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (add_list_parser, add_sweep_parser, add_doctor_parser, add_prepare_parser, add_export_parser,
                add_predict_parser, add_sync_parser, add_serve_parser):
        add(commands)
    return parser


COMMANDS = {"list": cmd_list, "sweep": cmd_sweep, "doctor": cmd_doctor, "prepare": cmd_prepare,
            "export": cmd_export, "predict": cmd_predict, "sync": cmd_sync,
            "serve": cmd_serve}


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `orchestrator list | head` ends quietly
    # MLflow draws a tqdm bar for each artifact download (a policy sweep's stored scores, export --run, serve
    # --run): a line of `Downloading artifacts: 100%|...` in the console and in `ray job logs`. The user's own
    # setting wins.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
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


def leave(status: int) -> None:
    """End the process with `status` once Python's own exit work is done, without its teardown.

    What a normal exit does that matters runs here, in its order: Ray is stopped (cluster.disconnect), the
    other threads' work is waited for as the interpreter does (threading._shutdown), then the atexit handlers
    run (logging's last flush; Ray's own shutdown, the one that stops it when a command ends any other way),
    then the streams are flushed. What is skipped is freeing the interpreter's objects one by one: with torch,
    timm, Ray and MLflow imported, about 2 s after a command's last line on 2 cores (measured:
    benchmarks/cli_exit.py), for nothing, since the process ends."""
    try:
        try:
            cluster.disconnect()
        except Exception as err:  # noqa: BLE001  the command's work is done and recorded; say so, end as it ended
            print(f"warning: stopping Ray at the end failed ({error_text(err)}); its exit handler tries once more",
                  file=sys.stderr)
        # The interpreter's own wait for other threads: first threading's exit callbacks (they tell idle
        # ThreadPoolExecutor workers, such as MLflow's artifact pools, to end), then a join of every
        # non-daemon thread. A bare join would wait forever on an idle pool's worker.
        threading._shutdown()
        atexit._run_exitfuncs()
    except KeyboardInterrupt:  # a Ctrl-C once the command's work is done and recorded: end now
        pass
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe or stream: nothing more can reach it
                pass
        os._exit(status)


def entry() -> None:
    """`python -m orchestrator` and the installed `orchestrator` command. A bug's exception still ends the
    process the usual way, with its traceback; `main(argv)` itself returns, for callers in-process."""
    leave(main())


if __name__ == "__main__":
    entry()
