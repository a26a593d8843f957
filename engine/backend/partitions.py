"""Customer-hash partitions: per-customer work one slice of the customers at a time.

A customer belongs to bucket ``hash(hash(customer_id), SEED) % BUCKETS`` in every table
(the identifiers have one SQL type across tables, so a customer's order lines,
e-mail events and contacts fall into the same bucket), and partition ``p`` of
``count`` is a contiguous range of buckets. A stage computes its
per-customer rows on one partition, keeps only small mergeable state across
partitions (exact sums, counts, sorted rows) and merges at the end, so its output
does not depend on the partition count.

The count comes from ``--partitions`` / ``partitions`` in the config, or from the
size of the order lines against the memory budget (:func:`choose_partitions`).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from centile.config import memory_bytes
from centile.io.sqlfiles import ident
from centile.runtime import Progress

#: the seed of the partition hash (any fixed value: results do not depend on it)
SEED = 20261129

#: customers fall into BUCKETS hash buckets (:func:`bucket_sql`);
#: partition ``p`` of ``P`` is the contiguous bucket range ``[p * BUCKETS // P, (p + 1) * BUCKETS // P)``
#: (bucket ranges, not ``hash % P``: a layout stored by bucket serves every partition count)
BUCKETS = 1 << 16

#: Python-side memory of a partitioned stage per order line of the partition, measured at 1M
#: customers (20.7M lines): the recommend stage's frames of lines and histories took about 2 GB
#: above DuckDB's tables at one partition (DuckDB's own share is bounded by its memory limit)
BYTES_PER_ORDER_LINE = 100

#: a hook the tests use to see what one partition holds: ``observe(label, part, session)``, called by
#: :meth:`centile.backend.session.Session.partition` once the session's views hold partition ``part``,
#: and by a worker's task before it runs (``session`` None for a task that reads no input table)
observe: Callable[[str, int, object], None] | None = None

#: the share of ``--memory-limit`` that DuckDB's buffer manager gets (:func:`duckdb_memory`): measured at
#: 1M customers with a 1.6 GB limit, the Python-side frames of the later stages took up to 2.8 GB
#: above DuckDB's share when DuckDB had all of it
DUCKDB_SHARE = 0.5

def physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def duckdb_memory(memory_limit: str | None) -> int | None:
    """The bytes DuckDB's buffer manager may hold under the run's ``memory_limit`` (None: DuckDB's
    own default). ``--memory-limit`` bounds the whole process: DuckDB gets :data:`DUCKDB_SHARE` of it
    and spills beyond that; the rest is for the frames and arrays of the Python-side work."""
    budget = memory_bytes(memory_limit)
    return None if budget is None else int(budget * DUCKDB_SHARE)


def choose_partitions(configured: int | None, memory_limit: str | None, order_lines: int) -> int:
    """The partition count: the configured one, else enough partitions that one partition's
    Python-side frames need at most half of what DuckDB leaves of the memory budget
    (``memory_limit``, else 80 % of RAM, as DuckDB's default); the other half is for the frames
    of every customer that global steps hold (the feature table, ranks, segments)."""
    if configured:
        return int(configured)
    budget = memory_bytes(memory_limit)
    if budget is None:
        ram = physical_memory()
        budget = int(ram * 0.8) if ram else 8 * 1000**3
    need = order_lines * BYTES_PER_ORDER_LINE
    return max(1, min(256, math.ceil(need / max(budget * (1 - DUCKDB_SHARE) / 2, 1))))


@dataclass(frozen=True)
class Partitioning:
    """``count`` customer-hash partitions."""

    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"partitions must be at least 1, got {self.count}")

    def bounds(self, part: int) -> tuple[int, int]:
        """The bucket range ``[lo, hi)`` of partition ``part``."""
        if not 0 <= part < self.count:
            raise ValueError(f"partition {part} is not in 0..{self.count - 1}")
        return part * BUCKETS // self.count, (part + 1) * BUCKETS // self.count

    def parts_of(self, buckets: Any) -> Any:
        """The partition of each bucket of ``buckets`` (a NumPy array of ints in ``[0, BUCKETS)``)."""
        import numpy as np

        starts = np.array([self.bounds(p)[0] for p in range(self.count)])
        return np.searchsorted(starts, np.asarray(buckets), side="right") - 1

    def predicate(self, part: int) -> str:
        """SQL over the ``customer_id`` column of the validated tables that is true for the rows of
        partition ``part`` (``true`` for a single partition): the id's bucket, hashed as the rows
        are read (storing it with every row cost more than hashing again)."""
        lo, hi = self.bounds(part)
        return "true" if self.count == 1 else f"({bucket_sql('customer_id')} BETWEEN {lo} AND {hi - 1})"

    def each(self, label: str, progress: Progress | None = None) -> Iterator[int]:
        """The partition numbers in order, saying after each how many are done and an ETA."""
        t0 = time.perf_counter()
        for part in range(self.count):
            yield part
            done = part + 1
            if progress and self.count > 1:
                spent = time.perf_counter() - t0
                eta = spent / done * (self.count - done)
                progress(f"{label}: partition {done}/{self.count} done in {spent:.0f} s"
                         + (f", about {eta:.0f} s left" if done < self.count else ""))


@dataclass(frozen=True, eq=False)
class Kept:
    """Per-customer rows that the workers computed partition by partition and left in the run's
    scratch folder (:meth:`~centile.backend.session.Session.map_rows`): ``files[p]`` holds partition
    ``p``'s ``heights[p]`` rows sorted by ``customer_id`` (Arrow IPC), and the client stacked them
    into one frame in ``customer_id`` order (e.g. the feature table), whose row ``i`` is row
    ``order[i]`` of the files read one after the other in partition order.

    A later per-customer task of the same partitioning reads the columns it needs of those rows
    from its partition's file instead of getting them from the client (``PerCustomer(frame,
    kept)``): partition ``p``'s rows of a frame with the stacked frame's rows, in its order, are
    the rows of ``files[p]`` in their order.
    """

    parts: Partitioning
    files: tuple[str, ...]
    heights: tuple[int, ...]
    #: the columns of the files (those a frame may take from them, see :meth:`without`)
    columns: tuple[str, ...]
    #: the stacked frame's row ``i`` is row ``order[i]`` of the files in partition order (NumPy)
    order: Any
    #: the stacked frame's ``customer_id`` (:meth:`serves` checks a frame against it)
    ids: Any

    @property
    def offsets(self) -> list[int]:
        """Where each partition's rows start in the files read one after the other (and the end)."""
        out = [0]
        for h in self.heights:
            out.append(out[-1] + h)
        return out

    def where(self) -> Any:
        """The inverse of ``order``: row ``j`` of the files in partition order is row ``where()[j]``
        of the stacked frame."""
        import numpy as np

        inv = np.empty_like(self.order)
        inv[self.order] = np.arange(self.order.size, dtype=self.order.dtype)
        return inv

    def without(self, names: Any) -> Kept:
        """These rows with the columns ``names`` left out (a frame that replaced them, e.g. a
        segmentation named like a feature, must send its own)."""
        drop = set(names)
        return replace(self, columns=tuple(c for c in self.columns if c not in drop))

    def serves(self, frame: Any, parts: Partitioning) -> bool:
        """May tasks over ``parts`` read ``frame``'s rows from these files: the same partitioning,
        and ``frame`` has the stacked frame's customers in its order?"""
        return (parts == self.parts and "customer_id" in frame.columns and frame.height == self.ids.len()
                and frame.get_column("customer_id").equals(self.ids))


