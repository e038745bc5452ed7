"""What a sweep was started with, kept in its state file, so that a `--resume` with other settings is refused.

A resume goes on with the trials Tune saved: their configs, its searcher's draws and its scheduler are all
restored, and any other `--set`, `--smoke`, `--data` or sweep-file value given to the resume is ignored by Tune.
Taken as they were, those values would still reach the header ("3 epochs each"), the progress lines and the
parent run's params (`override.optim.epochs=3`) of a sweep whose every trial trained 2 epochs: a record that
lies. So the first invocation records its settings (each key of its param space as `--set` writes it, the
prepared data's fingerprint, `--smoke`, its objectives, seed, samples and early stopping) and the command that
resumes it, and a resume whose settings differ is refused in one line that names each change and that command.

What may change on a resume is kept out: where the data is (its fingerprint is compared instead), the workers
and GPUs of a trial, trials at once, the cluster, failures allowed, the budget and the model's registered name.
A sweep started before its settings were recorded resumes unchecked.
"""

from __future__ import annotations

from typing import Any

from ray.tune.search.sample import Categorical, Float, Integer, LogUniform

from orchestrator import accounting, budget
from orchestrator.space import is_grid
from search_spaces.distributions import render
from trainables.errors import UserError


def spec(value: Any) -> str:
    """A param-space entry as `--set` writes it, floats to the last digit: `grid(resnet18, seresnet18)`,
    `loguniform(0.0001,0.01)`, `2`."""
    if is_grid(value):
        return f"grid({', '.join(_exact(v) for v in value['grid_search'])})"
    if isinstance(value, Categorical):
        return f"choice({', '.join(_exact(v) for v in value.categories)})"
    if isinstance(value, (Float, Integer)):
        kind = "randint" if isinstance(value, Integer) else \
            "loguniform" if isinstance(value.sampler, LogUniform) else "uniform"
        return f"{kind}({_exact(value.lower)},{_exact(value.upper)})"
    return _exact(value)


def _exact(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_exact(v) for v in value) + "]"
    return render(value)


def settings_of(space: dict, locations: tuple[str, ...], data_digest: str, smoke: bool,
                objectives: list[tuple[str, str]], seed: int, samples: int, early_stopping: bool) -> dict[str, str]:
    """{setting: its text} of a checked sweep; `locations`: the space's keys that say where the data is."""
    settings = {key: spec(value) for key, value in sorted(space.items()) if key not in locations}
    return {**settings, "data fingerprint": data_digest or "unknown", "--smoke": "on" if smoke else "off",
            "objectives": ", ".join(f"{m} ({d})" for m, d in objectives), "seed": str(seed),
            "samples": str(samples), "early stopping": "on" if early_stopping else "off"}


def command_that_resumes() -> str:
    """This command as the resume of its sweep: `--resume` added, credentials redacted, and `--budget` left out (a
    resume without one keeps the last budget given; a spent one would stop it again at once)."""
    return accounting.resume_command(budget.without_budget())


def check_same(started: dict[str, str], now: dict[str, str], path: str, command: str, this_command: str) -> None:
    """Refuse a resume whose settings (`now`) differ from those the sweep at `path` started with. `command`: the
    one that resumes it as it started; `this_command`: this one's, said the same way. When the two are the same,
    what changed is not the command but what it reads: a sweep file, the data, or this code."""
    if not started:
        return
    changed = [f"{key} {started.get(key, '(not set)')} -> {now.get(key, '(not set)')}"
               for key in sorted(set(started) | set(now)) if started.get(key) != now.get(key)]
    if not changed:
        return
    if command and command == this_command:
        raise UserError(f"--resume: the sweep at {path} started with other settings than this same command gives now "
                        f"({'; '.join(changed)}): its sweep file, its data or this code changed since, and a resumed "
                        "sweep goes on with the trials it set up; put them back to finish it, or start a new sweep "
                        "with --name NEW_NAME")
    how = f"resume it as it started: {command}" if command else "resume it with the settings it started with"
    raise UserError(f"--resume: this command changes the settings the sweep at {path} started with "
                    f"({'; '.join(changed)}), and a resumed sweep goes on with the trials it set up: {how} "
                    f"(or start a new sweep with --name NEW_NAME)")
