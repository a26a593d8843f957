"""The DuckDB backend: every table and query in this process, spilling to disk beyond the memory limit."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from centile.backend.base import register_backend
from centile.backend.session import Session, connect, open_session
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
             spill: Path | None = None) -> Session:
        return open_session(self.cfg, progress, only=only, spill=spill)

    @contextlib.contextmanager
    def local_sql(self, frames: Mapping[str, pl.DataFrame]) -> Iterator[Any]:
        con = connect(self.cfg, preserve_order=True)
        try:
            for name, df in frames.items():
                con.register(name, df)
            yield con
        finally:
            con.close()


register_backend("duckdb", DuckDBBackend)
