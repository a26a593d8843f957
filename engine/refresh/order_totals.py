"""Uplift and attribution from a refresh state: its ``order_totals`` table stands in for the order lines.

Both stages read the order lines only through one row per (customer, order): the uplift's
outcome windows (:func:`centile.uplift.inputs.session_units`: the order's first line time,
whether it has a line of positive quantity, its net revenue and margin) and attribution's
conversions (``sql/attribution_conversions.sql``: the first line time and the net revenue). The
state keeps exactly that per order (``sql/refresh_order_totals.sql``: min, bool_or and exact
decimal sums over batches, never pruned), so the stages run their own queries over it, one
customer-hash partition at a time as over the lines, and write the same bytes.

Every line in the state is before the run's ``as_of`` (``run --state`` refuses an ``as_of``
before the watermark), as every line of the ``orders`` view is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from centile.backend.partitions import Partitioning, bucket_sql
from centile.errors import InputError
from centile.io.sqlfiles import literal
from centile.refresh import state as st
from centile.refresh.ingest import merged_sql

TABLE = "order_totals"

#: the columns of one row per order, as the stages' queries read them
COLUMNS = ("customer_id", "order_id", "ts", "is_order", "revenue", "margin")

#: the name the rows of one partition are registered under on a session's connection
REGISTERED = "__centile_order_totals"


def has_order_totals(doc: dict[str, Any]) -> bool:
    """Does the state keep order totals (a state built before they were kept does not)?"""
    return TABLE in st.state_tables(doc)


@dataclass(frozen=True)
class StateOrders:
    """The order totals of refresh state ``root`` (manifest ``doc``): per state partition its run
    files. Small and picklable: on a cluster it goes to the workers with each task, which read
    the files of their partition (a shared file system, as for the batch files)."""

    root: str
    #: per state partition, the run files of ``order_totals`` with rows
    files: tuple[tuple[str, ...], ...]
    #: the state's id types (``id``, ``product``, ``order``, ``order_key``: the order ids' own type)
    types: tuple[tuple[str, str], ...]
    #: the manifest the files were read from (checked unchanged while a stage reads them)
    generation: int

    @classmethod
    def of(cls, root: Path, doc: dict[str, Any]) -> StateOrders:
        files = tuple(tuple(str(root / r["file"]) for r in part["runs"].get(TABLE, []) if r["rows"])
                      for part in doc["parts"])
        return cls(str(root), files, tuple(sorted(doc["types"].items())), int(doc["generation"]))

    def sql(self, parts: Partitioning, part: int) -> str:
        """One row per order of the customers of partition ``part`` of ``parts`` (the session's
        partitions, which need not be the state's): the state partitions overlapping its bucket
        range, their run files merged, other customers' rows filtered out by bucket."""
        lo, hi = parts.bounds(part)
        mine = Partitioning(len(self.files))
        keep = [q for q in range(mine.count) if mine.bounds(q)[0] < hi and mine.bounds(q)[1] > lo]
        runs = [f for q in keep for f in self.files[q]]
        types = dict(self.types)
        cols = ", ".join(COLUMNS)
        if not runs:
            rel = st.empty_sql(TABLE, types)
        elif all(len(self.files[q]) <= 1 for q in keep):  # one run per partition: one row per key already
            rel = f"SELECT {cols} FROM read_parquet([{', '.join(literal(f) for f in runs)}])"
        else:
            rel = merged_sql(TABLE, types, [Path(f) for f in runs])
        exact = mine.bounds(keep[0])[0] == lo and mine.bounds(keep[-1])[1] == hi
        where = "" if exact else f" WHERE {bucket_sql('customer_id')} BETWEEN {lo} AND {hi - 1}"
        return f"SELECT {cols} FROM ({rel}) AS order_totals{where}"

    @staticmethod
    def conversions_sql(rows: str) -> str:
        """Attribution's conversions (the rows of ``sql/attribution_conversions.sql``) from the order
        totals ``rows``: the net revenue is the same exact decimal, since a line of quantity <= 0 has
        no returned quantity (validation), so ``quantity - returned_quantity`` is the uplift's net
        quantity."""
        return (f"SELECT customer_id, order_id, ts, CAST(revenue AS DOUBLE) AS value, revenue AS exact "
                f"FROM ({rows}) AS o")

    @contextlib.contextmanager
    def registered(self, s: Any, parts: Partitioning, part: int) -> Iterator[str]:
        """Within the block, partition ``part``'s rows (:meth:`sql`) are the relation named by the
        yielded string on session ``s``'s connection. Read with a connection of the session's
        threads and memory limit, and handed over in memory: the session's connection may read
        its input folders only."""
        from centile.backend.session import connect

        con = connect(s.cfg)
        try:
            rows = con.sql(self.sql(parts, part)).to_arrow_table()
        finally:
            con.close()
        s.con.register(REGISTERED, rows)
        try:
            yield f"SELECT {', '.join(COLUMNS)} FROM {REGISTERED}"
        finally:
            s.con.unregister(REGISTERED)

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """Hold the state's lock while the stage reads the files (an ingest removes the run files a
        merge replaced), the manifest checked to be the one they were listed from."""
        root = Path(self.root)
        with st.state_lock(root):
            doc = st.read_manifest(root)
            if doc is None or int(doc["generation"]) != self.generation:
                raise InputError(f"refresh state {root}: an ingest changed the state during this run; run again")
            yield


__all__ = ["COLUMNS", "StateOrders", "has_order_totals"]
