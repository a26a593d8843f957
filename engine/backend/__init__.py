"""Access to the input tables: validated DuckDB views over Parquet and CSV files, behind one seam."""

from centile.backend import local as _local  # noqa: F401  (registers the DuckDB backend)
from centile.backend.base import (
    BACKENDS,
    Backend,
    local_sql,
    open_backend,
    open_inputs,
    register_backend,
)
from centile.backend.session import Session, TableSummary, open_session

__all__ = ["BACKENDS", "Backend", "local_sql", "Session", "TableSummary", "open_backend", "open_inputs", "open_session", "register_backend"]
