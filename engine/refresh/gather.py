"""The rows of a few customers from the refresh state, gathered by position, not scanned.

Beside each run file of a state table the features read (``state.Table.features``), an ingest
writes the same rows **sorted by the table's keys** (the customer id first) as uncompressed Arrow
IPC (``<table>-<gen>.sorted.arrow``, the run entry's ``gather``). The feature cache's refresh reads
the rows of the customers it recomputes (about 3 % of them, spread over every partition) from
these: the file is memory-mapped, each customer's row range is found by a binary search of its
sorted customer column, and the ranges are taken in one vectorised ``take``; only the pages of
those rows (and of the search) are read. The Parquet run, in day order, stays what every scan
reads (the window-crossing scans skip its row groups of other days by their statistics).

A run without a ``gather`` file (a state written before them) is read with Polars' prefiltered
Parquet scan as before.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa

from centile.io.sqlfiles import ident
from centile.refresh.hashes import column_view, numpy_array

SUFFIX = ".sorted.arrow"


def write_sorted(con: duckdb.DuckDBPyConnection, relation: str, keys: tuple[str, ...], path: Path) -> None:
    """Write the rows of ``relation`` sorted by ``keys`` (the customer id first) to ``path`` as one
    uncompressed Arrow IPC record batch (a temp name, then a rename)."""
    order = ", ".join(ident(k) for k in keys)
    table = con.sql(f"SELECT * FROM {relation} ORDER BY {order}").to_arrow_table().combine_chunks()
    tmp = path.with_name(path.name + ".tmp")
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    os.replace(tmp, path)


def _open(path: Path) -> pa.Table:
    return pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()


def rows_of(paths: list[Path], ids: pl.Series) -> pa.Table | None:
    """The rows of the customers ``ids`` in the sorted files ``paths`` (None: no file); the search
    costs a binary search per id and file, so give each partition's files its own customers."""
    found, want = [], None
    for path in paths:
        table = _open(path)
        if not table.num_rows:
            found.append(table)
            continue
        lo, hi, want = _ranges(table.column("customer_id"), ids, want)
        lens = hi - lo
        has = lens > 0
        lo, lens = lo[has], lens[has]
        # every row index of every range: the range's start plus the position within it
        starts = np.repeat(lo - (np.cumsum(lens) - lens), lens)
        idx = starts + np.arange(int(lens.sum()), dtype=np.int64)
        found.append(table.take(numpy_array(idx, pa.int64())))
    return pa.concat_tables(found) if found else None


def _ranges(column: pa.ChunkedArray, ids: pl.Series, want: pl.Series | np.ndarray | None
            ) -> tuple[np.ndarray, np.ndarray, pl.Series | np.ndarray]:
    """Where each of the customers ``ids`` starts and ends in the sorted ``column``, and ``ids``
    unique, sorted and typed like it (to reuse for the next file of the same type). Integer ids are
    searched with NumPy over the memory-mapped buffer (a Polars search costs about 4 ms a call in
    overhead, and a refresh makes a few hundred); other ids with Polars."""
    if pa.types.is_integer(column.type) and column.null_count == 0:
        cust = column_view(column, column.type.to_pandas_dtype())  # a view of the mapped file
        if not isinstance(want, np.ndarray) or want.dtype != cust.dtype:
            want = np.unique(ids.drop_nulls().to_numpy().astype(cust.dtype))
        return np.searchsorted(cust, want, side="left"), np.searchsorted(cust, want, side="right"), want
    cust = pl.from_arrow(column)
    if not isinstance(want, pl.Series) or want.dtype != cust.dtype:
        want = ids.cast(cust.dtype).unique().sort()
    return (cust.search_sorted(want, side="left").to_numpy().astype(np.int64),
            cust.search_sorted(want, side="right").to_numpy().astype(np.int64), want)


__all__ = ["SUFFIX", "rows_of", "write_sorted"]
