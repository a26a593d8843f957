"""Access to the input tables: validated DuckDB views over Parquet and CSV files."""

from centile.backend.session import Session, TableSummary, open_session

__all__ = ["Session", "TableSummary", "open_session"]
