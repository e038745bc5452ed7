"""A new sqlite MLflow store made by copying an empty one, instead of by running MLflow's migrations.

MLflow 3.17 makes a new sqlite store by running every Alembic migration of its schema: about 3 s of the
first sweep in a folder on 2 cores, and the same again for every test that records to a fresh database.
The result of those migrations depends only on the MLflow and SQLAlchemy versions, so it is made once per
machine (a template in the data cache, built by MLflow itself) and copied wherever a new store is
wanted. The template holds no experiment: MLflow, opening the copy, finds its schema current and adds
its Default experiment itself, with this store's own artifact root and the time it was opened, exactly
as it would in a store it had migrated.

An experiment made in a sqlite store keeps its artifacts beside the database (`mlruns/` in the database's
folder), where MLflow would put them under the working folder of whichever command made it: a sweep run
from one folder into `--tracking-uri sqlite:////data/mlflow.db` would otherwise leave its checkpoints,
plots and models in that folder, apart from the database that lists them.

Seeding is only ever a shortcut. Whenever it cannot be taken (not a local sqlite file, the file already
there, its folder missing, a cache that cannot be written), nothing is done and MLflow makes the store as
it always has. A copy never replaces a file: it is linked into place, which fails if another process made
the database first.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
import tempfile
import uuid
from pathlib import Path


def sqlite_path(uri: str) -> Path | None:
    """The database file a `sqlite:///...` tracking URI names; None for any other store or an in-memory one."""
    if not uri.startswith("sqlite:"):
        return None
    from sqlalchemy.engine import make_url

    try:
        database = make_url(uri).database
    except Exception:  # a malformed URI is MLflow's to report
        return None
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def template_path() -> Path:
    """Where this machine keeps the empty store of the installed MLflow and SQLAlchemy."""
    import mlflow
    import sqlalchemy

    from trainables.data import cache_dir

    return cache_dir() / "mlflow" / f"empty-mlflow{mlflow.__version__}-sqlalchemy{sqlalchemy.__version__}.db"


def build_template(path: Path) -> None:
    """Let MLflow make a store, take its Default experiment out again, and put the file at `path` at once."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    path.parent.mkdir(parents=True, exist_ok=True)
    with _quiet("mlflow.store.db.utils"), tempfile.TemporaryDirectory(dir=path.parent) as work:
        database = Path(work) / "empty.db"
        store = SqlAlchemyStore(f"sqlite:///{database}", str(Path(work) / "artifacts"))
        store.engine.dispose()
        with contextlib.closing(sqlite3.connect(database)) as connection:
            connection.execute("DELETE FROM experiments")
            connection.commit()
            connection.execute("VACUUM")  # outside any transaction
        os.replace(database, path)


@contextlib.contextmanager
def _quiet(logger: str):
    """Only warnings from `logger` meanwhile. MLflow says at INFO that it creates and updates the tables: two
    lines before a command's own first line on a machine's first run, about a file its user never sees."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(level)


def seed_new_store(uri: str) -> bool:
    """Put an empty, current MLflow store where `uri` names a sqlite file that does not exist yet. Returns
    whether it did; when it did not, MLflow makes the store itself, as before."""
    target = sqlite_path(uri)
    if target is None or target.exists() or not target.parent.is_dir():
        return False
    try:
        template = template_path()
        if not template.exists():
            build_template(template)
        staged = target.parent / f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}"
        try:
            shutil.copyfile(template, staged)  # a new file, with the mode MLflow's own would have
            os.link(staged, target)  # fails, changing nothing, if the database appeared meanwhile
        finally:
            staged.unlink(missing_ok=True)
    except Exception:  # any failure leaves the making of the store to MLflow
        return False
    return True


def create_experiment_beside(database: Path, uri: str, name: str, tags: dict[str, str]) -> str:
    """Make experiment `name` in the sqlite store at `uri` (the file `database`) with its artifacts under
    `mlruns/<experiment id>` beside the database, as MLflow lays them out under the working folder; returns
    its id. A store object of its own gives the root: MlflowClient offers no way to name one."""
    from mlflow.entities import ExperimentTag
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore(uri, str(database.resolve().parent / "mlruns"))
    try:
        return store.create_experiment(name, tags=[ExperimentTag(key, value) for key, value in tags.items()])
    finally:
        store.engine.dispose()
