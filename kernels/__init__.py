"""numba-compiled hot loops: pure functions over NumPy arrays.

Nothing here imports polars, duckdb, files or config; nothing compiles at
import time.
"""
