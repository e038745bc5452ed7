"""One registry for every kind of named thing: tasks, losses, margin heads, augmentations, sweeps, formats.

Each registry looks a name up the same way: an unknown name is a one-line UserError that names the
kind, suggests the closest known name and lists them all, so a typo never reaches a worker.
"""

from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

from trainables.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names -> values of one kind. `key` is the config key that selects one (for the error message),
    `loader` imports the modules that register themselves, on first lookup; `find(name)`, when given, is
    tried first and imports the one module that registers `name` (so a lookup need not import them all)."""

    def __init__(self, kind: str, key: str = "", loader: Callable[[], None] | None = None,
                 find: Callable[[str], None] | None = None):
        self.kind, self.key = kind, key
        self._items: dict[str, T] = {}
        self.load_with(loader, find)

    def load_with(self, loader: Callable[[], None] | None, find: Callable[[str], None] | None = None) -> None:
        """Set how the registering modules are imported: for a registry whose owner must not import them
        itself (trainables/config_sections.py's task sections), the package that may do so calls this."""
        self._loader, self._find, self._loaded = loader, find, loader is None

    def register(self, name: str, value: T | None = None):
        """`registry.register(name, value)`, or `@registry.register(name)` on a class or function."""
        if value is not None:
            self._items[name] = value
            return value

        def add(item: T) -> T:
            self._items[name] = item
            return item

        return add

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            self._loader()

    def get(self, name: str) -> T:
        if name not in self._items and self._find is not None:
            self._find(name)
        if name not in self._items:  # a name already registered needs no loading of the others
            self._load()
        if name not in self._items:
            raise self.unknown(name)
        return self._items[name]

    def unknown(self, name: str) -> UserError:
        close = difflib.get_close_matches(str(name), list(self._items), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        where = f" ({self.key})" if self.key else ""
        return UserError(f"unknown {self.kind} '{name}'{where}{hint}; known: {', '.join(self.names())}")

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        self._load()
        return sorted(self._items.items())

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._load()
        return len(self._items)
