"""Name -> object registries for methods, datasets, model builders and launchers.

Like timm's model registry: a decorator registers an object under its name, and
``Registry.get`` is the one entry point. Every registry is also filled from an
entry-point group (``debiasbench.methods``, ``debiasbench.datasets``,
``debiasbench.models``, ``debiasbench.launchers``); the built-ins register through those
groups exactly as a third-party package does.

A name is one object. Registering a name again with another object is almost always a
mistake (two plugins picked the same name, or a module was imported under two names), so
it warns with ``DuplicateRegistrationWarning`` instead of replacing silently; the
identical object again (a module imported twice, a decorator next to its entry point) is
silent. Tests and contract checks that need a name for a while use ``Registry.override``,
which puts back what was there.
"""

from __future__ import annotations

import contextlib
import warnings
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Callable, Generic, Iterator, TypeVar

from debiasbench.core.errors import UserError, unknown_name_message

T = TypeVar("T")

#: The distribution whose entry points are the built-ins: loaded before any plugin's.
BUILTIN_DISTRIBUTION = "debiasbench"


class DuplicateRegistrationWarning(UserWarning):
    """A registry name was registered again with a different object."""


def describe(obj: object) -> str:
    """``module:qualname`` of ``obj``, the form an entry point names it by."""
    module = getattr(obj, "__module__", None) or type(obj).__module__
    qualname = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return f"{module}:{qualname}"


def _builtins_first(points: list[EntryPoint]) -> list[EntryPoint]:
    """Built-in entry points before plugins', each side in discovery order, so a plugin
    that reuses a built-in name finds it taken whatever order sys.path lists them in."""

    def is_plugin(ep: EntryPoint) -> bool:
        dist = getattr(ep, "dist", None)
        return getattr(dist, "name", None) != BUILTIN_DISTRIBUTION

    return sorted(points, key=is_plugin)


class Registry(Generic[T]):
    """A named collection; ``group`` is the entry-point group loaded on first lookup.

    Names registered in code win over entry points: an entry point whose name is already
    taken by another object warns and is ignored, so an installed plugin can never
    silently replace a built-in (or a class a test registered). ``register`` itself lets
    the later object win, with a warning, as a deliberate call in code should.
    """

    def __init__(self, kind: str, group: str | None = None):
        self.kind = kind
        self.group = group
        self._items: dict[str, T] = {}
        self._broken: dict[str, str] = {}
        self._loaded = group is None

    def _key(self, item: Any, name: str | None) -> str:
        return name or getattr(item, "name", "") or item.__name__

    def register(self, obj: T | None = None, *, name: str | None = None) -> Any:
        """Register ``obj`` (usable as ``@registry.register`` or ``@registry.register(name=..)``).

        Another object already under the name is replaced, with a
        ``DuplicateRegistrationWarning``; the same object again changes nothing.
        """

        def add(item: T, stacklevel: int = 2) -> T:
            key = self._key(item, name)
            before = self._items.get(key)
            if before is not None and before is not item:
                warnings.warn(f"{self.kind} {key!r} registered twice: {describe(item)} replaces "
                              f"{describe(before)}", DuplicateRegistrationWarning, stacklevel=stacklevel)
            self._items[key] = item
            self._broken.pop(key, None)
            return item

        return add(obj, stacklevel=3) if obj is not None else add

    @contextlib.contextmanager
    def override(self, obj: T, *, name: str | None = None) -> Iterator[T]:
        """``obj`` under its name (or ``name``) for the block, without a warning; on exit,
        even by an exception, the name maps to what it did before, or to nothing.

        Entry points are loaded first, so none can arrive during the block and outlive it.
        """
        self._load_entry_points()
        key = self._key(obj, name)
        absent = key not in self._items
        before = self._items.get(key)
        broken = self._broken.pop(key, None)
        self._items[key] = obj
        try:
            yield obj
        finally:
            if absent:
                self._items.pop(key, None)
            else:
                self._items[key] = before  # type: ignore[assignment]
            if broken is not None:
                self._broken[key] = broken

    def _load_entry_points(self) -> None:
        if self._loaded or self.group is None:
            return
        self._loaded = True
        for ep in _builtins_first(list(entry_points(group=self.group))):
            try:
                item = ep.load()
            except Exception as exc:  # a broken plugin must not break every other name
                if ep.name not in self._items:
                    self._broken[ep.name] = f"{type(exc).__name__}: {exc}"
                continue
            before = self._items.get(ep.name)
            if before is None:
                self._items[ep.name] = item
            elif before is not item:
                loaded = "" if describe(item) == ep.value else f" ({describe(item)})"
                warnings.warn(f"{self.kind} {ep.name!r} registered twice: entry point {ep.value}{loaded} "
                              f"ignored, keeping {describe(before)}", DuplicateRegistrationWarning, stacklevel=2)

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
#: Builders ``(num_classes, in_channels=3[, input_shape]) -> (network, latent layer name)``.
MODELS: Registry[Callable] = Registry("model", "debiasbench.models")
#: Launcher factories ``(LauncherOptions) -> Launcher`` (see ``debiasbench.sweep.launchers``).
LAUNCHERS: Registry[Callable] = Registry("launcher", "debiasbench.launchers")
