"""A `--resume` whose MLflow runs were deleted (in the UI, or for good by `mlflow gc`) is refused in one line that
names them and how to restore them. Before, a deleted parent run ended the resume in MLflow's traceback ("must be
in the 'active' state"), and a deleted trial's run would have been started anew without its earlier epochs.
A real sqlite MLflow store; the check is Preflight.check_resumed_runs."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from orchestrator.preflight import Preflight
from orchestrator.state import SweepRun
from orchestrator.tracking import KIND_KEY, Tracking
from trainables.errors import UserError


def _interrupted_sweep(tmp_path, trials: int = 2) -> tuple[Preflight, str, list[str]]:
    tracking = Tracking(f"sqlite:///{tmp_path}/mlflow.db")
    tracking.check_writable("celeba_backbones")  # the preflight's scratch run: deleted, and no run of the sweep
    experiment = tracking.experiment_id("celeba_backbones")
    parent = tracking.client.create_run(experiment, tags={KIND_KEY: "sweep"}).info.run_id
    children = [tracking.client.create_run(experiment, tags={"mlflow.parentRunId": parent, KIND_KEY: "trial"})
                .info.run_id for _ in range(trials)]
    run = SweepRun("celeba_backbones", str(tmp_path / "runs" / "celeba_backbones"), parent_run_id=parent,
                   status="interrupted")
    return Preflight(opts=SimpleNamespace(resume=True), tracking=tracking, run=run), parent, children


def test_a_sweep_whose_runs_are_all_there_resumes(tmp_path):
    pre, parent, _ = _interrupted_sweep(tmp_path)
    assert parent in pre.check_resumed_runs()


def test_a_deleted_parent_run_is_refused_naming_it_and_how_to_restore_it(tmp_path):
    pre, parent, _ = _interrupted_sweep(tmp_path)
    pre.tracking.client.delete_run(parent)
    with pytest.raises(UserError) as refused:
        pre.check_resumed_runs()
    text = str(refused.value)
    assert f"1 MLflow run of this sweep was deleted ({parent})" in text, text
    assert f"restore it (MLFLOW_TRACKING_URI=sqlite:///{tmp_path}/mlflow.db mlflow runs restore --run-id ID" in text
    assert "--name NEW_NAME" in text and "\n" not in text
    pre.tracking.client.restore_run(parent)  # as the line says: the resume then goes ahead
    assert parent in pre.check_resumed_runs()


def test_a_deleted_trial_run_is_refused_naming_that_run_only(tmp_path):
    pre, _, children = _interrupted_sweep(tmp_path, trials=5)
    for child in children[1:]:
        pre.tracking.client.delete_run(child)
    with pytest.raises(UserError) as refused:
        pre.check_resumed_runs()
    text = str(refused.value)
    assert "4 MLflow runs of this sweep were deleted" in text and "restore them" in text, text
    assert "and 1 more" in text and children[0] not in text, text


def test_a_parent_run_deleted_for_good_is_refused(tmp_path):
    pre, _, _ = _interrupted_sweep(tmp_path)
    pre.run.parent_run_id = "0123456789abcdef0123456789abcdef"  # as after `mlflow gc`
    with pytest.raises(UserError, match="parent run 0123456789abcdef0123456789abcdef is no longer in MLflow"):
        pre.check_resumed_runs()


def test_a_sweep_stopped_before_its_parent_run_was_made_resumes(tmp_path):
    pre, _, _ = _interrupted_sweep(tmp_path)
    pre.run.parent_run_id = None
    assert "its runs start now" in pre.check_resumed_runs()
