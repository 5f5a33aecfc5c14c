"""Declared values: a default, the range a user may set, and a search distribution.

Methods declare their hyper-parameters, datasets their parameters and the run config
its keys with the same ``HParam`` so one validator gives every bad value the same
readable message ("hparams.lambda: expected a float >= 0, got 'abc'"). Search spaces
follow DomainBed: a default that runs, plus a distribution a sweep draws from.
"""

from __future__ import annotations

import builtins
import math
import random
from dataclasses import dataclass, field
from typing import Any, Sequence

from debiasbench.core.errors import ConfigError, shown, unknown_name_message


@dataclass(frozen=True)
class Choice:
    """Uniform over a finite set of values."""

    values: Sequence[Any]

    def sample(self, rng: random.Random) -> Any:
        return rng.choice(list(self.values))


@dataclass(frozen=True)
class Uniform:
    low: float
    high: float

    def sample(self, rng: random.Random) -> float:
        return rng.uniform(self.low, self.high)


@dataclass(frozen=True)
class LogUniform:
    """Uniform in log10 space: for values searched over decades (learning rates, lambda)."""

    low: float
    high: float

    def sample(self, rng: random.Random) -> float:
        return 10 ** rng.uniform(math.log10(self.low), math.log10(self.high))


@dataclass(frozen=True)
class IntUniform:
    low: int
    high: int

    def sample(self, rng: random.Random) -> int:
        return rng.randint(self.low, self.high)


SearchSpace = Choice | Uniform | LogUniform | IntUniform

_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a float", str: "a string"}


@dataclass(frozen=True)
class HParam:
    """One declared value.

    ``low`` / ``high`` (inclusive) and ``choices`` bound what a user may set; ``space`` is
    only what a sweep searches, which may be narrower. ``type`` defaults to the type of
    ``default`` and must be given when the default is ``None``.
    """

    default: Any
    space: SearchSpace | None = None
    help: str = ""
    low: float | None = None
    high: float | None = None
    choices: Sequence[Any] | None = None
    type: type | None = None
    optional: bool = field(default=False)

    @property
    def value_type(self) -> builtins.type:  # the field ``type`` shadows the builtin here
        if self.type is not None:
            return self.type
        if self.default is None:
            raise TypeError("HParam with default None needs an explicit type")
        return type(self.default)

    def describe(self) -> str:
        """Short text for listings: the allowed values."""
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        text = _TYPE_NAMES.get(self.value_type, self.value_type.__name__)
        if self.low is not None and self.high is not None:
            text += f" in [{self.low}, {self.high}]"
        elif self.low is not None:
            text += f" >= {self.low}"
        elif self.high is not None:
            text += f" <= {self.high}"
        if self.optional or self.default is None:
            text += " or null"
        return text

    def validate(self, key: str, value: Any) -> Any:
        """Return ``value`` converted to the declared type, or raise ``ConfigError``."""
        if value is None and (self.optional or self.default is None):
            return None
        expected = self.value_type
        converted = _coerce(value, expected)
        if converted is _INVALID:
            described = self.describe()
            if expected is float and isinstance(value, float) and not math.isfinite(value):
                # inf passes 'a float >= 0' as written: say which part it fails
                described = described.replace("a float", "a finite float", 1)
            raise ConfigError(f"{key}: expected {described}, got {shown(value)}")
        if self.choices is not None and converted not in self.choices:
            raise ConfigError(f"{key}: expected {self.describe()}, got {shown(value)}")
        if self.low is not None and converted < self.low:
            raise ConfigError(f"{key}: expected {self.describe()}, got {shown(value)}")
        if self.high is not None and converted > self.high:
            raise ConfigError(f"{key}: expected {self.describe()}, got {shown(value)}")
        return converted


@dataclass(frozen=True)
class OpenFloat(HParam):
    """A float strictly above ``low`` (and at most ``high``); with ``allow_inf`` also inf
    (written ``inf`` in YAML or ``--set``). For orders of norms and exponents such as
    GCE's ``q``, where the bound itself is not a valid value."""

    allow_inf: bool = False

    def describe(self) -> str:
        text = f"a float in ({self.low:g}, {self.high:g}]" if self.high is not None else f"a float > {self.low:g}"
        return text + (" or inf" if self.allow_inf else "")

    def validate(self, key: str, value):
        if self.allow_inf and isinstance(value, str) and value.strip().lower() in ("inf", ".inf", "infinity"):
            value = math.inf
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
        if not (number and value > self.low and (self.high is None or value <= self.high)
                and (self.allow_inf or math.isfinite(value))):
            raise ConfigError(f"{key}: expected {self.describe()}, got {shown(value)}")
        return float(value)


_INVALID = object()


def _coerce(value: Any, expected: type) -> Any:
    """Accept the declared type; ints where floats are declared; nothing else silently."""
    if expected is bool:
        return value if isinstance(value, bool) else _INVALID
    if expected is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _INVALID
    if expected is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return _INVALID
        value = float(value)
        return value if math.isfinite(value) else _INVALID
    if expected is str:
        return value if isinstance(value, str) else _INVALID
    return value if isinstance(value, expected) else _INVALID


def resolve(declared: dict[str, HParam], given: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Defaults overlaid with ``given``, every value validated; unknown keys are errors."""
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise ConfigError(unknown_name_message("key", prefix + unknown[0],
                                               [prefix + name for name in declared]))
    return {
        name: spec.validate(prefix + name, given.get(name, spec.default))
        for name, spec in declared.items()
    }
