"""What a finished trial and a finished sweep leave behind: files in MLflow and the final table.

Workers write data (the files their task declares) beside their checkpoint; the driver renders the
task's plots from that data once per trial, so no worker spends time in matplotlib. Which files,
plots, columns and leaderboard there are is the task's to say: this module names none of them.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from ray import tune

from orchestrator import pareto, ranking
from orchestrator.extend import EARLIER, FROM, EarlierTrial
from orchestrator.tracking import Tracking, redact
from orchestrator.trial_runs import is_metric
from trainables import storage_fs
from trainables.artifacts import STOPPED, TRIALS_TABLE, WEIGHTS_REPORT
from trainables.models.weights import report_tags
from trainables.tasks import Task

STOPPED_EARLY = "stopped early"  # a table's status for a trial ASHA stopped at a rung

COLUMNS = ["train/images_per_sec"]  # shown for every task, after the task's own


def log_trial_files(tracking: Tracking, task: Task, run_id: str, result: dict, checkpoint_path: str | None,
                    storage: str = "") -> None:
    """Copy the trial's result files from its last checkpoint into its MLflow run, with the task's plots.

    The checkpoint is read from the sweep's storage. When that store does not answer (after its bounded
    retries), this says so in one line and tags the run, and the sweep goes on: the files stay in the
    checkpoint, where `export --run` reads them."""
    if not checkpoint_path:
        return
    import pyarrow
    import ray.train

    tracking.log(run_id, tags={"checkpoint": checkpoint_path})  # first: export --run finds it by this tag
    filesystem = storage_fs.ray_storage(storage)[1] if storage else None
    with contextlib.ExitStack() as stack:
        try:  # only the read from the store is guarded; MLflow's own failures are the tracking callback's
            folder = Path(stack.enter_context(ray.train.Checkpoint(checkpoint_path, filesystem=filesystem).as_directory()))
        except (OSError, pyarrow.ArrowException) as err:
            _unreadable_checkpoint(tracking, run_id, checkpoint_path, storage, err)
            return
        tracking.log_files(run_id, folder, list(task.trial_files))
        if (folder / WEIGHTS_REPORT).is_file():  # where the trial's starting weights came from, and what was not loaded
            tracking.log(run_id, tags=report_tags(json.loads((folder / WEIGHTS_REPORT).read_text())))
            tracking.log_files(run_id, folder, [WEIGHTS_REPORT])
        if task.render is not None:
            with tempfile.TemporaryDirectory() as tmp:
                tracking.log_files(run_id, Path(tmp), task.render(folder, Path(tmp)))


def _unreadable_checkpoint(tracking: Tracking, run_id: str, checkpoint_path: str, storage: str, err) -> None:
    """One line on the console, and a tag on the run when MLflow takes it; the sweep goes on."""
    where = f"{storage.split('://')[0]}://{checkpoint_path}" if "://" in storage else checkpoint_path
    line = redact(f"cannot read the checkpoint {where} ({storage_fs.one_line(err)}): its files are not in MLflow; "
                  "they stay in the checkpoint, which `export --run` reads")
    print(f"[{time.strftime('%H:%M:%S')}] note   {line}", flush=True)
    try:
        tracking.log(run_id, tags={"checkpoint_files": line[:5000]})
    except Exception:  # MLflow is down too: the line above is the record, and the callback reports MLflow
        pass


IMAGES_PER_SEC = "img/s"  # the table's name for train/images_per_sec


def results_table(results: tune.ResultGrid, metric: str, mode: str, describe, extra: list[str] = (),
                  columns: tuple[str, ...] = (), status_of=None, earlier: list = (),
                  full_epochs: int | None = None) -> pd.DataFrame:
    """One row per trial, best first, with the sweep's metric and the other headline numbers it reported.
    `status_of(trial_id)` says each trial's status (done, failed, unfinished) from the sweep's own records
    (accounting.TrialLedger.status); without it the grid's status is shown. A done trial that ran fewer
    epochs than its config's (else `full_epochs`) is `stopped early` (by ASHA), one that optim.patience
    ended is `patience`. `earlier`: an extended sweep's earlier trials (extend.EarlierTrial), listed too,
    each marked `earlier` in a `from` column."""
    rows = []
    statuses = trial_statuses(results)
    entries = [(index, result, False) for index, result in enumerate(results)]
    for index, result, old in entries + [(0, trial, True) for trial in earlier]:
        metrics = result.metrics or {}
        trial_id, status, trial_config = (statuses[index] if index < len(statuses) and not old
                                          else (metrics.get("trial_id", ""), "", {}))
        config = result.config or trial_config  # a trial stopped before its first report has no result config
        if old:
            shown = "done"  # only finished trials are taken from an earlier sweep
        elif status_of is not None:
            shown = status_of(trial_id)
        else:
            shown = "failed" if result.error or status == "ERROR" else "done" if status in ("TERMINATED", "") else "unfinished"
        planned = config.get("optim.epochs", full_epochs)
        if shown == "done" and metrics.get(STOPPED) == "patience":
            shown = "patience"  # optim.patience ended it: its metric stopped improving
        elif shown == "done" and planned and metrics.get("epoch", 0) < planned:
            shown = STOPPED_EARLY  # the scheduler (ASHA) stopped it at a rung
        row = {"trial": trial_id or metrics.get("trial_id", ""), "config": describe(config),
               **({FROM: EARLIER if old else "this sweep"} if earlier else {}),
               "status": shown, "epochs": metrics.get("epoch", 0), metric: metrics.get(metric, np.nan)}
        row.update({c: metrics[c] for c in [*extra, *columns, *COLUMNS] if c != metric and c in metrics})
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    # Stable, on values as ranking compares them: tied trials keep their creation order, so the `*` (row 0) is
    # the trial the sweep picks (ranking.best_index), whatever the last bits of their values.
    table = table.sort_values(metric, ascending=(mode == "min"), na_position="last", kind="stable",
                              key=lambda column: column.map(ranking.comparable).astype(float)).reset_index(drop=True)
    table.insert(0, "best", ["*" if i == 0 and pd.notna(table.loc[0, metric]) else "" for i in range(len(table))])
    return table.rename(columns={"train/images_per_sec": IMAGES_PER_SEC})


def printed(table: pd.DataFrame) -> str:
    """The table as the console shows it: metrics to 4 decimals, a speed (img/s) to 1."""
    speed = {IMAGES_PER_SEC: lambda v: f"{v:.1f}"} if IMAGES_PER_SEC in table else {}  # NaN stays NaN
    return table.to_string(index=False, float_format=lambda v: f"{v:.4f}", formatters=speed)


def trial_statuses(results: tune.ResultGrid) -> list[tuple[str, str, dict]]:
    """(trial id, status, config) of each result, in the grid's order, as the grid has it (an interrupted trial
    is TERMINATED there too). Ray 2.60 keeps the trials on the grid's experiment analysis."""
    analysis = getattr(results, "_experiment_analysis", None)
    return [(t.trial_id, str(t.status), t.config or {}) for t in getattr(analysis, "trials", [])]


