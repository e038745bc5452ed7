"""One redaction for every place a URI can show: credentials never reach MLflow, the console or a run's
identity, and a run is found again whatever its path holds (a secret, a quote)."""

from __future__ import annotations

import pytest

from orchestrator.tracking import Tracking, redact


@pytest.mark.parametrize("raw,shown", [
    ("s3://KEY:SECRET@bucket/runs", "s3://bucket/runs"),
    ("https://user:p@ss@host/x", "https://host/x"),             # a password holding '@'
    ("postgresql://u:pa/ss@db/mlflow", "postgresql://db/mlflow"),  # ... or '/'
    ("s3://TOKEN@bucket/r", "s3://bucket/r"),
    ("http://h:5000/x?token=abc&a=1", "http://h:5000/x?token=***&a=1"),
    ("gs://b/p?X-Amz-Signature=zz&X-Amz-Credential=cc&ok=1", "gs://b/p?X-Amz-Signature=***&X-Amz-Credential=***&ok=1"),
    ("storage s3://A:B@b/x, MLflow http://u:p@h:5000/", "storage s3://b/x, MLflow http://h:5000/"),
    ("file:///data/a@b/c", "file:///data/a@b/c"),                # an '@' in a path is no credential
    ("https://host/x@y", "https://host/x@y"),
    ("sqlite:///mlflow.db", "sqlite:///mlflow.db"),
])
def test_redact_every_uri_form(raw, shown):
    assert redact(raw) == shown


def test_a_run_is_found_again_whatever_its_identity_holds(tmp_path):
    tracking = Tracking(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = tracking.experiment_id("celeba_backbones")
    for path in ("s3://KEY:SECRET@bucket/runs/celeba", "/runs/o'brien's sweep"):
        identity = {"orchestrator.sweep_path": path, "orchestrator.kind": "sweep"}
        first, created = tracking.find_or_create_run(experiment, identity, "a", {})
        again, created_again = tracking.find_or_create_run(experiment, identity, "a", {})
        assert created and not created_again and again == first  # a resume re-attaches, never duplicates
        assert "SECRET" not in str(tracking.client.get_run(first).data.tags)


def test_a_param_is_logged_once_and_a_changed_value_is_kept_as_a_tag(tmp_path):
    tracking = Tracking(f"sqlite:///{tmp_path}/mlflow.db")
    run_id, _ = tracking.find_or_create_run(tracking.experiment_id("s"), {"orchestrator.sweep_path": "x"}, "a", {})
    tracking.log(run_id, params={"trials": 6, "resources": "2 workers"})
    tracking.log(run_id, params={"trials": 6, "resources": "1 worker", "storage": "s3://K:S@b/r"})  # a resume
    data = tracking.client.get_run(run_id).data
    assert data.params == {"trials": "6", "resources": "2 workers", "storage": "s3://b/r"}
    assert data.tags["changed.resources"] == "1 worker"
