"""What a dotted key of a task's config is: whether it exists, its type, its help text, its valid range,
whether it holds a path; and the one-line error when a key does not fit the task.

A trial's config travels as a flat dict of dotted keys (`model.name`, `optim.lr`, ...): the same keys
appear in sweep files, in `--set` overrides, in the section dataclasses and as MLflow params. The help
texts are the fields' own (`helped()`, `bounded()`, `path()` in config_fields.py); the help of `task`
lists the tasks registered when it is shown, so it never names a task that is not there.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any

from trainables.config_fields import Range
from trainables.config_sections import SCALARS, SEED_HELP, SEED_RANGE, all_sections, known_tasks, task_sections
from trainables.errors import UserError


def known_keys(task: str) -> list[str]:
    """Every dotted key a config of `task` accepts, in declaration order."""
    return [*SCALARS, *(f"{name}.{f.name}" for name, cls in task_sections(task).items()
                        for f in dataclasses.fields(cls))]


def key_type(key: str, task: str) -> Any:
    """The declared type of a dotted key for `task` (for parsing `--set`)."""
    if key in SCALARS:
        return SCALARS[key]
    section, _, name = key.partition(".")
    classes = task_sections(task)
    if name and section not in classes:
        raise foreign_section_error(key, task, classes)
    section_cls = classes.get(section)
    if section_cls is None or name not in typing.get_type_hints(section_cls):
        raise unknown_key_error(key, task)
    return field_type(section_cls, name, task)


def field_type(cls: type, name: str, task: str) -> Any:
    """The declared type of field `name` of section `cls`, without its `| None`."""
    hints = typing.get_type_hints(cls)
    if name not in hints:
        raise unknown_key_error(name, task)
    typ = hints[name]
    if isinstance(typ, types.UnionType):
        typ = next(t for t in typing.get_args(typ) if t is not type(None))
    return typ


def path_keys(task: str) -> list[str]:
    """The dotted keys whose values are paths, which the driver makes absolute."""
    return [f"{name}.{f.name}" for name, cls in task_sections(task).items()
            for f in dataclasses.fields(cls) if f.metadata.get("path")]


def key_help(key: str, task: str) -> str:
    """The one-line help a dotted key declares ("" when none)."""
    if key == "task":  # the tasks registered now, not a list written here
        return f"what the trials learn: {' | '.join(known_tasks())}"
    if key == "seed":
        return SEED_HELP
    found = _field(key, task)
    return found.metadata.get("help", "") if found else ""


def key_range(key: str, task: str) -> Range | None:
    """The declared range of a dotted key for `task` (None when it declares none)."""
    if key == "seed":
        return SEED_RANGE
    found = _field(key, task)
    return found.metadata.get("range") if found else None


def key_acts(key: str, task: str, config: dict) -> bool:
    """Whether a dotted key acts on a trial of `config` (dotted keys): not when its field is declared
    `only_with` a sibling's values (config_fields.bounded) and the sibling, as set in `config` or by its
    default, holds none of them; e.g. `loss.gamma`, which only the focal loss reads."""
    found = _field(key, task)
    wanted = found.metadata.get("only_with") if found else None
    section = key.partition(".")[0]
    for sibling, values in (wanted or {}).items():
        other = _field(f"{section}.{sibling}", task)
        if config.get(f"{section}.{sibling}", other.default if other else None) not in values:
            return False
    return True


def _field(key: str, task: str) -> dataclasses.Field | None:
    section, _, name = key.partition(".")
    cls = task_sections(task).get(section)
    found = [f for f in dataclasses.fields(cls) if f.name == name] if cls else []
    return found[0] if found else None


def unknown_key_error(key: str, task: str) -> UserError:
    close = difflib.get_close_matches(key, known_keys(task), n=3)
    hint = (f"did you mean {', '.join(close)}?" if close
            else "run `python -m orchestrator list --keys` for the keys of each task")
    return UserError(f"unknown config key '{key}' for task '{task}': {hint}")


def foreign_section_error(key: str, task: str, classes: dict[str, type]) -> UserError:
    section = key.partition(".")[0]
    readers = all_sections().get(section)
    if not readers:
        return unknown_key_error(key, task)
    return UserError(f"config key '{key}' belongs to the '{section}' section, which task '{task}' does not read "
                     f"(only {', '.join(readers)} do); task '{task}' reads {', '.join(classes)}: remove the key "
                     f"or run a sweep of another task")
