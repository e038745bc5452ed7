"""A `--resume` goes on with the settings its sweep started with, or is refused naming what it changes
(orchestrator/sweep_settings.py). The refusal from the real CLI is judged in test_fault_tolerance.py."""

from __future__ import annotations

import sys

import pytest
from ray import tune

from orchestrator import state
from orchestrator.sweep_settings import check_same, command_that_resumes, settings_of, spec
from trainables.errors import UserError

COMMAND = "python -m orchestrator sweep celeba_backbones --smoke --resume"


def _settings(space: dict, **changes) -> dict[str, str]:
    given = {"locations": ("data.root", "data.prepared"), "data_digest": "82efe843e886f024", "smoke": True,
             "objectives": [("val/mean_accuracy", "max")], "seed": 0, "samples": 1, "early_stopping": True,
             **changes}
    return settings_of(space, **given)


SPACE = {"model.name": tune.grid_search(["resnet18", "legacy_seresnet18"]), "optim.epochs": 2, "optim.lr": 0.003,
         "data.augment": ["hflip"], "data.root": "/data/celeba", "data.prepared": "/cache/celeba-shards"}


def test_each_kind_of_entry_is_written_as_set_writes_it_with_floats_to_the_last_digit():
    assert spec(tune.grid_search(["resnet18", "seresnet18"])) == "grid(resnet18, seresnet18)"
    assert spec(tune.choice([16, 32])) == "choice(16, 32)"
    assert spec(tune.loguniform(1e-4, 1e-2)) == "loguniform(0.0001,0.01)"
    assert spec(tune.uniform(0.0, 0.5)) == "uniform(0.0,0.5)"
    assert spec(tune.randint(1, 5)) == "randint(1,5)"
    assert spec(True) == "true" and spec(["hflip", "cutout"]) == "[hflip, cutout]"
    assert spec(0.1 + 0.2) != spec(0.3)  # `render` would write both as 0.3


def test_where_the_data_is_is_left_out_and_its_fingerprint_kept():
    settings = _settings(SPACE)
    assert "data.root" not in settings and "data.prepared" not in settings
    assert settings["data fingerprint"] == "82efe843e886f024"
    assert settings["model.name"] == "grid(resnet18, legacy_seresnet18)" and settings["optim.epochs"] == "2"
    assert settings["--smoke"] == "on" and settings["early stopping"] == "on"
    # The same data elsewhere (another folder, a bucket) is the same sweep.
    assert _settings({**SPACE, "data.root": "s3://bucket/celeba", "data.prepared": "s3://bucket/shards"}) == settings


def test_a_resume_with_the_same_settings_goes_on():
    check_same(_settings(SPACE), _settings(SPACE), "/runs/celeba_backbones", COMMAND, COMMAND)


def test_a_sweep_that_recorded_no_settings_resumes_unchecked():
    check_same({}, _settings(SPACE), "/runs/celeba_backbones", COMMAND, COMMAND)


@pytest.mark.parametrize("changed, said", [
    ({**SPACE, "optim.epochs": 3}, "optim.epochs 2 -> 3"),
    ({**SPACE, "optim.lr": tune.loguniform(1e-4, 1e-2)}, "optim.lr 0.003 -> loguniform(0.0001,0.01)"),
    ({**SPACE, "model.name": tune.grid_search(["resnet18"])}, "model.name grid(resnet18, legacy_seresnet18) -> grid(resnet18)"),
    ({**SPACE, "loss.name": "focal"}, "loss.name (not set) -> focal"),
])
def test_a_resume_that_changes_a_key_is_refused_naming_the_change_and_the_command(changed, said):
    with pytest.raises(UserError) as refused:
        check_same(_settings(SPACE), _settings(changed), "/runs/celeba_backbones", COMMAND, COMMAND + " --set x")
    text = str(refused.value)
    assert f"({said})" in text, text
    assert "/runs/celeba_backbones" in text and f"resume it as it started: {COMMAND}" in text, text
    assert "--name NEW_NAME" in text and "\n" not in text


@pytest.mark.parametrize("changes, said", [
    ({"smoke": False}, "--smoke on -> off"),
    ({"data_digest": "0123456789abcdef"}, "data fingerprint 82efe843e886f024 -> 0123456789abcdef"),
    ({"seed": 7}, "seed 0 -> 7"),
    ({"early_stopping": False}, "early stopping on -> off"),
    ({"objectives": [("val/macro_f1", "max")]}, "objectives val/mean_accuracy (max) -> val/macro_f1 (max)"),
])
def test_a_resume_on_other_data_or_with_other_options_is_refused(changes, said):
    with pytest.raises(UserError) as refused:
        check_same(_settings(SPACE), _settings(SPACE, **changes), "/runs/celeba_backbones", COMMAND, "another")
    assert f"({said})" in str(refused.value), refused.value


def test_the_same_command_with_other_settings_says_what_it_reads_changed():
    """Resumed as it started, yet other settings: a sweep file edited, the data re-prepared or this code's sweep
    changed. Telling its user to run the command they just ran would go round in a circle."""
    with pytest.raises(UserError) as refused:
        check_same(_settings(SPACE), _settings({**SPACE, "optim.epochs": 8}), "/runs/celeba_backbones", COMMAND, COMMAND)
    text = str(refused.value)
    assert "(optim.epochs 2 -> 8)" in text and "its sweep file, its data or this code changed since" in text, text
    assert "resume it as it started" not in text and "--name NEW_NAME" in text, text


def test_the_command_kept_for_a_resume_is_this_one_with_resume_and_without_budget(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/x/orchestrator/__main__.py", "sweep", "celeba_backbones", "--budget", "2h",
                                      "--smoke"])
    assert command_that_resumes() == COMMAND


def test_the_state_file_keeps_the_settings_and_the_command_for_a_resume(tmp_path):
    path = tmp_path / "celeba_backbones"
    state.SweepRun("celeba_backbones", str(path)).save(parent_run_id="p1", status="interrupted",
                                                       settings=_settings(SPACE), command=COMMAND)
    (path / "tuner.pkl").write_bytes(b"")  # what Tune looks for before it restores a sweep
    resumed = state.locate(str(tmp_path), "celeba_backbones", None, resume=True)
    assert resumed.settings == _settings(SPACE) and resumed.command == COMMAND


def test_a_resumed_trial_reads_the_data_where_this_invocation_has_it():
    """Tune restores a trial with the config it started with, whose prepared roots may be gone (another machine's
    cache, a cache moved): its workers get the roots this invocation prepared, the same data by its fingerprint."""
    from orchestrator.runners import OBJECTIVE, loop_config

    saved = {"model.name": "resnet18", "data.root": "/old-machine/.cache/prepared/celeba", "optim.epochs": 2}
    given = loop_config(saved, {"data.root": "/home/me/.cache/prepared/celeba"}, "val/mean_accuracy", "max")
    assert given["data.root"] == "/home/me/.cache/prepared/celeba"
    assert given["model.name"] == "resnet18" and given["optim.epochs"] == 2
    assert given[OBJECTIVE] == {"metric": "val/mean_accuracy", "mode": "max"}
    assert loop_config(saved, {}, "val/mean_accuracy", "max")["data.root"] == saved["data.root"]  # unchecked: as saved
