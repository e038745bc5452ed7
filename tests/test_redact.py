"""One redaction for every place a URI can show: credentials never reach MLflow, the console or a run's
identity, and a run is found again whatever its path holds (a secret, a quote). The driver's streams
redact whatever is written to them, a secret split across two writes included."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from orchestrator import redaction
from orchestrator.redaction import RedactingStream
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


def test_the_stream_masks_a_secret_written_in_two_pieces():
    out = io.StringIO()
    stream = RedactingStream(out)
    stream.write("API request to http://alice:s3cr")
    stream.write("3tpw@127.0.0.1:9/api failed\nnext ")
    assert out.getvalue() == "API request to http://127.0.0.1:9/api failed\n"  # the partial line waits
    stream.flush()  # ... until a flush passes it on
    assert out.getvalue().endswith("\nnext ")
    print("s3://K:S@b/r", file=stream)
    assert out.getvalue().endswith("next s3://b/r\n")


def test_the_stream_is_the_wrapped_stream_in_every_other_way(tmp_path):
    with open(tmp_path / "out.txt", "w", encoding="utf-8") as handle:
        stream = RedactingStream(handle)
        assert stream.fileno() == handle.fileno() and stream.encoding == "utf-8" and not stream.isatty()
        assert stream.name == handle.name and stream.writable()
        stream.write("a line with no end")
        stream.flush()
        assert (tmp_path / "out.txt").read_text() == "a line with no end"


def test_a_stream_whose_wrapped_stream_closed_is_no_terminal_and_flushes_quietly():
    """At interpreter exit colorama (Ray's) asks the streams whether they are terminals after pytest or the
    shell has closed the ones we wrap: an answer, not a ValueError printed as an atexit traceback."""
    out = io.StringIO()
    stream = RedactingStream(out)
    out.close()
    assert not stream.isatty()
    stream.flush()


def test_a_remembered_secret_is_masked_outside_a_uri_too(monkeypatch):
    monkeypatch.setattr(redaction, "_known", set())
    redaction.remember(["--tracking-uri", "http://alice:p%40ss-word@host:5000"],
                       environ={"AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG", "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE"})
    said = "login failed for alice with p@ss-word (p%40ss-word); key wJalrXUtnFEMI/K7MDENG, id AKIDEXAMPLE"
    assert redact(said) == "login failed for alice with *** (***); key ***, id AKIDEXAMPLE"


def test_installing_redacts_stdout_stderr_and_the_log_handlers_on_them(monkeypatch):
    monkeypatch.setattr(redaction, "_known", set())
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    handler = logging.StreamHandler(err)  # made before the install, as Ray's are at its import
    logger = logging.getLogger("test_redact.early")
    logger.addHandler(handler)
    try:
        redaction.install_on_std_streams(["sweep", "x", "--storage", "s3://AK:storage-secret@bucket/runs"])
        redaction.install_on_std_streams([])  # a second install wraps nothing twice
        assert isinstance(sys.stdout, RedactingStream) and sys.stdout.wrapped is out
        print("storage-secret in a library's words")
        logger.warning("retrying s3://AK:storage-secret@bucket/runs")
        sys.stdout.flush()
    finally:
        logger.removeHandler(handler)
    assert out.getvalue() == "*** in a library's words\n"
    assert err.getvalue() == "retrying s3://bucket/runs\n"


def test_a_redacting_stream_outliving_its_wrapped_stream_closes_quietly():
    import io

    out = io.StringIO()
    stream = RedactingStream(out)
    stream.write("held without its newline")
    out.close()  # as at interpreter exit, when sys.__stdout__ may be closed first
    stream.flush()
    stream.close()
    assert stream.closed
