"""Feature queries as plain `.sql` files, run by DuckDB (see engine.sqlfiles)."""
