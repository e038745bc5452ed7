"""MLflow: the database, one parent run per sweep, one child run per trial, and their files.

Only the driver talks to MLflow (trials never do), so the sqlite database is created once, before
any trial starts. Runs are found again by tags (the sweep's storage path and the trial id), which
is what lets a resumed sweep re-attach to the same runs instead of duplicating them.

Runs look as MLflow's own `start_run` would make them: the source tags (entry point, git commit,
user), the dataset each trained on as an MLflow input, and experiments tagged as model training, so
that the UI opens on their runs rather than on an empty GenAI traces page.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag

from orchestrator.mlflow_sqlite import create_experiment_beside, seed_new_store, sqlite_path
from orchestrator.redaction import error_text, redact  # redact: callers import it from here too
from trainables.errors import UserError

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
SWEEP_KEY, TRIAL_KEY, KIND_KEY = "orchestrator.sweep_path", "orchestrator.trial_id", "orchestrator.kind"
RETRIES_KEY = "retries"
EXPERIMENT_KIND_KEY, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
# On a tracking server, MLflow prints "View run NAME at: URL" and "View experiment at: URL" for every run it ends
# (and fetches that run again to do so): for the preflight's deleted scratch run, and for every run `sync` ends.
# A command prints its own link to the sweep's runs once, on its last line.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


def tracking_uri(uri: str | None) -> str:
    """The store a command records to: --tracking-uri, else $MLFLOW_TRACKING_URI, else ./mlflow.db."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def _quoted(value: str) -> str:
    """A value as an MLflow filter string literal, whatever quotes it holds."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise UserError(f"a name or path holding both ' and \" cannot be searched in MLflow: {value!r}; rename it")


@contextmanager
def _fail_fast(timeout: int = 5):
    """MLflow retries HTTP calls for minutes by default; a preflight wants an answer in seconds."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT=str(timeout))
    try:
        yield
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