def finish_sweep(results: tune.ResultGrid, sweep, task: Task, tracking: Tracking, parent_id: str,
                 baseline: dict | None, describe, started: float, child_run=lambda trial_id: None,
                 interrupted: bool = False, status_of=None, total: int | None = None,
                 closing_later: bool = False, full_epochs: int | None = None,
                 why: str = "the sweep was interrupted", earlier: list = ()) -> dict:
    """Print the table and log the sweep's files to the parent run. An interrupted sweep logs no `best/*`:
    its parent and its unfinished trials' runs are KILLED. A finished one gets `best/*` (and which child
    run is best) and is closed FINISHED, here, or with `closing_later` by the caller's `close_sweep`, as
    its very last step (after the model is logged), so that an interrupt during the report never leaves
    a FINISHED parent with half a record; the closing line (the link to the runs) is then
    `summary["closing"]`, for the caller to print last.

    A sweep of several objectives (`sweep.objectives`) marks its Pareto front in the table, tags each
    trial's run `pareto=true|false`, logs pareto.csv and pareto.png, and its best trial is the front
    member its rule picks (pareto.choose). `full_epochs`: a trial's epochs when its config does not say.
    `why`: what stopped an unfinished sweep, for its closing line (an interrupt, or its budget spent).

    `earlier`: an extended sweep's earlier trials (extend.EarlierTrial). The table, the leaderboard and the
    front list them too, marked as earlier, and the best trial may be one of them; their runs are never
    changed (no `pareto` tag)."""
    objectives = getattr(sweep, "objectives", [(sweep.metric, sweep.mode)])
    extra = [m for m, _ in objectives[1:] if m not in sweep.report] + list(sweep.report)
    table = results_table(results, sweep.metric, sweep.mode, describe, extra, task.report_columns, status_of,
                          earlier, full_epochs)
    earlier_runs = {t.trial_id: t.run_id for t in earlier}
    run_of = lambda trial_id: earlier_runs.get(trial_id) or child_run(trial_id)  # noqa: E731
    entries = [*results, *earlier]
    front = None
    if len(objectives) > 1 and not interrupted and not table.empty:
        front = pareto_front(entries, table, objectives, getattr(sweep, "max_gap", None), full_epochs)
        table = front["table"]
    if interrupted and not table.empty:
        table["best"] = ""  # a partial sweep names no winner (no best/*): nor does its table
    ours = table[table[FROM] != EARLIER] if earlier and not table.empty else table
    failed = int((ours["status"] == "failed").sum()) if not ours.empty else 0
    policies = getattr(sweep, "runner", "train") == "policies"
    noun = "policies" if policies else "trials"  # as its progress lines say
    if policies and not table.empty:  # a policy is scored once, never trained: no status, no epochs
        table = table.drop(columns=["status", "epochs"]).rename(columns={"trial": "policy"})
    print("\n" + (printed(table) if not table.empty else f"no {noun} ran"))
    summary: dict = {"trials": len(ours), "failed": failed, "baseline": baseline, "earlier": len(earlier)}
    if interrupted:
        return interrupted_sweep(tracking, parent_id, ours, started, child_run, summary, total, why)
    if front is not None:
        best = front["best"]
        tag_front(tracking, ours, child_run)
        print(f"\nPareto front of {', '.join(f'{m} ({d})' for m, d in objectives)}: {front['members']} of "
              f"{front['candidates']} trials that ran all their epochs (column {pareto.FRONT}); best: {front['rule']}")
    else:
        best = best_of(entries, sweep.metric, sweep.mode)
    if best is not None and best.metrics and sweep.metric in best.metrics:
        tags = {"best_trial": describe(best.config)}
        if front is not None:
            tags["pareto_rule"] = front["rule"]
        best_run = run_of(best.metrics.get("trial_id", ""))
        if best.metrics.get("trial_id", "") in earlier_runs:
            summary["best_is_earlier"] = next(t.sweep_run_id for t in earlier if t.trial_id == best.metrics["trial_id"])
        if best_run:
            tags["best_run_id"] = best_run
        summary.update(best=describe(best.config), best_value=best.metrics[sweep.metric], best_run_id=best_run,
                       best_metrics=best.metrics, best_tags=tags)
        against = "".join(f"  ({k} {v:.4f})" for k, v in (baseline or {}).items())
        print(f"\nbest: {summary['best']}  {sweep.metric} {summary['best_value']:.4f}{against}")
        if front is None:
            tied = ties(entries, best, sweep.metric, describe)
            if tied:
                tags["best_tied_with"] = "; ".join(tied)
                summary["tied"] = tied
                one = "policy" if policies else "trial"
                others = f"{len(tied)} other {noun if len(tied) > 1 else one}"
                print(f"      tied with {others} at {summary['best_value']:.4f}: {'; '.join(tied)} (a tie goes to the "
                      f"{one} created first; compare their other metrics in MLflow)")
    leaderboard = None
    if task.leaderboard is not None:
        rows = [(describe(r.config or {}) + (f" ({EARLIER})" if isinstance(r, EarlierTrial) else ""),
                 r.metrics or {}, r.config or {}) for r in entries if r.metrics]
        leaderboard = lambda folder: task.leaderboard(rows, folder)  # noqa: E731
    files = None
    if front is not None:
        files = lambda folder: pareto.write(table, objectives, front["candidate"], folder, sweep.name)  # noqa: E731
    log_sweep_files(tracking, parent_id, table, leaderboard, files)
    tracking.log(parent_id, metrics={"sweep/minutes": (time.time() - started) / 60, "sweep/failed_trials": failed,
                                     **({"pareto/members": front["members"]} if front is not None else {})})
    experiment = tracking.experiment_of(parent_id)
    kept = f" ({len(earlier)} of them from the sweep it extends)" if earlier else ""
    summary["closing"] = (f"{len(table)} {noun}{kept} in {(time.time() - started) / 60:.1f} min; compare them in MLflow: "
                          f"{tracking.runs_url(experiment)}")
    if not closing_later:
        close_sweep(tracking, parent_id, summary)
        print(summary["closing"], flush=True)
    return summary


