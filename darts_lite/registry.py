"""One registry type for every named thing a config chooses: tasks, spaces, relaxations, evolution algorithms,
surrogate models, selections, resource kinds.

A ``Registry`` maps names to objects. An entry is either the object itself (``@REG.register("name")`` on a class
or function) or an import path ``"package.module:attribute"`` loaded on first use, so that listing the names (the
entry point, the docs, the tests) never imports the heavy modules behind them. Every entry carries a one-line
summary, which the docs' lists are checked against.

An unknown name raises ``UnknownName`` (a ``ConfigError``): one line naming the kind, the value and every
registered name, which the entry point prints without a traceback.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")

__all__ = ["Registry", "UnknownName", "load_path"]


class UnknownName(ConfigError):
    """A name that no entry of a registry has."""


def load_path(path: str) -> Any:
    """The object at an import path: ``package.module:attribute``, ``package.module.attribute`` or a module
    ``package.module``; the longest importable module prefix, then attributes. ImportError says what is missing."""
    if not isinstance(path, str) or not path.strip():
        raise ImportError(f"{path!r} is not a dotted import path")
    parts = path.strip().replace(":", ".").split(".")
    for cut in range(len(parts), 0, -1):
        module = ".".join(parts[:cut])
        try:
            obj: Any = importlib.import_module(module)
        except ModuleNotFoundError as e:
            # a module that exists but fails to import one of its own imports is a real error: say so
            if e.name and not module.startswith(e.name):
                raise ImportError(f"importing {module} failed: {e}") from None
            continue
        try:
            for name in parts[cut:]:
                obj = getattr(obj, name)
        except AttributeError:
            raise ImportError(f"{module} has no {'.'.join(parts[cut:])!r}") from None
        return obj
    raise ImportError(f"no module named {parts[0]!r}; is it installed, or on PYTHONPATH?")


@dataclass
class _Entry:
    value: Any
    summary: str
    lazy: bool


class Registry(Mapping[str, T], Generic[T]):
    """Names of one kind (``kind``: what the error message calls them, e.g. "task") and what they stand for.

    As a ``Mapping``: ``name in REG``, ``REG[name]`` (loads a lazy entry), ``list(REG)`` (names in registration
    order), ``len(REG)``.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, _Entry] = {}

    def register(self, name: str, value: Any = None, *, summary: str = "") -> Any:
        """Register ``value`` (an object, or an import path ``"module:attribute"`` loaded on first use) as ``name``;
        without ``value`` a decorator that registers what it decorates (its docstring's first line is the summary
        when none is given). Registering a taken name is an error, unless it is the same object again."""
        if value is None:
            def decorate(obj: Any) -> Any:
                self.register(name, obj, summary=summary)
                return obj
            return decorate
        lazy = isinstance(value, str)
        if not summary and not lazy:
            summary = ((getattr(value, "__doc__", None) or "").strip().splitlines() or [""])[0]
        old = self._entries.get(name)
        if old is not None and not self._same(old, value):
            raise ValueError(f"{self.kind} {name!r} is registered already ({old.value!r})")
        self._entries[name] = _Entry(value, summary or (old.summary if old else ""), lazy)
        return value

    @staticmethod
    def _same(old: _Entry, value: Any) -> bool:
        """Whether ``value`` is what ``old`` holds already (re-registering it is harmless: a module imported twice),
        an import path and the object it names being the same."""
        if old.value is value or (isinstance(value, str) and value == old.value):
            return True
        try:
            held = load_path(old.value) if old.lazy else old.value
            given = load_path(value) if isinstance(value, str) else value
        except (ImportError, AttributeError):
            return False
        return held is given

    def get(self, name: Any, default: Any = None) -> T:  # type: ignore[override]
        """The entry ``name``; ``UnknownName`` (listing every name) when there is none. ``default`` is not a
        fallback: an unknown name is always an error here (use ``name in REG`` to ask)."""
        return self[name]

    def __getitem__(self, name: Any) -> T:
        entry = self._entries.get(name) if isinstance(name, str) else None
        if entry is None:
            raise UnknownName(f"{self.kind} {name!r}: unknown; {self.kind}s: {', '.join(self._entries)}")
        if entry.lazy:
            entry.value, entry.lazy = load_path(entry.value), False
        return entry.value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def summary(self, name: str) -> str:
        """The entry's one-line description ('' when it has none)."""
        if name not in self._entries:
            self[name]  # raises UnknownName
        return self._entries[name].summary

    def summaries(self) -> dict[str, str]:
        """{name: one-line description}, in registration order."""
        return {name: entry.summary for name, entry in self._entries.items()}

    def choices(self) -> str:
        """The names, comma-separated: what an error message offers."""
        return ", ".join(self._entries)

    def where(self, predicate: Callable[[T], bool]) -> tuple[str, ...]:
        """The names whose entries satisfy ``predicate`` (loads every entry)."""
        return tuple(name for name in self._entries if predicate(self[name]))

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"