class Tracking:
    """A connected, writable MLflow store."""

    def __init__(self, uri: str | None = None):
        self.uri = tracking_uri(uri)
        seed_new_store(self.uri)  # a new sqlite store is copied in, not migrated (orchestrator/mlflow_sqlite.py)
        self.client = MlflowClient(self.uri)
        self.outbox = None  # set by outbox.keep_records: writes then survive the server going away
        try:
            with _fail_fast():
                self.client.search_experiments(max_results=1)  # opens (or makes) the sqlite store once, here
        except Exception as err:  # any failure here means the URI is wrong or the server is down
            first = error_text(err)
            raise UserError(
                f"MLflow tracking URI {redact(self.uri)} is not reachable ({first}): start the server or fix --tracking-uri"
            ) from None

    @classmethod
    def holding(cls, uri: str | None, wanted: str) -> "Tracking":
        """The store that must already hold `wanted` (a run to export, score or serve): a sqlite file that is not
        there is one line naming it, and is not made, so a mistyped path leaves no empty mlflow.db behind."""
        uri = tracking_uri(uri)
        path = sqlite_path(uri)
        if path is not None and not path.exists():
            raise UserError(f"no {wanted} at {redact(uri)}: no MLflow store is there ({path.resolve()} does not "
                            "exist); pass the --tracking-uri of the sweep that recorded it")
        return cls(uri)

    def __getstate__(self):
        # Tune pickles callbacks into tuner.pkl (a client holds a DB engine), and a resume replaces them with
        # fresh ones, so the pickled copy never needs a secret the URI may hold.
        return {"uri": redact(self.uri)}

    def __setstate__(self, state):
        self.uri = state["uri"]
        self.client = MlflowClient(self.uri)
        self.outbox = None

    def _routed(self) -> bool:
        return self.outbox is not None and not self.outbox.applying

    def set_terminated(self, run_id: str, status: str) -> None:
        """Close a run (FINISHED, FAILED, KILLED); kept for later if the server is down."""
        if self._routed():
            self.outbox.submit({"op": "terminate", "run": run_id, "status": status})
        else:
            self.client.set_terminated(run_id, status=status)

    def experiment_of(self, run_id: str) -> str:
        if self.outbox is not None:  # known without asking a server that may be down
            return self.outbox.experiment_id
        return self.client.get_run(run_id).info.experiment_id

    def experiment_id(self, name: str) -> str:
        """The experiment's id (created or restored if needed), tagged as model training: MLflow 3's UI
        otherwise opens a fresh browser on the GenAI overview, an empty traces page."""
        found = self.client.get_experiment_by_name(name)
        if found is None:
            tags, database = {EXPERIMENT_KIND_KEY: MODEL_TRAINING}, sqlite_path(self.uri)
            if database is not None:  # its artifacts beside the database, not in this folder
                return create_experiment_beside(database, self.uri, name, tags)
            return self.client.create_experiment(name, tags=tags)
        if found.lifecycle_stage == "deleted":
            self.client.restore_experiment(found.experiment_id)
        if found.tags.get(EXPERIMENT_KIND_KEY) != MODEL_TRAINING:
            self.client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_KEY, MODEL_TRAINING)
        return found.experiment_id

    def runs_url(self, experiment_id: str) -> str:
        """Where a person sees the experiment's runs: the server's runs view, or how to open it locally."""
        view = f"#/experiments/{experiment_id}/runs"
        if self.uri.startswith(("http://", "https://")):
            return f"{redact(self.uri).rstrip('/')}/{view}"
        here = self.uri == DEFAULT_TRACKING_URI  # `mlflow ui` opens this very store from the same folder
        start = "`mlflow ui`" if here else f"`mlflow ui --backend-store-uri {redact(self.uri)}`"
        return f"http://127.0.0.1:5000/{view} (after {start})"

    def log_dataset(self, run_id: str, dataset: "DatasetRecord", context: str = "training") -> None:
        """The prepared data a run read, as an MLflow dataset input: its root, fingerprint and split sizes."""
        entity = Dataset(name=redact(dataset.name), digest=dataset.digest, source_type=dataset.source_type,
                         source=json.dumps({"uri": redact(dataset.root)}),
                         profile=json.dumps({"splits": dataset.splits, "format": dataset.format}))
        self.client.log_inputs(run_id, datasets=[DatasetInput(entity, tags=[InputTag("mlflow.data.context", context)])])

    def check_writable(self, experiment_name: str) -> None:
        """Create and delete a scratch run in the sweep's experiment: proves the store accepts writes. It is ended
        before it is deleted, so MLflow's list of deleted runs shows no run left RUNNING."""
        try:
            with _fail_fast():
                run = self.client.create_run(self.experiment_id(experiment_name), tags={KIND_KEY: "preflight"})
                self.client.log_param(run.info.run_id, "preflight", "ok")
                self.client.set_terminated(run.info.run_id)
                self.client.delete_run(run.info.run_id)
        except Exception as err:  # read-only database file, permission denied, server-side error
            first = error_text(err)
            raise UserError(f"MLflow at {redact(self.uri)} does not accept writes ({first}): "
                            "fix its permissions or pass another --tracking-uri") from None

    def trial_run(self, run_id: str):
        """The trial run behind `run_id`; a sweep's parent run stands for its best trial."""
        try:
            run = self.client.get_run(run_id)
        except Exception:  # MLflow raises its own exception types for a missing id
            raise UserError(f"no MLflow run '{run_id}' at {redact(self.uri)}: copy a trial's run id from the MLflow UI "
                            "(or pass --tracking-uri)") from None
        if run.data.tags.get(KIND_KEY) == "sweep":
            best = run.data.tags.get("best_run_id")
            if not best:
                raise UserError(f"sweep run {run_id} has no best trial yet: pass a finished trial's run id")
            run = self.client.get_run(best)
        return run

    def deleted_of_sweep(self, parent_id: str) -> list[str] | None:
        """The sweep's runs (its parent run and its trials') that were deleted, as from the UI; None when its
        parent run is not in this store at all (deleted for good by `mlflow gc`)."""
        from mlflow.entities import ViewType
        from mlflow.exceptions import MlflowException

        try:
            parent = self.client.get_run(parent_id)
        except MlflowException as err:  # the REST client's RestException too
            if err.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise UserError(f"MLflow at {redact(self.uri)} could not be asked for run {parent_id} "
                            f"({error_text(err)}): run the command again") from None
        deleted = [parent_id] if parent.info.lifecycle_stage == "deleted" else []
        children = self.client.search_runs([parent.info.experiment_id], run_view_type=ViewType.DELETED_ONLY,
                                           filter_string=f"tags.mlflow.parentRunId = {_quoted(parent_id)}")
        return deleted + [run.info.run_id for run in children]

    def find_run(self, experiment_id: str, tags: dict[str, str]) -> str | None:
        """The run with these identity tags. Tags are stored redacted, so they are searched redacted: a
        run's identity never depends on a secret."""
        query = " and ".join(f"tags.`{k}` = {_quoted(redact(v))}" for k, v in tags.items())
        runs = self.client.search_runs([experiment_id], filter_string=query, max_results=1)
        return runs[0].info.run_id if runs else None

    def find_or_create_run(self, experiment_id: str, identity: dict[str, str], run_name: str, tags: dict[str, str]) -> tuple[str, bool]:
        """(run id, created now). `identity` tags decide whether the run already exists."""
        existing = self.find_run(experiment_id, identity)
        if existing:
            self.client.update_run(existing, status="RUNNING")
            return existing, False
        all_tags = {**source_tags(), **identity, **tags}
        run = self.client.create_run(experiment_id, run_name=redact(run_name), tags={k: redact(v) for k, v in all_tags.items()})
        return run.info.run_id, True

    def log(self, run_id: str, metrics: dict[str, float] | None = None, step: int = 0,
            params: dict[str, Any] | None = None, tags: dict[str, Any] | None = None, at: int | None = None) -> None:
        """One batch. A param is logged once: on a re-attached run (a resume) the params it already holds
        are skipped, and one whose value changed (say `resources`, after losing a node) goes to a
        `changed.<key>` tag, since MLflow refuses to change a param. `at`: the metrics' time (ms)."""
        if self._routed():
            self.outbox.submit({"op": "log", "run": run_id, "step": step,
                                "metrics": {k: float(v) for k, v in (metrics or {}).items()},
                                "params": {k: redact(v)[:6000] for k, v in (params or {}).items()},
                                "tags": {k: redact(v) for k, v in (tags or {}).items()}})
            return
        now = at or int(time.time() * 1000)
        if params:
            held = self.client.get_run(run_id).data.params
            changed = {f"changed.{k}": v for k, v in params.items() if k in held and held[k] != redact(v)[:6000]}
            params = {k: v for k, v in params.items() if k not in held}
            tags = {**(tags or {}), **changed}
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, step) for k, v in (metrics or {}).items()],
            params=[Param(k, redact(v)[:6000]) for k, v in (params or {}).items()],
            tags=[RunTag(k, redact(v)) for k, v in (tags or {}).items()],
        )

    def metric_by_step(self, run_id: str, metric: str) -> dict[int, float]:
        """{MLflow step: value}; a resumed trial may have logged a step twice, and its last value counts."""
        history = sorted(self.client.get_metric_history(run_id, metric), key=lambda m: m.timestamp)
        return {int(m.step): float(m.value) for m in history}

    def last_step(self, run_id: str, key: str = "epoch") -> int:
        history = self.client.get_metric_history(run_id, key)
        return max((m.step for m in history), default=0)

    def log_files(self, run_id: str, folder: Path, names: list[str]) -> None:
        if self._routed():  # a temporary folder's files are copied into the storage if they must be kept
            self.outbox.submit({"op": "files", "run": run_id, "folder": str(folder), "names": list(names)})
            return
        for name in names:
            path = folder / name
            if path.is_dir():
                self.client.log_artifacts(run_id, str(path), artifact_path=name)
            elif path.is_file():
                parent = str(Path(name).parent)
                self.client.log_artifact(run_id, str(path), artifact_path=None if parent == "." else parent)


@dataclass(frozen=True)
class DatasetRecord:
    """What MLflow shows of a sweep's prepared data."""
    root: str
    digest: str
    format: str
    splits: dict

    @classmethod
    def of(cls, data) -> "DatasetRecord":
        """A sweep's prepared data (a tasks.DataSummary), read from its metadata.json."""
        from trainables.data.shards import load_metadata

        meta = load_metadata(data.root)
        return cls(data.root, str(meta.get("fingerprint", ""))[:16], str(meta.get("format", "")),
                   data.splits or dict(meta.get("counts", {})))

    @property
    def name(self) -> str:
        return self.root.rstrip("/").rsplit("/", 1)[-1]

    @property
    def source_type(self) -> str:
        return self.root.split("://", 1)[0] if "://" in self.root else "local"


def source_tags() -> dict[str, str]:
    """The tags MLflow's own start_run adds: entry point, source type, git commit, user."""
    from mlflow.tracking.context.registry import resolve_tags

    try:
        return {k: str(v) for k, v in resolve_tags().items() if k.startswith("mlflow.")}
    except Exception:  # a context provider that cannot resolve here (odd git state) must not stop a sweep
        return {}
