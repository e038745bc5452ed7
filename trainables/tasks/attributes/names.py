"""Which label columns of prepared attribute data are attributes (the task and its leaderboard ask)."""

from __future__ import annotations

from trainables.data.shards import load_metadata
from trainables.errors import UserError

NOT_ATTRIBUTES = ("identity",)  # label columns of an attribute file's shards that are not attributes


def attribute_names(meta: dict) -> list[str]:
    """The attributes of prepared data, from its metadata, in the label file's order."""
    return [c for c in meta["label_columns"] if c not in NOT_ATTRIBUTES]


def names_of_root(root: str) -> list[str] | None:
    """The attributes of the prepared data at `root`, or None where it cannot be read (moved, deleted)."""
    try:
        return attribute_names(load_metadata(root))
    except (UserError, OSError, ValueError, KeyError):
        return None
