"""A trial's typed config (TrainConfig): built from flat dotted keys or nested dicts, and checked whole.

Every default lives in its section's dataclass (config_sections.py for the shared ones, each task's
config.py for its own). Building a config coerces each value to its declared type (config_values.py),
refuses a key the task does not read (config_keys.py), and checks every float is finite, every
`bounded()` range and each section's rules between its fields, so a sweep file, a `--set`, a built-in
sweep and a worker all meet the same one-line error instead of a NaN loss or a traceback inside every
trial. Like the modules it builds on, this one imports no task.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from trainables.config_keys import field_type, foreign_section_error, unknown_key_error
from trainables.config_sections import SEED_HELP, SEED_RANGE, known_tasks, task_sections
from trainables.config_values import coerce, flatten, helped_coerce, range_problem, with_help
from trainables.errors import UserError


class TrainConfig:
    """A trial's config: its task, its seed, and exactly the sections that task reads (as attributes:
    `cfg.model.name`, `cfg.loss.gamma`)."""

    def __init__(self, task: str, seed: int = 0, **sections: Any):
        classes = task_sections(task)
        for name in sections:
            if name not in classes:
                raise foreign_section_error(f"{name}.*", task, classes)
        self.task, self.seed = task, seed
        self.sections = {name: sections.get(name) or cls() for name, cls in classes.items()}
        check_values(self)

    def __getattr__(self, name: str):
        sections = self.__dict__.get("sections", {})
        if name in sections:
            return sections[name]
        raise AttributeError(f"task {self.__dict__.get('task')!r} has no config section {name!r}")

    def __eq__(self, other) -> bool:
        return isinstance(other, TrainConfig) and self.to_flat_dict() == other.to_flat_dict()

    def __repr__(self) -> str:
        return f"TrainConfig({self.to_flat_dict()!r})"

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> "TrainConfig":
        """Build from flat dotted keys or nested dicts; unknown keys, keys of sections the task does not
        read, and bad types are UserErrors."""
        flat = flatten(config)
        if "task" not in flat:
            raise UserError(f"a config names its task, and this one has no `task` key: add task: one of "
                            f"{', '.join(known_tasks())} (e.g. task: attributes)")
        task = coerce("task", flat.pop("task"), str)
        classes = task_sections(task)
        seed = helped_coerce("seed", flat.pop("seed", 0), int, SEED_HELP)
        values: dict[str, dict[str, Any]] = {}
        for key, value in flat.items():
            section, _, name = key.partition(".")
            if not name:
                raise unknown_key_error(key, task)
            if section not in classes:
                raise foreign_section_error(key, task, classes)
            values.setdefault(section, {})[name] = value
        built = {name: _build(section_cls, values.get(name, {}), name + ".", task)
                 for name, section_cls in classes.items()}
        return cls(task, seed, **built)

    def to_flat_dict(self) -> dict[str, Any]:
        return {"task": self.task, "seed": self.seed,
                **flatten({name: dataclasses.asdict(section) for name, section in self.sections.items()})}


def check_values(cfg: "TrainConfig") -> None:
    """Every float finite, every `bounded()` range held, and each section's own `check_relations`
    (rules between its fields): a one-line UserError naming the key, the value and the range."""
    if (problem := range_problem("seed", cfg.seed, SEED_RANGE)):
        raise UserError(with_help(f"{problem}: fix the value, e.g. --set seed=0", "seed", SEED_HELP))
    for name, section in cfg.sections.items():
        for f in dataclasses.fields(section):
            key, value = f"{name}.{f.name}", getattr(section, f.name)
            problem = range_problem(key, value, f.metadata.get("range"))
            if problem:
                example = f"{f.default:g} (its default)" if isinstance(f.default, (int, float)) else "..."
                raise UserError(with_help(f"{problem}: fix the value, e.g. --set {key}={example}", key,
                                          f.metadata.get("help", "")))
        relations = getattr(section, "check_relations", None)
        if relations is not None:
            relations(name + ".")


def _build(section_cls: type, values: dict[str, Any], prefix: str, task: str) -> Any:
    """One section from its raw values (the keys after `prefix`), each coerced to its declared type."""
    fields = {f.name: f for f in dataclasses.fields(section_cls)}
    for key in values:
        if key not in fields:
            raise unknown_key_error(prefix + key, task)
    return section_cls(**{k: helped_coerce(prefix + k, v, field_type(section_cls, k, task),
                                           fields[k].metadata.get("help", "")) for k, v in values.items()})
