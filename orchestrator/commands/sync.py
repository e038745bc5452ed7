"""`python -m orchestrator sync NAME|FILE [--storage S] [--name N] [--tracking-uri U]`: write what a sweep
kept while its MLflow server was down (orchestrator/spool.py, replayed by outbox.py), and close its runs as
the sweep would have.

A sweep whose server is still down at its end says so in one line naming this command, and exits 3. The
records are in the sweep's storage, so this runs anywhere that storage and the server can be reached.
Running it again is harmless: every kept record is written once.
"""

from __future__ import annotations

import functools
import json

from trainables.errors import UserError

EXIT_STILL_DOWN = 3  # the same status as a sweep that ended with records kept


def add_sync_parser(commands) -> None:
    sync = commands.add_parser(
        "sync", help="write what a sweep kept while its MLflow server was down",
        description="Write the MLflow records a sweep kept in its storage while the tracking server was down "
                    "(epochs, files, the best trial, the runs' end), once each, and close its runs.")
    sync.add_argument("name", metavar="NAME|FILE.yaml", help="the sweep, as it was given to `sweep`")
    sync.add_argument("--storage", default="runs", metavar="PATH",
                      help="the sweep's --storage: a folder or a URI such as s3://bucket/runs (default: ./runs)")
    sync.add_argument("--name", dest="run_name", metavar="NAME",
                      help="the sweep run's --name under --storage (default: the sweep's name)")
    sync.add_argument("--tracking-uri", metavar="URI",
                      help="MLflow tracking URI the sweep recorded to (default: $MLFLOW_TRACKING_URI or "
                           "sqlite:///mlflow.db here)")


def cmd_sync(args) -> int:
    from orchestrator import driver_lease, report, state
    from orchestrator.preflight import Preflight
    from orchestrator.sweep import SweepOptions
    from orchestrator.outbox import keep_records
    from orchestrator.spool import Spool
    from orchestrator.tracking import Tracking, redact
    from trainables.tasks import get_task

    pre = Preflight(SweepOptions(name=args.name, storage=args.storage, tracking_uri=args.tracking_uri,
                                 run_name=args.run_name))
    pre.check_sweep()
    path = f"{state.storage_root(args.storage)}/{args.run_name or pre.sweep.name}"
    try:
        record = json.loads(state.read_text(f"{path}/{state.STATE_FILE}") or "{}")
    except ValueError:
        record = {}
    if not record.get("parent_run_id"):
        raise UserError(f"no sweep at {redact(path)}: pass the --storage and --name the sweep ran with")
    # Its own driver writes what it kept once MLflow answers: a second writer would record it twice.
    driver_lease.check_free(path, "run this command again if it ended with records still kept")
    spool = Spool(path)
    if not spool.ops():
        print(f"nothing to sync: every record of the sweep at {redact(path)} is in MLflow")
        return 0
    tracking = Tracking(args.tracking_uri)  # a server still down is a one-line error here
    state.SweepRun(path.rsplit("/", 1)[-1], path, tracking=record.get("tracking", "")).check_tracking(
        tracking.uri, redact(tracking.uri))
    parent = record["parent_run_id"]
    experiment = tracking.client.get_run(parent).info.experiment_id
    task = get_task(pre.base.task) if pre.base is not None else None
    on_files = functools.partial(report.log_trial_files, tracking, task, storage=path) if task else None
    outbox = keep_records(tracking, path, experiment, path, on_files=on_files)
    if outbox.pending:
        print(f"MLflow at {redact(tracking.uri)} stopped answering again: {outbox.pending} record(s) are still kept "
              f"in {outbox.where}; run this command again when it is back")
        return EXIT_STILL_DOWN
    status = tracking.client.get_run(parent).info.status
    print(f"synced: the sweep at {redact(path)} is fully recorded in MLflow (parent run {parent}, {status})")
    return 0
