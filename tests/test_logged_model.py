"""The best model as an MLflow LoggedModel and a registered model, without Ray: the conditions of
--register-if, the bad-input lines, and `export --run --register` on the shared tiny trial (conftest's
`celeba_trial`). The sweep's own registration is checked on the smoke sweep (test_sweep_ray.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from orchestrator.__main__ import main
from orchestrator.logged_model import Condition, parse_condition, registration
from champion import check_champion
from trial_fixtures import one_line_error


@pytest.mark.parametrize("text, expected", [
    ("val/race/group_gap<0.05", Condition("val/race/group_gap", "<", 0.05)),
    ("val/mean_accuracy >= 0.8", Condition("val/mean_accuracy", ">=", 0.8)),
    ("val/loss<=1e-3", Condition("val/loss", "<=", 0.001)),
    ("test/f1_opt/macro_f1>.5", Condition("test/f1_opt/macro_f1", ">", 0.5)),
    ("epoch==-2", Condition("epoch", "==", -2.0)),
])
def test_a_condition_is_metric_op_number(text, expected):
    assert parse_condition(text) == expected


@pytest.mark.parametrize("op, value, holds", [("<", 0.05, False), ("<=", 0.05, True), ("==", 0.05, True),
                                              (">=", 0.05, True), (">", 0.05, False), ("<", 0.06, True)])
def test_a_condition_holds_by_its_operator(op, value, holds):
    assert Condition("m", op, value).holds(0.05) is holds


@pytest.mark.parametrize("text", ["val/gap", "val/gap<", "<0.05", "val/gap=<0.05", "val/gap<0.05x", "val/gap!=1",
                                  "val/gap<<1", ""])
def test_a_malformed_condition_is_one_line_naming_the_flag(text):
    message = one_line_error(parse_condition, text)
    assert "--register-if" in message and "METRIC OP NUMBER" in message


def test_register_if_without_register_and_a_bad_name_are_one_line_each():
    assert "--register NAME" in one_line_error(registration, None, "val/gap<1")
    assert "without '/'" in one_line_error(registration, "team/faces", None)
    assert registration(None, None) is None


@pytest.mark.parametrize("extra, says", [
    (["--register", "faces", "--register-if", "val/gap<<0.05"], "--register-if 'val/gap<<0.05' is not a condition"),
    (["--register-if", "val/gap<0.05"], "--register-if needs --register NAME"),
    (["--register", "a@b"], "--register 'a@b' is not a usable model name"),
])
def test_bad_register_flags_stop_a_sweep_before_it_starts(extra, says, tmp_path, capsys):
    code = main(["sweep", "celeba_backbones", "--smoke", "--storage", str(tmp_path / "runs"),
                 "--tracking-uri", f"sqlite:///{tmp_path}/m.db", *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and says in err and "\n" not in err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "m.db").exists()  # nothing started


def test_register_on_a_sweep_that_trains_no_model_is_one_line(tmp_path, capsys):
    """The policy runner trains nothing to register: said before anything starts (it was a traceback)."""
    code = main(["sweep", "celeba_thresholds", "--from-run", "0123abc", "--register", "faces",
                 "--storage", str(tmp_path / "runs"), "--tracking-uri", f"sqlite:///{tmp_path}/m.db"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "\n" not in err
    assert "--register applies to sweeps that train models; a policy sweep" in err, err
    assert not (tmp_path / "m.db").exists()  # nothing started


def test_export_register_logs_a_linked_model_that_predicts_as_predict_does(celeba_trial, tmp_path, capsys):
    uri, child = celeba_trial["uri"], celeba_trial["child"]
    out = tmp_path / "export"
    assert main(["export", "--run", child, "--out", str(out), "--tracking-uri", uri, "--register", "faces-export",
                 "--register-if", "val/mean_accuracy>=0"]) == 0
    said = capsys.readouterr().out
    assert "registered as 'faces-export' version 1, alias champion" in said
    check_champion(uri, "faces-export", child, out, Path(celeba_trial["root"]) / "img_align_celeba", tmp_path)


def test_register_if_false_or_naming_an_unknown_metric_registers_nothing(celeba_trial, tmp_path, capsys):
    uri, child = celeba_trial["uri"], celeba_trial["child"]
    args = ["export", "--run", child, "--out", str(tmp_path / "export"), "--tracking-uri", uri, "--register", "gated"]
    assert main([*args, "--register-if", "val/mean_accuracy>2"]) == 0
    said = capsys.readouterr().out
    assert "model: not registered as 'gated': val/mean_accuracy is" in said and "asks val/mean_accuracy>2" in said
    assert main([*args, "--register-if", "val/no_such_metric<1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --register-if names 'val/no_such_metric'") and "\n" not in err
    assert "val/mean_accuracy" in err  # the fix: the metrics it could name
    assert not MlflowClient(uri).search_registered_models(filter_string="name = 'gated'")


def test_a_model_kept_while_mlflow_is_down_is_logged_and_registered_when_it_is_back(celeba_trial, capsys):
    import time

    from orchestrator.export import log_best_model
    from orchestrator.outbox import keep_records
    from orchestrator.tracking import Tracking
    from trainables.tasks import get_task

    client, child = celeba_trial["client"], celeba_trial["child"]
    tracking = Tracking(celeba_trial["uri"])
    parent = client.create_run(celeba_trial["experiment_id"]).info.run_id
    outbox = keep_records(tracking, None, celeba_trial["experiment_id"], "kept-sweep")
    outbox.down, outbox._probed = True, time.monotonic()  # just seen down: the next probe is not due yet
    summary = {"trials": 1, "failed": 0, "best_run_id": child}
    line = log_best_model(tracking, parent, summary, get_task("attributes"), "val/mean_accuracy", "max",
                          wanted=registration("kept-faces", "val/mean_accuracy>0"))
    assert "registered as 'kept-faces' when MLflow is back" in line and outbox.pending == 1
    assert not client.search_registered_models(filter_string="name = 'kept-faces'")
    assert outbox.flush() and outbox.pending == 0  # what `sync` or the next event does once it answers
    assert "registered as 'kept-faces' version 1, alias champion" in capsys.readouterr().out
    assert client.get_model_version_by_alias("kept-faces", "champion").run_id == child
    assert {"model/model.safetensors", "model/labels.json"} <= {a.path for a in client.list_artifacts(parent, "model")}


def test_a_sweep_whose_every_trial_failed_says_it_registered_nothing(celeba_trial, capsys):
    from orchestrator.export import log_best_model
    from orchestrator.tracking import Tracking
    from trainables.tasks import get_task

    tracking = Tracking(celeba_trial["uri"])
    failed = {"trials": 2, "failed": 2, "best_run_id": celeba_trial["child"]}
    assert log_best_model(tracking, celeba_trial["parent"], failed, get_task("attributes"), "val/mean_accuracy", "max",
                          wanted=registration("never", None)) is None
    assert capsys.readouterr().out.strip() == "model: not registered as 'never': no trial of this sweep left a model"
