"""A new sqlite MLflow store is copied from an empty one made once, not migrated anew: MLflow takes the copy
as a store of its own (current schema, its Default experiment, runs recorded and read back), no migration
runs for it, and no existing database or other kind of store is ever touched."""

from __future__ import annotations

import sqlite3

import mlflow.store.db.utils
import pytest
from mlflow import MlflowClient

from orchestrator import mlflow_sqlite
from orchestrator.mlflow_sqlite import seed_new_store, sqlite_path
from orchestrator.tracking import Tracking


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FACE_ORCHESTRATOR_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _schema(path) -> dict[str, set[str]]:
    """Each table's and index's definition, as a set of clauses: MLflow's own migrations write a table's
    constraints in an order that varies from one run to the next."""
    with sqlite3.connect(path) as connection:
        rows = connection.execute("SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'")
        return {f"{kind} {name}": {line.strip().rstrip(",") for line in (sql or "").splitlines()}
                for kind, name, sql in rows}


def _version(path) -> list[tuple]:
    with sqlite3.connect(path) as connection:
        return connection.execute("SELECT version_num FROM alembic_version").fetchall()


def test_a_seeded_store_is_the_store_mlflow_makes_without_running_a_migration(cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow roots a store's artifacts in the working folder
    migrated = MlflowClient(f"sqlite:///{tmp_path}/by-mlflow.db")
    migrated.search_experiments()  # made and migrated by MLflow alone
    assert seed_new_store(f"sqlite:///{tmp_path}/first.db")  # builds the template
    assert mlflow_sqlite.template_path().exists()

    def no_migrations(engine):
        raise AssertionError("a seeded store ran MLflow's migrations")

    monkeypatch.setattr(mlflow.store.db.utils, "_initialize_tables", no_migrations)
    seeded = Tracking("sqlite:///seeded.db")  # relative, as the default URI is

    assert _schema(tmp_path / "seeded.db") == _schema(tmp_path / "by-mlflow.db")
    assert _version(tmp_path / "seeded.db") == _version(tmp_path / "by-mlflow.db")
    default, theirs = seeded.client.get_experiment("0"), migrated.get_experiment("0")
    assert default.name == theirs.name == "Default"
    assert default.artifact_location == theirs.artifact_location  # this store's own root, not the template's
    assert default.creation_time >= theirs.creation_time  # made when opened, not when the template was

    experiment = seeded.experiment_id("celeba_backbones")
    run = seeded.client.create_run(experiment, run_name="trial")
    seeded.client.log_metric(run.info.run_id, "val/mean_accuracy", 0.9)
    assert seeded.client.get_run(run.info.run_id).data.metrics == {"val/mean_accuracy": 0.9}
    assert experiment == migrated.create_experiment("celeba_backbones")  # the same first id as a migrated store


def test_an_existing_database_is_never_replaced(cache, tmp_path):
    first = Tracking(f"sqlite:///{tmp_path}/mlflow.db")
    run = first.client.create_run(first.experiment_id("kept"))
    before = (tmp_path / "mlflow.db").read_bytes()

    assert not seed_new_store(f"sqlite:///{tmp_path}/mlflow.db")
    assert (tmp_path / "mlflow.db").read_bytes() == before
    assert Tracking(f"sqlite:///{tmp_path}/mlflow.db").client.get_run(run.info.run_id)


def test_what_cannot_be_seeded_is_left_to_mlflow(cache, tmp_path, monkeypatch):
    assert sqlite_path("http://127.0.0.1:5000") is None
    assert sqlite_path("sqlite://") is None and sqlite_path("sqlite:///:memory:") is None
    assert sqlite_path(f"sqlite:///{tmp_path}/a.db?timeout=20") == tmp_path / "a.db"

    # A folder that is not there yet: seeding declines, and MLflow makes the folder and the store as before.
    assert not seed_new_store(f"sqlite:///{tmp_path}/missing/mlflow.db")
    assert not (tmp_path / "missing").exists()
    Tracking(f"sqlite:///{tmp_path}/missing/mlflow.db").experiment_id("x")

    # A cache that cannot hold the template: MLflow migrates the store itself, and nothing is left behind.
    monkeypatch.setenv("FACE_ORCHESTRATOR_CACHE", str(tmp_path / "a-file"))
    (tmp_path / "a-file").write_text("not a folder")
    assert not seed_new_store(f"sqlite:///{tmp_path}/fallback.db")
    Tracking(f"sqlite:///{tmp_path}/fallback.db").experiment_id("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "fallback.db", "missing"]


def test_building_the_template_prints_nothing(cache, tmp_path, capfd):
    """A machine's first sweep opens with the command's own lines, not MLflow's news of its migrations."""
    assert seed_new_store(f"sqlite:///{tmp_path}/first.db")  # builds the template
    assert mlflow_sqlite.template_path().exists()
    out, err = capfd.readouterr()
    assert "database tables" not in out + err, out + err
    MlflowClient(f"sqlite:///{tmp_path}/by-mlflow.db").search_experiments()  # MLflow's own store still says so
    assert "Creating initial MLflow database tables" in "".join(capfd.readouterr())


def test_an_experiments_artifacts_sit_beside_its_database_whatever_the_working_folder(cache, tmp_path, monkeypatch):
    """MLflow puts a sqlite store's artifacts under the working folder; a sweep's go beside its database, so
    `--tracking-uri sqlite:////data/mlflow.db` keeps the checkpoints and models with the store that lists them."""
    (tmp_path / "store").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    tracking = Tracking(f"sqlite:///{tmp_path}/store/mlflow.db")
    experiment = tracking.experiment_id("celeba_backbones")
    assert tracking.experiment_id("celeba_backbones") == experiment  # found again, not made twice
    found = tracking.client.get_experiment(experiment)
    assert found.tags["mlflow.experimentKind"] == "custom_model_development"
    run = tracking.client.create_run(experiment).info.run_id
    (tmp_path / "card.md").write_text("a model card")
    tracking.client.log_artifact(run, str(tmp_path / "card.md"))
    assert (tmp_path / "store" / "mlruns" / experiment / run / "artifacts" / "card.md").read_text() == "a model card"
    assert list((tmp_path / "elsewhere").iterdir()) == []

    # The default URI, relative, names the working folder's mlflow.db: its artifacts are in ./mlruns, as MLflow's.
    monkeypatch.chdir(tmp_path / "store")
    relative = Tracking("sqlite:///mlflow.db")
    assert relative.client.get_experiment(relative.experiment_id("other")).artifact_location == \
        str(tmp_path / "store" / "mlruns" / relative.experiment_id("other"))
