"""The seam through which capabilities reach the input tables and heavy aggregation.

A backend opens the validated inputs as a :class:`~centile.backend.session.Session`
(tables under the contract's names, SQL in, Polars frames out) and evaluates SQL
over in-memory frames (:meth:`Backend.local_sql`). Capabilities never open a DuckDB
connection themselves, so a later backend can run the same stages over
customer-hash partitions, locally or on a cluster.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from centile.config import Config
from centile.registry import Registry
from centile.runtime import Progress

if TYPE_CHECKING:
    import polars as pl

    from centile.backend.session import Session


class Backend(Protocol):
    """What a backend offers the capabilities."""

    name: str
    cfg: Config

    def open(self, *, only: tuple[str, ...] | None = None, progress: Progress | None = None,
             spill: Path | None = None) -> AbstractContextManager[Session]:
        """Validate the inputs (``only`` these tables when given) and open them as a session
        (``spill``: where to spill beyond the memory limit)."""
        ...

    def local_sql(self, frames: Mapping[str, pl.DataFrame]) -> AbstractContextManager[Any]:
        """A SQL connection over in-memory frames registered under their names."""
        ...


#: name -> factory(cfg) -> Backend
BACKENDS: Registry[Any] = Registry("backend")


def register_backend(name: str, factory: Any) -> Any:
    """Make a backend selectable by name; a taken name raises."""
    return BACKENDS.add(name, factory)


def open_backend(cfg: Config, name: str = "duckdb") -> Backend:
    """The backend ``name`` for this config (DuckDB in this process by default)."""
    if name not in BACKENDS:
        from centile.errors import ConfigError

        raise ConfigError(f"backend {name!r} is not available; choose one of {', '.join(BACKENDS.names())}")
    return BACKENDS[name](cfg)




def local_sql(frames: Mapping[str, pl.DataFrame], cfg: Config | None = None) -> AbstractContextManager[Any]:
    """SQL over in-memory frames (e.g. a club's eligibility over the feature table), row order kept."""
    from types import MappingProxyType

    return open_backend(cfg if cfg is not None else Config(tables=MappingProxyType({}))).local_sql(frames)
