"""Registries, low in the house: capabilities fill them, the runner, config and report read them.

A second registration under a taken name raises: two capabilities never
silently replace each other.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from centile.errors import CentileError

T = TypeVar("T")


class RegistryError(CentileError):
    """A capability registered a name that is already taken (a bug in that capability, not in the data)."""

    exit_code = 2


class Registry(Generic[T]):
    """An ordered name -> item mapping that refuses a second item under a taken name."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> T:
        if name in self._items:
            raise RegistryError(f"{self.kind} {name!r} is registered twice; pick another name")
        self._items[name] = item
        return item

    def items(self) -> list[T]:
        return list(self._items.values())

    def names(self) -> list[str]:
        return list(self._items)

    def get(self, name: str) -> T | None:
        return self._items.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __getitem__(self, name: str) -> T:
        return self._items[name]

    @contextlib.contextmanager
    def scoped(self) -> Iterator[Registry[T]]:
        """Registrations made inside the block are undone at its end (tests, notebooks)."""
        before = dict(self._items)
        try:
            yield self
        finally:
            self._items = before


def lazy_exports(package: str, exports: dict[str, tuple[str, ...]]) -> tuple[Any, Any]:
    """``__getattr__`` and ``__dir__`` for a capability package that re-exports names of its modules
    (``{module: names}``), importing a module the first time one of its names is asked for.

    Registering the built-in capabilities imports each package; with lazy re-exports that does not
    import what their computations need (scipy, numba, scikit-learn), so ``centile ingest`` or a
    config check does not pay seconds for modules it never calls (PEP 562).
    """
    import importlib

    where = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(importlib.import_module(package), name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(where) | set(vars(importlib.import_module(package))))

    return __getattr__, __dir__


def load_builtin() -> None:
    """Register the built-in capabilities (stages, config sections, report sections).

    The composition root :mod:`centile.run` lists them; it is imported by name, so the
    low modules that hold the registries never depend on the capabilities they serve.
    """
    import importlib

    importlib.import_module("centile.run")


__all__: list[Any] = ["Registry", "RegistryError", "lazy_exports", "load_builtin"]