def _value(result, metric: str):
    return ((result.metrics or {}) if result is not None else {}).get(metric)


def best_of(results: list, metric: str, mode: str):
    """The result with the best finite `metric` (None when none has one); the first of equals (ranking.py)."""
    index = ranking.best_index([_value(r, metric) for r in results], mode)
    return results[index] if index is not None else None


def ties(results: list, best, metric: str, describe) -> list[str]:
    """How the other results whose `metric` ties with `best`'s are described (ranking.py), in creation order."""
    results = list(results)
    values = [_value(r, metric) for r in results]
    index = next(i for i, r in enumerate(results) if r is best)
    return [describe(results[i].config or {}) + (f" ({EARLIER})" if isinstance(results[i], EarlierTrial) else "")
            for i in ranking.tied_with(values, index)]


def pareto_front(results, table: pd.DataFrame, objectives: list[tuple[str, str]], max_gap: float | None,
                 full_epochs: int | None) -> dict:
    """The table with its front marked, which rows were candidates (done, and all their epochs run: never
    a trial ASHA stopped), the picked member's result and the rule that picked it."""
    by_trial = {str((r.metrics or {}).get("trial_id", "")): r for r in results}
    candidate = []
    for _, row in table.iterrows():
        result = by_trial.get(str(row["trial"]))
        config = (result.config or {}) if result is not None else {}
        planned = int(config.get("optim.epochs", full_epochs or row["epochs"] or 0))
        candidate.append(result is not None and row["status"] == "done" and int(row["epochs"] or 0) >= planned)
    marked, picked, rule = pareto.mark(table, objectives, candidate, max_gap)
    best = by_trial.get(str(marked.loc[picked, "trial"])) if picked is not None else None
    return {"table": marked, "candidate": candidate, "best": best, "rule": rule,
            "members": int((marked[pareto.FRONT] == "*").sum()), "candidates": int(sum(candidate))}


