"""Every numeric config value is finite and inside the range declared beside its default
(`bounded()` in the config dataclasses), on every path a value takes: a config built from a dict (what
workers do), `--set`, a distribution's bounds, a sweep file, a built-in sweep, and the command line."""

from __future__ import annotations

import dataclasses
import math

import pytest
from ray import tune

import search_spaces
from orchestrator.space import apply_overrides, batch_sizes, check_space, max_epochs
from trainables.config import TrainConfig
from trainables.config_keys import key_range
from trainables.config_sections import task_sections
from trainables.errors import UserError
from trainables.tasks import TASKS

# (task, key, a value outside its range, what the error says the range is)
OUT_OF_RANGE = [
    ("attributes", "optim.lr", "nan", "optim.lr=nan is not a finite number; optim.lr must be above 0"),
    ("attributes", "optim.lr", "inf", "is not a finite number"),
    ("attributes", "optim.lr", 0, "optim.lr must be above 0"),
    ("attributes", "optim.weight_decay", -0.1, "optim.weight_decay must be at least 0"),
    ("attributes", "optim.momentum", 1.0, "optim.momentum must be in [0, 1)"),
    ("attributes", "optim.epochs", 0, "optim.epochs must be at least 1"),
    ("attributes", "optim.batch_size", 0, "optim.batch_size must be at least 1"),
    ("attributes", "optim.warmup_epochs", -1, "optim.warmup_epochs must be at least 0"),
    ("attributes", "optim.warmup_epochs", 4, "optim.warmup_epochs=4 must be at most optim.epochs=3"),
    ("attributes", "optim.grad_clip", -1.0, "optim.grad_clip must be at least 0 (0 disables)"),
    ("attributes", "optim.nan_check_every", 0, "optim.nan_check_every must be at least 1"),
    ("attributes", "model.drop_rate", 2, "model.drop_rate=2 is out of range: model.drop_rate must be in [0, 1)"),
    ("attributes", "model.drop_rate", "-inf", "model.drop_rate=-inf is not a finite number"),
    ("attributes", "data.image_size", 8, "data.image_size must be at least 16"),
    ("attributes", "data.demo_images", 2, "data.demo_images must be at least 10"),
    ("attributes", "data.max_train_images", -5, "data.max_train_images must be at least 0 (0: all)"),
    ("attributes", "seed", -1, "seed must be at least 0"),
    ("attributes", "loss.alpha", 1.5, "loss.alpha must be at most 1 (a negative value disables alpha balancing)"),
    ("attributes", "loss.gamma", -2, "loss.gamma must be at least 0"),
    ("attributes", "loss.gamma_neg", -1, "loss.gamma_neg must be at least 0"),
    ("attributes", "loss.gamma_pos", "nan", "loss.gamma_pos=nan is not a finite number"),
    ("attributes", "loss.clip", 1.0, "loss.clip must be in [0, 1)"),
    ("attributes", "eval.threshold", 0, "eval.threshold must be in (0, 1)"),
    ("attributes", "eval.threshold", 1, "eval.threshold must be in (0, 1)"),
    ("fairface", "multitask.race_weight", -1, "multitask.race_weight must be at least 0"),
    ("fairface", "age.scale", 0, "age.scale must be above 0"),
    ("recognition", "head.s", 0, "head.s must be above 0"),
    ("recognition", "head.m", -0.5, "head.m must be at least 0"),
    ("recognition", "head.m1", 0, "head.m1 must be above 0"),
    ("recognition", "head.label_smoothing", 1, "head.label_smoothing must be in [0, 1)"),
    ("recognition", "head.focal_gamma", -1, "head.focal_gamma must be at least 0"),
    ("recognition", "head.center_lambda", -0.01, "head.center_lambda must be at least 0"),
    ("recognition", "head.center_lr", 0, "head.center_lr must be above 0"),
    ("recognition", "head.embedding_size", 0, "head.embedding_size must be at least 1"),
]


@pytest.mark.parametrize("task,key,value,fragment", OUT_OF_RANGE, ids=[f"{r[1]}={r[2]}" for r in OUT_OF_RANGE])
def test_a_config_with_a_value_out_of_range_is_a_one_line_error(task, key, value, fragment):
    with pytest.raises(UserError) as err:
        TrainConfig.from_dict({"task": task, key: value})  # what every worker and the driver build
    text = str(err.value)
    assert fragment in text and "\n" not in text, text


@pytest.mark.parametrize("task,key,value", [
    ("attributes", "loss.alpha", -3.0), ("attributes", "loss.alpha", 0.25), ("attributes", "loss.alpha", 1.0),
    ("attributes", "optim.momentum", 0.0), ("attributes", "optim.grad_clip", 0.0),
    ("attributes", "optim.nan_check_every", 1), ("attributes", "model.drop_rate", 0.5), ("attributes", "optim.warmup_epochs", 3),  # = epochs: still runs
    ("attributes", "data.image_size", 16), ("recognition", "head.m", 0.0),
])
def test_values_at_the_edges_of_their_range_are_accepted(task, key, value):
    TrainConfig.from_dict({"task": task, key: value})


def test_fixed_multitask_weights_cannot_all_be_zero():
    zeros = {f"multitask.{k}_weight": 0 for k in ("race", "gender", "age")}
    with pytest.raises(UserError, match="all 0, so nothing would be learned"):
        TrainConfig.from_dict({"task": "fairface", **zeros})
    TrainConfig.from_dict({"task": "fairface", **zeros, "multitask.weighting": "uncertainty"})  # weights unused


