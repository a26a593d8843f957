"""The DuckDB backend: every table and query in this process, spilling to disk beyond the memory limit."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from centile.backend.base import register_backend
from centile.backend.partitions import Partitioning
from centile.backend.session import (
    Session,
    frames_sql,
    map_here,
    open_session,
    reduce_here,
    rows_here,
    scratch_folder,
)
from centile.config import Config
from centile.runtime import Progress

if TYPE_CHECKING:
    import polars as pl


@dataclass(frozen=True)
class DuckDBBackend:
    """DuckDB in this process (threads and memory limit from the config)."""

    cfg: Config
    name: str = "duckdb"

    def open(self, *, only: tuple[str, ...] | None = None, progress: Progress | None = None,
             spill: Path | None = None, elsewhere: tuple[str, ...] = ()) -> Session:
        # the scratch folder also takes the customer-hash pieces of the validated rows
        spill, owned = scratch_folder(self.cfg, spill)
        s = open_session(self.cfg, progress, only=only, spill=spill, bucket=spill, elsewhere=elsewhere)
        s.owned_scratch = owned
        return s

    def local_sql(self, frames: Mapping[str, pl.DataFrame]) -> contextlib.AbstractContextManager[Any]:
        return frames_sql(self.cfg, frames)

    def map_partitions(self, s: Session, parts: Partitioning, label: str, fn: Callable[..., Any],
                       *args: Any, progress: Progress | None = None,
                       tables: tuple[str, ...] | None = None) -> list[Any]:
        """One partition at a time over the open session's connection (every table at hand)."""
        return map_here(s, parts, label, fn, *args, progress=progress)

    def map_rows(self, s: Session, parts: Partitioning, label: str, fn: Callable[..., Any], *args: Any,
                 progress: Progress | None = None, tables: tuple[str, ...] | None = None
                 ) -> tuple[pl.DataFrame, None]:
        """The partitions' rows in ``customer_id`` order; nothing is kept elsewhere."""
        return rows_here(s, parts, label, fn, *args, progress=progress, tables=tables)

    def map_reduce(self, s: Session, parts: Partitioning, label: str, fn: Callable[..., Any],
                   merge: Callable[[Any, Any], Any], *args: Any, progress: Progress | None = None,
                   tables: tuple[str, ...] | None = None, finish: Callable[[Any], Any] | None = None) -> Any:
        """Each partition's result merged into the state before the next partition."""
        return reduce_here(s, parts, label, fn, merge, *args, progress=progress, finish=finish)

    def distributed(self) -> bool:
        return False

    def describe(self) -> dict[str, Any]:
        return {"kind": self.name}

    def moved(self) -> dict[str, dict[str, Any]]:
        return {}  # nothing leaves this process

    def __enter__(self) -> DuckDBBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


register_backend("duckdb", DuckDBBackend)