@dataclass(frozen=True)
class PerCustomer:
    """A frame argument of :meth:`~centile.backend.session.Session.map_partitions` /
    ``map_reduce`` of which partition ``p``'s call reads only the rows of ``p``'s customers (it
    joins them by ``customer_id``, e.g. the segments of every customer). On a cluster each task
    gets only those rows (:func:`split_by_partition`: the frame crosses the network once, not once
    per worker); in this process the call gets the whole frame. The function must give the same
    result either way.

    ``kept``: the frame has the rows of rows the workers kept (:class:`Kept`, e.g. the feature
    table's), in their order, and its columns named in ``kept.columns`` hold the kept values; on a
    cluster each task then reads those columns from its partition's kept file and gets only the
    other columns from the client (the same frame as without ``kept``). Ignored when it does not
    :meth:`~Kept.serves` the frame (e.g. a stage reused from an earlier run kept no rows).
    """

    frame: Any
    kept: Kept | None = None


def plain(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """``args`` with every :class:`PerCustomer` unwrapped to its whole frame."""
    return tuple(a.frame if isinstance(a, PerCustomer) else a for a in args)


def split_by_partition(frame: Any, parts: Partitioning, id_type: str) -> list[Any]:
    """The rows of a frame with ``customer_id`` per partition (``[frame of partition 0, ...]``), in
    the frame's row order: each id cast to ``id_type`` (the SQL type of ``customer_id`` in the
    validated tables) and hashed as :func:`bucket_sql` does there. An id that is not of that type
    matches no customer; it goes to partition 0."""
    import polars as pl

    from centile.runtime import duckdb_connect

    if parts.count == 1:
        return [frame]
    con = duckdb_connect()
    try:
        con.register("__centile_frame", frame.select("customer_id"))
        buckets = con.sql(f"SELECT CASE WHEN id IS NULL THEN 0 ELSE {bucket_sql('id')} END AS b "
                          f"FROM (SELECT TRY_CAST(customer_id AS {id_type}) AS id FROM __centile_frame)").pl()["b"]
    finally:
        con.close()
    if buckets.len() != frame.height:  # the connection keeps row order for a plain projection
        raise RuntimeError("bucket hashing lost rows")
    index = pl.Series("__part", parts.parts_of(buckets.to_numpy()))
    return [frame.filter(index == p) for p in range(parts.count)]


def bucket_sql(column: str = "customer_id") -> str:
    """SQL for the hash bucket of the id ``column`` (an INTEGER in ``[0, BUCKETS)``).

    The id's hash is hashed again before the seed is mixed in. DuckDB combines the hashes of
    several values by XOR, both in ``hash(a, b)`` and in the hash tables of a ``GROUP BY a, b``.
    With the bucket taken from ``hash(id, SEED)``, a partition's ids had fixed bits in
    ``hash(id) XOR hash(SEED)``, so also in ``hash(id) XOR hash(w)`` for any constant ``w``. A
    ``GROUP BY customer_id, w`` with ``w`` constant in the partition (the e-mail features' word of
    campaign bits, below 64 campaigns) then hashed every group into a quarter of the table's
    slots at 4 partitions, and probed about 100 times longer: at 1M customers the e-mail features
    took 15.8 s on one partition of 4, against 0.46 s with these buckets
    (``benchmarks/bench_partition_hash.py``). ``hash(hash(id), SEED)`` leaves no such relation.
    """
    return f"CAST(hash(hash({ident(column)}), {SEED}) % {BUCKETS} AS INTEGER)"


#: the column that carries a row's position through :func:`per_customer`
ROW = "__row"


def sorted_rows(view: Any, part: int, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(view, part, *args)``, a frame of per-customer rows, sorted by ``customer_id`` (a task of
    :meth:`~centile.backend.session.Session.map_rows`)."""
    return fn(view, part, *args).sort("customer_id")


def stack_rows(frames: list[Any]) -> tuple[Any, Any]:
    """Partition frames of per-customer rows stacked and sorted by ``customer_id`` (one sort, as a
    single pass's rows are), and ``order``: row ``i`` of the result is row ``order[i]`` of the
    frames stacked in partition order (see :class:`Kept`)."""
    import polars as pl

    stacked = pl.concat(frames, how="vertical").with_row_index(ROW)
    out = stacked.sort("customer_id")
    return out.drop(ROW), out.get_column(ROW).to_numpy()


def per_customer(session: Any, frame: Any, label: str, fn: Callable[..., Any], *args: Any,
                 kept: Kept | None = None) -> Any:
    """``fn(view, part, rows, *args)`` over the rows of Polars ``frame`` (which has ``customer_id``;
    ``rows`` carry their position as ``__row``): on a cluster (``session.distributed()``) a task per
    partition with its customers' rows (``PerCustomer``; with ``kept``, the rows the workers kept
    of which ``frame`` has the rows and some columns, see :class:`PerCustomer`), here (or without a
    session) one call over every row. The frames ``fn`` returns (each with the ``__row`` of its
    rows) stacked in ``frame``'s row order, without ``__row``: the same bytes either way when ``fn``
    computes row by row."""
    import polars as pl

    rows = frame.with_row_index(ROW)
    if session is None or not session.distributed():
        out = fn(None, 0, rows, *args)
    else:
        parts = session.map_partitions(session.work_partitions(), label, fn, PerCustomer(rows, kept), *args,
                                       tables=())
        out = pl.concat(parts, how="vertical").sort(ROW)
    if out.height != frame.height or not out[ROW].equals(rows[ROW]):
        raise RuntimeError(f"{label}: the partitions returned {out.height:,} of {frame.height:,} customers")
    return out.drop(ROW)


def reduce_customers(session: Any, frame: Any, label: str, fn: Callable[..., Any],
                     merge: Callable[[Any, Any], Any], *args: Any, kept: Kept | None = None) -> Any:
    """``fn(view, part, rows, *args)`` per partition of ``frame``'s customers, folded with ``merge``
    (here, or without a session: one call over every row; ``kept`` as in :func:`per_customer`)."""
    if session is None or not session.distributed():
        return fn(None, 0, frame, *args)
    return session.map_reduce(session.work_partitions(), label, fn, merge, PerCustomer(frame, kept), *args,
                              tables=())
