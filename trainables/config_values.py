"""A raw config value (from a sweep file, a `--set`, JSON or an MLflow param) made into its declared type,
and what is wrong with one, in a single line.

Nothing here knows the tasks or their sections: the caller passes the key and its declared type (see
config_keys.py), and these return the typed value or raise a one-line UserError that names the key,
the value and the fix.
"""

from __future__ import annotations

import json
import math
import os
import typing
from typing import Any

from trainables.config_fields import Range
from trainables.errors import UserError

TRUE_WORDS = ("true", "1", "yes", "on")  # a bool's spellings, in a config value and in our environment variables
FALSE_WORDS = ("false", "0", "no", "off")


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as flat dotted keys: {"optim": {"lr": 0.01}} -> {"optim.lr": 0.01}."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def coerce(key: str, value: Any, typ: Any) -> Any:
    """Convert `value` (often a string from the CLI) to `typ`, or raise a one-line UserError."""
    origin = typing.get_origin(typ) or typ
    try:
        if origin is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in TRUE_WORDS:
                return True
            if text in FALSE_WORDS:
                return False
            raise ValueError
        if origin is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value) if not isinstance(value, str) else int(value.strip())
        if origin is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if origin is list:
            if isinstance(value, (list, tuple)):
                return list(value)
            text = str(value).strip()
            if text.startswith("["):
                return list(json.loads(text))
            return [part for part in (p.strip() for p in text.split(",")) if part]
        if origin is str:
            if not isinstance(value, str):
                raise ValueError
            return value
    except (ValueError, TypeError, json.JSONDecodeError):
        pass
    else:
        return value
    name = getattr(origin, "__name__", str(typ))
    raise UserError(f"config key '{key}' expects {name}, got {value!r}: fix the value (e.g. --set {key}=...)")


def helped_coerce(key: str, value: Any, typ: Any, help: str) -> Any:
    """`coerce`, whose one-line error also quotes the key's help."""
    try:
        return coerce(key, value, typ)
    except UserError as err:
        raise UserError(with_help(str(err), key, help)) from None


def with_help(message: str, key: str, help: str) -> str:
    """An error line about a value of `key`, ending with what the key does (its declared help), so a
    mistake in a sweep file or a `--set` says what the key is for."""
    return f"{message}; {key}: {help}" if help else message


def range_problem(key: str, value: Any, valid: Range | None) -> str:
    """What is wrong with `value` for `key` ("" when nothing): not finite, or outside `valid`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return ""
    if not math.isfinite(value):
        return f"{key}={value} is not a finite number" + (f"; {key} must be {valid}" if valid else "")
    if valid is not None and value not in valid:
        return f"{key}={value:g} is out of range: {key} must be {valid}"
    return ""


def absolute(value: Any) -> Any:
    """A path made absolute against the driver's working directory; URIs and "" unchanged."""
    if isinstance(value, (list, tuple)):
        return [absolute(v) for v in value]
    if not isinstance(value, str) or not value or "://" in value:
        return value
    if value.startswith("local-dir:"):  # timm's folder scheme (models/weights.py): the folder after it is the path
        return "local-dir:" + absolute(value[len("local-dir:"):])
    return os.path.abspath(os.path.expanduser(value))
