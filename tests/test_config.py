"""TrainConfig: dotted keys, defaults in one place, type coercion and one-line errors."""

import pytest

from trainables.config import TrainConfig
from trainables.config_keys import key_type, known_keys
from trainables.config_values import coerce
from trainables.errors import UserError


def test_flat_and_nested_forms_agree():
    flat = TrainConfig.from_dict({"task": "attributes", "model.name": "seresnet18", "optim.lr": 0.01, "seed": 3})
    nested = TrainConfig.from_dict({"task": "attributes", "model": {"name": "seresnet18"}, "optim": {"lr": 0.01}, "seed": 3})
    assert flat == nested
    assert flat.model.name == "seresnet18" and flat.optim.lr == 0.01 and flat.seed == 3
    assert flat.loss.name == TrainConfig("attributes").loss.name  # untouched keys keep the dataclass default


def test_round_trip_through_flat_dict():
    cfg = TrainConfig.from_dict({"task": "attributes", "data.augment": ["hflip", "cutout"], "loss.gamma": 1.5})
    assert TrainConfig.from_dict(cfg.to_flat_dict()) == cfg
    assert set(cfg.to_flat_dict()) == set(known_keys("attributes"))


@pytest.mark.parametrize("key,text,expected", [
    ("optim.lr", "0.01", 0.01), ("optim.epochs", "7", 7), ("model.pretrained", "false", False),
    ("model.pretrained", "1", True), ("data.augment", "hflip,cutout", ["hflip", "cutout"]),
    ("data.augment", '["hflip"]', ["hflip"]), ("model.name", "resnet18", "resnet18"),
])
def test_strings_from_the_command_line_are_coerced(key, text, expected):
    assert coerce(key, text, key_type(key, "attributes")) == expected


@pytest.mark.parametrize("config,fragment", [
    ({"optim.lr": "fast"}, "optim.lr' expects float"),
    ({"optim.epochs": 2.5}, "optim.epochs' expects int"),
    ({"model.pretrained": "maybe"}, "expects bool"),
    ({"model.nme": "x"}, "did you mean model.name"),
    ({"nosuch.key": 1}, "unknown config key 'nosuch.key'"),
    ({"epochs": 3}, "unknown config key 'epochs'"),
])
def test_bad_values_and_keys_are_one_line_user_errors(config, fragment):
    with pytest.raises(UserError) as err:
        TrainConfig.from_dict({"task": "attributes", **config})
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_a_config_holds_only_the_sections_its_task_reads():
    recognition = TrainConfig.from_dict({"task": "recognition", "head.m": 0.3})
    keys = recognition.to_flat_dict()
    assert recognition.head.m == 0.3 and "eval.targets" in keys
    assert not any(k.startswith(("loss.", "multitask.", "age.")) for k in keys)  # no BCE on an ArcFace run
    attributes = TrainConfig.from_dict({"task": "attributes", "task": "attributes"}).to_flat_dict()
    assert attributes["task"] == "attributes" and "loss.name" in attributes and "head.m" not in attributes


@pytest.mark.parametrize("task,key", [("recognition", "loss.gamma"), ("attributes", "head.m"),
                                      ("fairface", "loss.gamma")])
def test_a_key_of_a_section_the_task_ignores_is_a_one_line_error(task, key):
    from trainables.errors import UserError

    with pytest.raises(UserError, match=f"'{key}' belongs to the '{key.split('.')[0]}' section") as err:
        TrainConfig.from_dict({"task": task, key: 1})
    assert "\n" not in str(err.value)


def test_path_keys_are_declared_per_task():
    from trainables.config_keys import path_keys

    assert set(path_keys("recognition")) == {"model.weights", "data.root", "data.cache_dir", "eval.targets"}
    assert "eval.targets" not in path_keys("attributes")


def test_every_key_of_every_task_has_its_help_in_list_keys(capsys):
    """`list --keys` prints each key with its default and its one-line help (and its declared range): none is
    without help, so the CLI, not a source comment, says what a key does."""
    from argparse import Namespace

    from orchestrator.commands.list import cmd_list
    from trainables.config_keys import key_help
    from trainables.tasks import TASKS

    for task in TASKS:
        for key in TrainConfig(task).to_flat_dict():
            assert key_help(key, task).strip(), f"{key} of task {task} has no help"
    cmd_list(Namespace(keys=True))
    out = capsys.readouterr().out
    listed = [line for line in out.splitlines() if line.startswith("  ") and "  # " in line]
    assert len(listed) == sum(len(TrainConfig(t).to_flat_dict()) - 1 for t in TASKS)  # all but `task`
    lr = next(line for line in listed if line.split()[0] == "optim.lr")
    assert "peak learning rate" in lr and lr.endswith("[above 0]"), lr


def test_the_help_of_task_lists_exactly_the_registered_tasks(monkeypatch):
    """The help of `task` is read from the task registry when it is shown, not written beside it."""
    from trainables.config_keys import key_help
    from trainables.config_sections import TASK_SECTIONS
    from trainables.tasks import TASKS

    def listed() -> list[str]:
        return key_help("task", "attributes").split(": ", 1)[1].split(" | ")

    assert listed() == TASKS.names() == TASK_SECTIONS.names()
    monkeypatch.setitem(TASK_SECTIONS._items, "zebra", {})  # a task registered after this module was imported
    assert listed() == [*TASKS.names(), "zebra"]


def test_no_task_is_assumed():
    with pytest.raises(UserError) as err:
        TrainConfig.from_dict({"optim.lr": 0.01})
    message = str(err.value)
    assert "`task`" in message and "attributes, fairface, recognition" in message and "\n" not in message
    with pytest.raises(TypeError):
        TrainConfig()  # the task is the first argument, with no default


def test_config_imports_no_task_and_a_config_imports_only_its_own_task():
    import ast
    import subprocess
    import sys
    from pathlib import Path

    import trainables.config

    modules = sorted(Path(trainables.config.__file__).parent.glob("config*.py"))  # config.py and its config_*.py
    assert len(modules) > 1, modules
    for module in modules:  # at module level or inside a function
        tree = ast.parse(module.read_text())
        imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not [m for m in imported if m.startswith("trainables.tasks")], (module.name, imported)
    code = ("import sys; from trainables.config import TrainConfig; TrainConfig.from_dict({'task': 'fairface'}); "
            "print(sorted({m.split('.')[2] for m in sys.modules if m.startswith('trainables.tasks.')}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['fairface']"
