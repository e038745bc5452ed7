"""Distribution specs: the one parser behind a sweep file's `{loguniform: [1e-4, 1e-2]}` and
`--set optim.lr=loguniform(1e-4,1e-2)`, turning either into the Tune domain it names.

    grid(a, b, ...)        every value, each in trials of its own     tune.grid_search
    choice(a, b, ...)      one value drawn per trial                  tune.choice
    uniform(low, high)     a float drawn uniformly                    tune.uniform
    loguniform(low, high)  a float drawn uniformly in log space       tune.loguniform
    randint(low, high)     an integer, low <= n < high (as Tune)      tune.randint

Values are parsed to the key's declared type, so `choice(1, 2)` on a float key draws floats and a
typo is caught here, in the driver. Errors are one line: the caller says where the spec was written
(a file and its block, or a --set) and in which syntax the fix is shown.
"""

from __future__ import annotations

import difflib
import math
import re
import typing
from typing import Any, Callable

from ray import tune
from ray.tune.search.sample import Categorical, Float, Integer

from trainables.config_values import coerce
from trainables.errors import UserError

LISTS = ("grid", "choice")
RANGES = ("uniform", "loguniform", "randint")
KINDS = LISTS + RANGES
EXAMPLES = {"grid": ["a", "b"], "choice": ["a", "b"], "uniform": [0.0, 1.0], "loguniform": [1e-4, 1e-2],
            "randint": [1, 5]}
CALL = re.compile(r"^\s*([A-Za-z_]\w*)\s*\((.*)\)\s*$", re.S)


def show_call(kind: str, args: list) -> str:
    """How --set writes a spec: `loguniform(0.0001,0.01)`."""
    return f"{kind}({','.join(render(a) for a in args)})"


def show_yaml(kind: str, args: list) -> str:
    """How a sweep file writes a spec: `{loguniform: [0.0001, 0.01]}`."""
    return "{" + f"{kind}: [{', '.join(render(a) for a in args)}]" + "}"


Show = Callable[[str, list], str]


def parse_call(text: str) -> tuple[str, list[str]] | None:
    """`loguniform(1e-4, 1e-2)` -> ("loguniform", ["1e-4", "1e-2"]); None when `text` is no call at all."""
    match = CALL.match(str(text))
    if not match:
        return None
    return match.group(1), split_args(match.group(2))


def split_args(inner: str) -> list[str]:
    """Split on the commas outside brackets, so `choice([hflip],[hflip,cutout])` gives two lists."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(inner):
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(inner[start:i].strip())
            start = i + 1
    last = inner[start:].strip()
    return parts + [last] if last or parts else []


def build(kind: str, args: Any, key: str, typ: Any, where: str, show: Show) -> Any:
    """The Tune domain (or grid) of `kind(args)` for config key `key` of declared type `typ`.

    `where` opens each error (e.g. "my.yaml: space: optim.lr" or "--set optim.lr=..."); `show` writes
    the example of the fix in the syntax the user wrote."""
    if kind not in KINDS:
        close = difflib.get_close_matches(kind, KINDS, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise UserError(f"{where}: unknown distribution '{kind}': {hint}use one of {', '.join(KINDS)}, "
                        f"e.g. {show('choice', EXAMPLES['choice'])}")
    example = show(kind, _example(kind, typ))
    if not isinstance(args, (list, tuple)):
        raise UserError(f"{where}: {kind} takes a list of values, got {args!r}: write e.g. {example}")
    if kind in LISTS:
        if not args:
            raise UserError(f"{where}: {kind} needs at least one value, got none: write e.g. {example}")
        values = [_coerce(key, _unbracket(a, typ), typ, where, example) for a in args]
        return tune.grid_search(values) if kind == "grid" else tune.choice(values)
    origin = typing.get_origin(typ) or typ
    if origin not in (int, float):
        raise UserError(f"{where}: {kind} draws numbers, but {key} holds {type_name(typ)}: "
                        f"list its values instead, e.g. {show('choice', EXAMPLES['choice'])}")
    if kind != "randint" and origin is int:
        raise UserError(f"{where}: {key} is an integer, so {kind} cannot draw it: "
                        f"use randint, e.g. {show('randint', EXAMPLES['randint'])}")
    if len(args) != 2:
        raise UserError(f"{where}: {kind} takes two bounds (low, high), got {len(args)}: write e.g. {example}")
    number = int if kind == "randint" else float
    low, high = (_coerce(key, a, number, where, example) for a in args)
    if not (math.isfinite(low) and math.isfinite(high)):
        raise UserError(f"{where}: {kind} needs finite bounds, got {render(low)} and {render(high)}: "
                        f"write e.g. {example}")
    if low >= high:
        raise UserError(f"{where}: {kind} needs low < high, got {render(low)} and {render(high)}: write e.g. {example}"
                        + (" (randint's high is excluded, as in Tune)" if kind == "randint" else ""))
    if kind == "loguniform" and low <= 0:
        raise UserError(f"{where}: loguniform needs bounds above 0, got {render(low)}: write e.g. {example}, "
                        f"or use uniform for a range from 0")
    return {"uniform": tune.uniform, "loguniform": tune.loguniform, "randint": tune.randint}[kind](low, high)


def _coerce(key: str, value: Any, typ: Any, where: str, example: str) -> Any:
    try:
        return coerce(key, value, typ)
    except UserError:
        raise UserError(f"{where}: {value!r} is not {type_name(typ)}, as {key} needs: write e.g. {example}") from None


def _unbracket(value: Any, typ: Any) -> Any:
    """`[hflip,cutout]` in a --set call is a list value of a list key, written without quotes."""
    if (typing.get_origin(typ) or typ) is list and isinstance(value, str):
        text = value.strip()
        if text.startswith("[") and text.endswith("]"):
            return text[1:-1]
    return value


def _example(kind: str, typ: Any) -> list:
    origin = typing.get_origin(typ) or typ
    if kind in LISTS:
        return {int: [2, 4], float: [0.1, 0.5], bool: [True, False]}.get(origin, EXAMPLES[kind])
    return EXAMPLES[kind]


def type_name(typ: Any) -> str:
    origin = typing.get_origin(typ) or typ
    return {int: "a whole number", float: "a number", bool: "true or false", str: "text", list: "a list"}.get(
        origin, getattr(origin, "__name__", str(typ)))


def render(value: Any) -> str:
    """A value as a user writes it: `true`, `0.0001`, `[hflip, cutout]`."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ", ".join(render(v) for v in value) + "]"
    return str(value)


def within(domain: Any, value: Any) -> bool:
    """Whether a search could draw `value` from `domain`: a grid (`{"grid_search": [...]}`) or a choice holds it,
    or a range covers it (randint's upper excluded, as Tune draws)."""
    if isinstance(domain, dict) and set(domain) == {"grid_search"}:
        return value in domain["grid_search"]
    if isinstance(domain, Categorical):
        return value in domain.categories
    if isinstance(domain, (Float, Integer)) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return domain.lower <= value and (value < domain.upper if isinstance(domain, Integer) else value <= domain.upper)
    return False
