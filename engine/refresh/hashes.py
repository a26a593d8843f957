"""The line hashes of a refresh state, kept for a search rather than a scan.

A line equal to one applied in an earlier batch is set aside as ``duplicate line`` by its 64-bit
hash (``hash()`` of every column of the line, the customer id and the order time among them, so
equal lines have equal days). Per partition, each ingest adds one run file of the batch's hashes
and their days, **sorted by day, then hash**, as uncompressed Arrow IPC (columns ``h`` UBIGINT and
``day``, days since 1970-01-01 as INTEGER; schema metadata ``centile.order = day,h``), with the
days before the state's day buckets pruned; after ``[refresh] max_runs`` the runs are merged into
one, as the other state tables are. The delta of a batch against the state is then, per run and
per day of the batch, a binary search for the day's slice and one for the batch's hashes in it:
a one-day batch touches a few pages of each memory-mapped run, not its millions of hashes (on
this project's machines touching a page of a file costs far more than searching it).

States written before kept the hashes as Parquet runs (``customer_id, h, day``, unsorted): they
are read as they are (``np.isin``) until the next merge rewrites them in this format.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from centile.errors import InputError

#: the suffix of the sorted run files, and their order (schema metadata)
SUFFIX = ".arrow"
ORDER = b"day,h"
_EPOCH = dt.date(1970, 1, 1)


def day_number(day: dt.date) -> int:
    """``day`` as the run files keep it: days since 1970-01-01."""
    return (day - _EPOCH).days


def read_run(path: Path) -> tuple[np.ndarray, np.ndarray, bool]:
    """The hashes and days of one run file, and whether they are sorted by (day, hash) (memory-mapped
    when the file is in the sorted format: nothing is read until used)."""
    if path.suffix == SUFFIX:
        table = pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()
        if (table.schema.metadata or {}).get(b"centile.order") != ORDER:
            raise InputError(f"refresh state: line-hash run {path} is not in the (day, hash) order this "
                             "centile reads; rebuild the state into an empty folder")
        return (column_view(table.column("h"), np.uint64), column_view(table.column("day"), np.int32), True)
    table = pq.read_table(path, columns=["h", "day"])
    days = table.column("day").cast(pa.int32()) if table.num_rows else pa.chunked_array([], pa.int32())
    return (np.asarray(table.column("h").to_numpy(), dtype=np.uint64),
            np.asarray(days.to_numpy(), dtype=np.int32), False)


def numpy_array(values: np.ndarray, kind: pa.DataType) -> pa.Array:
    """A contiguous NumPy array without nulls as an Arrow array over the same memory (``pa.array``
    would first load pyarrow's pandas shim: half a second in a fresh process)."""
    values = np.ascontiguousarray(values, dtype=kind.to_pandas_dtype())
    return pa.Array.from_buffers(kind, values.size, [None, pa.py_buffer(values)])


def column_view(col: pa.ChunkedArray, dtype: type) -> np.ndarray:
    """A column without nulls as a NumPy view of its buffer (``Array.to_numpy`` would first load
    pyarrow's pandas shim: half a second in a fresh process)."""
    if col.num_chunks != 1:
        col = pa.chunked_array([col.combine_chunks()]) if col.num_chunks else pa.chunked_array([[]], col.type)
    arr = col.chunk(0)
    if not len(arr):
        return np.empty(0, dtype=dtype)
    return np.frombuffer(arr.buffers()[1], dtype=dtype, count=len(arr), offset=arr.offset * np.dtype(dtype).itemsize)


def seen(runs: list[Path], mine: np.ndarray, mine_day: np.ndarray) -> np.ndarray:
    """The hashes of ``mine`` (lines of the days ``mine_day``) that some run of ``runs`` holds with
    the same day."""
    mine = np.asarray(mine, dtype=np.uint64)
    mine_day = np.asarray(mine_day, dtype=np.int32)
    hit = np.zeros(mine.size, dtype=bool)
    days = np.unique(mine_day)
    of_day = {int(d): np.flatnonzero(mine_day == d) for d in days}
    for path in runs:
        h, day, ordered = read_run(path)
        if not h.size:
            continue
        if not ordered:
            hit |= np.isin(mine, h)
            continue
        lo, hi = np.searchsorted(day, days), np.searchsorted(day, days + 1)
        for d, a, b in zip(days.tolist(), lo.tolist(), hi.tolist(), strict=True):
            if a == b:
                continue
            at = of_day[d]
            part = h[a:b]
            pos = np.searchsorted(part, mine[at])
            hit[at] |= part[np.minimum(pos, part.size - 1)] == mine[at]
    return mine[hit]


def write_run(path: Path, h: np.ndarray, day: np.ndarray, runs: list[Path] = (),
              cutoff: dt.date | None = None) -> int:
    """Write the hashes ``h`` with their days ``day`` and those of ``runs`` (merged) to ``path``
    (a temp name, then a rename), sorted by day and hash, one row per (day, hash), days before
    ``cutoff`` pruned. Returns the rows written."""
    hs, ds = [np.asarray(h, dtype=np.uint64)], [np.asarray(day, dtype=np.int32)]
    for run in runs:
        rh, rd, _ = read_run(run)
        hs.append(rh)
        ds.append(rd)
    h, day = (np.concatenate(hs), np.concatenate(ds)) if len(hs) > 1 else (hs[0], ds[0])
    if cutoff is not None:
        keep = day >= day_number(cutoff)
        h, day = h[keep], day[keep]
    order = np.lexsort((h, day))
    h, day = h[order], day[order]
    if h.size:
        first = np.ones(h.size, dtype=bool)
        first[1:] = (h[1:] != h[:-1]) | (day[1:] != day[:-1])
        h, day = h[first], day[first]
    table = pa.table({"h": numpy_array(h, pa.uint64()), "day": numpy_array(day, pa.int32())}
                     ).replace_schema_metadata({b"centile.order": ORDER})
    tmp = path.with_name(path.name + ".tmp")
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    os.replace(tmp, path)
    return int(h.size)


__all__ = ["SUFFIX", "column_view", "day_number", "numpy_array", "read_run", "seen", "write_run"]
