"""Name -> class registries for methods, datasets and models.

Like timm's model registry: a decorator registers a class under its name, and
``Registry.get`` is the one entry point. Methods and datasets are also discovered from
the entry-point groups ``debiasbench.methods`` / ``debiasbench.datasets``; the built-ins
register through those groups exactly as a third-party package does.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Callable, Generic, TypeVar

from debiasbench.errors import UserError, unknown_name_message

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection; ``group`` is the entry-point group loaded on first lookup."""

    def __init__(self, kind: str, group: str | None = None):
        self.kind = kind
        self.group = group
        self._items: dict[str, T] = {}
        self._broken: dict[str, str] = {}
        self._loaded = group is None

    def register(self, obj: T | None = None, *, name: str | None = None):
        """Register ``obj`` (usable as ``@registry.register`` or ``@registry.register(name=..)``)."""

        def add(item: T) -> T:
            key = name or getattr(item, "name", "") or getattr(item, "__name__")
            self._items[key] = item
            self._broken.pop(key, None)
            return item

        return add(obj) if obj is not None else add

    def _load_entry_points(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for ep in entry_points(group=self.group):
            if ep.name in self._items:
                continue
            try:
                self._items[ep.name] = ep.load()
            except Exception as exc:  # a broken plugin must not break every other name
                self._broken[ep.name] = f"{type(exc).__name__}: {exc}"

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._items)

    def broken(self) -> dict[str, str]:
        """Plugins whose entry point failed to import, with the reason."""
        self._load_entry_points()
        return dict(self._broken)

    def get(self, name: str) -> T:
        self._load_entry_points()
        if name in self._items:
            return self._items[name]
        if name in self._broken:
            raise UserError(f"{self.kind} {name!r} failed to load: {self._broken[name]}")
        raise UserError(unknown_name_message(self.kind, name, list(self._items)))

    def __contains__(self, name: str) -> bool:
        self._load_entry_points()
        return name in self._items

    def items(self) -> list[tuple[str, T]]:
        return [(n, self._items[n]) for n in self.names()]


METHODS: Registry = Registry("method", "debiasbench.methods")
DATASETS: Registry = Registry("dataset", "debiasbench.datasets")
MODELS: Registry[Callable] = Registry("model")