def tag_front(tracking: Tracking, table: pd.DataFrame, child_run) -> None:
    """`pareto=true` on each front member's run, `pareto=false` on every other trial's."""
    for _, row in table.iterrows():
        run_id = child_run(row["trial"])
        if run_id:
            tracking.log(run_id, tags={"pareto": "true" if row[pareto.FRONT] == "*" else "false"})


def close_sweep(tracking: Tracking, parent_id: str, summary: dict) -> None:
    """The last records of a finished sweep: `best/*` with the best trial's tags in one batch, then the
    parent FINISHED (FAILED when every trial failed). `best/<key>` is the best trial's last `<key>`; the
    trial's own `best/*` (its best evaluation) stays on its run, not doubled here as `best/best/*`."""
    if summary.get("best_metrics") is not None:
        best_metrics = {f"best/{k}": v for k, v in summary["best_metrics"].items()
                        if is_metric(k, v) and not k.startswith("best/")}
        tracking.log(parent_id, metrics=best_metrics, tags=summary.get("best_tags"))
    failed, trials = summary.get("failed", 0), summary.get("trials", 0)
    tracking.set_terminated(parent_id, status="FAILED" if failed == trials else "FINISHED")


def log_sweep_files(tracking: Tracking, parent_id: str, table: pd.DataFrame, leaderboard=None, more=None) -> None:
    """trials.csv, and the task's leaderboard files and any `more` (each `(folder) -> names`), into the parent run."""
    with tempfile.TemporaryDirectory() as tmp:
        table.to_csv(Path(tmp) / TRIALS_TABLE, index=False)
        files = [TRIALS_TABLE] + [name for write in (leaderboard, more) if write is not None for name in write(Path(tmp))]
        tracking.log_files(parent_id, Path(tmp), files)


def interrupted_sweep(tracking: Tracking, parent_id: str, table: pd.DataFrame, started: float, child_run,
                      summary: dict, total: int | None = None, why: str = "the sweep was interrupted") -> dict:
    """Close an interrupted sweep: the table of what ran, every unfinished trial's run KILLED, the parent
    KILLED, and no best/* (a partial sweep has no winner). `total`: the trials the search produces (some
    may not have been created yet)."""
    unfinished = table.loc[table["status"] == "unfinished", "trial"].tolist() if not table.empty else []
    for trial_id in unfinished:
        run_id = child_run(trial_id)
        if run_id:
            tracking.set_terminated(run_id, status="KILLED")
    log_sweep_files(tracking, parent_id, table)
    tracking.log(parent_id, metrics={"sweep/minutes": (time.time() - started) / 60})
    tracking.set_terminated(parent_id, status="KILLED")
    ended = len(table) - len(unfinished)
    print(f"{ended} of {max(total or 0, len(table))} trials ended in {(time.time() - started) / 60:.1f} min before "
          f"{why}; nothing is lost, and MLflow marks the sweep and its unfinished trials KILLED.")
    return {**summary, "unfinished": len(unfinished)}
