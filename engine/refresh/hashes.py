"""The line hashes of a refresh state, kept for a search rather than a scan.

A line equal to one applied in an earlier batch is set aside as ``duplicate line`` by its 64-bit
hash (``hash()`` of every column of the line, the customer id among them). Per partition, each
ingest adds one run file of the batch's hashes and their days, **sorted by hash**, as
uncompressed Arrow IPC (columns ``h`` UBIGINT and ``day``, days since 1970-01-01 as INTEGER);
after ``[refresh] max_runs`` the runs are merged into one and the hashes of days before the
state's day buckets are pruned, as the other state tables are. The delta of a batch against the
state is then a binary search of the batch's hashes (tens of thousands) in each memory-mapped
run (``np.searchsorted``), not a read of the millions of hashes kept.

States written before kept the hashes as Parquet runs (``customer_id, h, day``, unsorted): they
are read as they are (``np.isin``) until the next merge rewrites them in this format.
"""

from __future__ import annotations

import datetime as dt
import mmap
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

#: the suffix of the sorted run files
SUFFIX = ".arrow"
_EPOCH = dt.date(1970, 1, 1)


def day_number(day: dt.date) -> int:
    """``day`` as the run files keep it: days since 1970-01-01."""
    return (day - _EPOCH).days


def read_run(path: Path) -> tuple[np.ndarray, np.ndarray, bool]:
    """The hashes and days of one run file, and whether the hashes are sorted (memory-mapped
    when the file is in the sorted format, nothing read until used)."""
    if path.suffix == SUFFIX:
        table = pa.ipc.open_file(_mapped(path)).read_all()
        return (_column(table, "h", np.uint64), _column(table, "day", np.int32), True)
    table = pq.read_table(path, columns=["h", "day"])
    days = table.column("day").cast(pa.int32()) if table.num_rows else pa.chunked_array([], pa.int32())
    return (np.asarray(table.column("h").to_numpy(), dtype=np.uint64),
            np.asarray(days.to_numpy(), dtype=np.int32), False)


def _mapped(path: Path) -> pa.Buffer | pa.MemoryMappedFile:
    """The file memory-mapped with its pages mapped at once where the system can (``MAP_POPULATE``):
    a binary search of a few thousand hashes touches most pages of a run, and mapping them one
    fault at a time made the first search of the runs cost about 15 times a repeated one (0.33 s
    against 0.02 s over 16 runs of 640k hashes)."""
    flag = getattr(mmap, "MAP_POPULATE", None)
    if flag is None or not path.stat().st_size:
        return pa.memory_map(str(path), "r")
    fd = os.open(path, os.O_RDONLY)
    try:
        return pa.py_buffer(mmap.mmap(fd, 0, flags=mmap.MAP_SHARED | flag, prot=mmap.PROT_READ))
    finally:
        os.close(fd)


def _column(table: pa.Table, name: str, dtype: type) -> np.ndarray:
    col = table.column(name)
    if col.num_chunks == 1:
        return col.chunk(0).to_numpy(zero_copy_only=True)
    return np.asarray(col.to_numpy(), dtype=dtype)


def seen(runs: list[Path], mine: np.ndarray) -> np.ndarray:
    """The hashes of ``mine`` that some run of ``runs`` holds."""
    mine = np.asarray(mine, dtype=np.uint64)
    hit = np.zeros(mine.size, dtype=bool)
    for path in runs:
        h, _day, ordered = read_run(path)
        if not h.size:
            continue
        if ordered:
            at = np.searchsorted(h, mine)
            hit |= h[np.minimum(at, h.size - 1)] == mine
        else:
            hit |= np.isin(mine, h)
    return mine[hit]


def write_run(path: Path, h: np.ndarray, day: np.ndarray, runs: list[Path] = (),
              cutoff: dt.date | None = None) -> int:
    """Write the hashes ``h`` with their days ``day`` and those of ``runs`` (merged) to ``path``
    (a temp name, then a rename), sorted by hash, one row per (hash, day), days before ``cutoff``
    pruned. Returns the rows written."""
    hs, ds = [np.asarray(h, dtype=np.uint64)], [np.asarray(day, dtype=np.int32)]
    for run in runs:
        rh, rd, _ = read_run(run)
        hs.append(rh)
        ds.append(rd)
    h, day = (np.concatenate(hs), np.concatenate(ds)) if len(hs) > 1 else (hs[0], ds[0])
    if cutoff is not None:
        keep = day >= day_number(cutoff)
        h, day = h[keep], day[keep]
    order = np.lexsort((day, h))
    h, day = h[order], day[order]
    if h.size:
        first = np.ones(h.size, dtype=bool)
        first[1:] = (h[1:] != h[:-1]) | (day[1:] != day[:-1])
        h, day = h[first], day[first]
    table = pa.table({"h": pa.array(h, type=pa.uint64()), "day": pa.array(day, type=pa.int32())})
    tmp = path.with_name(path.name + ".tmp")
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    os.replace(tmp, path)
    return int(h.size)


__all__ = ["SUFFIX", "day_number", "read_run", "seen", "write_run"]