def test_every_numeric_field_of_every_task_declares_a_range_its_default_satisfies():
    for task in TASKS.names():
        for name, cls in task_sections(task).items():
            for f in dataclasses.fields(cls):
                if isinstance(f.default, bool) or not isinstance(f.default, (int, float)):
                    continue
                valid = key_range(f"{name}.{f.name}", task)
                assert valid is not None, f"{name}.{f.name} declares no range: use bounded() beside its default"
                assert f.default in valid, f"{name}.{f.name}'s default {f.default} is outside {valid}"


@pytest.mark.parametrize("override,fragment", [
    ("optim.lr=nan", "optim.lr=nan is not a finite number"),
    ("model.drop_rate=2", "model.drop_rate must be in [0, 1)"),
    ("optim.lr=0.01,nan", "optim.lr=nan is not a finite number"),                # a grid's every value
    ("optim.momentum=choice(0.9,1.5)", "optim.momentum=1.5 is out of range"),     # a choice's every value
    ("optim.lr=uniform(0,0.01)", "optim.lr=uniform(0, 0.01) can draw 0, but optim.lr must be above 0"),
    ("model.drop_rate=uniform(0.1,2)", "can draw 2, but model.drop_rate must be in [0, 1)"),
    ("optim.epochs=randint(0,3)", "optim.epochs=randint(0, 3) can draw 0, but optim.epochs must be at least 1"),
    ("optim.batch_size=randint(-4,8)", "can draw -4"),
    ("optim.warmup_epochs=randint(0,5)", "optim.warmup_epochs=4 must be at most optim.epochs=3"),  # smoke: 3 epochs
])
def test_out_of_range_overrides_and_distributions_are_caught_before_any_trial(override, fragment):
    space = search_spaces.get("celeba_backbones")(real_data=False, smoke=True).param_space
    with pytest.raises(UserError) as err:
        check_space(apply_overrides({**space, "optim.epochs": 3}, [override]))
    assert fragment in str(err.value) and "\n" not in str(err.value), err.value


@pytest.mark.parametrize("override", ["model.drop_rate=uniform(0,1)", "eval.threshold=uniform(0.1,0.9)",
                                      "optim.lr=loguniform(1e-4,1e-2)", "optim.epochs=randint(1,5)"])
def test_distributions_inside_the_range_pass(override):
    check_space(apply_overrides({"task": "attributes"}, [override]))  # uniform's upper bound is never drawn: [0, 1) fits [0, 1)


@pytest.mark.parametrize("override", ["optim.lr=uniform(1e-3,inf)", "optim.lr=loguniform(nan,1)"])
def test_a_distribution_with_a_non_finite_bound_is_a_one_line_error(override):
    with pytest.raises(UserError, match="needs finite bounds"):
        apply_overrides({"task": "attributes"}, [override])


def test_a_ranges_largest_draw_counts_for_epochs_and_batch_size():
    assert max_epochs({"optim.epochs": tune.randint(1, 5)}) == 4  # not one random draw
    assert max(batch_sizes({"optim.batch_size": tune.randint(8, 65)})) == 64


def test_a_sweep_file_distribution_out_of_range_names_the_file(tmp_path):
    from orchestrator.preflight import Preflight
    from orchestrator.sweep import SweepOptions

    path = tmp_path / "drops.yaml"
    path.write_text("question: does dropout help?\ntask: attributes\nmetric: val/macro_f1\nmode: max\nspace:\n"
                    "  model.drop_rate: {uniform: [0.0, 1.5]}\n")
    with pytest.raises(UserError) as err:
        Preflight(SweepOptions(name=str(path))).check_sweep()
    assert str(err.value).startswith(str(path)) and "model.drop_rate must be in [0, 1)" in str(err.value), err.value


def test_every_built_in_sweep_is_inside_the_ranges():
    for name in search_spaces.names():
        for real in (False, True):
            for smoke in (False, True):
                sweep = search_spaces.get(name)(real_data=real, smoke=smoke)
                if sweep.runner == "train":
                    check_space(sweep.param_space)


@pytest.mark.parametrize("override,fragment", [("optim.lr=nan", "optim.lr=nan is not a finite number"),
                                               ("model.drop_rate=2", "model.drop_rate must be in [0, 1)")])
def test_the_command_line_refuses_out_of_range_values_with_exit_2(override, fragment, tmp_path, capsys, monkeypatch):
    from orchestrator.__main__ import main
    from orchestrator.preflight import Preflight

    def reached(self):  # a value that slips through would go on to MLflow, the data and Ray: stop here instead
        raise AssertionError(f"--set {override} passed the settings check")

    monkeypatch.setattr(Preflight, "check_tracking", reached)
    monkeypatch.chdir(tmp_path)
    code = main(["sweep", "celeba_backbones", "--set", override, "--storage", str(tmp_path / "runs"),
                 "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and fragment in lines[0], err


def test_a_nan_in_a_workers_config_is_refused_there_too():
    config = TrainConfig("attributes").to_flat_dict()
    config["optim.lr"] = math.nan  # a config dict as Tune hands it to a worker
    with pytest.raises(UserError, match="optim.lr=nan"):
        TrainConfig.from_dict(config)
