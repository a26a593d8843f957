"""The steering stage's order history from a refresh state: three state tables stand in for the lines.

The state keeps, merged over batches and never pruned (``sql/refresh_steering_*.sql``):

* ``steering_spend``: per customer the exact DECIMAL(38,6) sums of ``sql/steering_spend_sums.sql``
  (net spend, the costed lines' revenue and cost of goods), merged by addition;
* ``steering_categories``: per customer and category of the line the sums of
  ``sql/steering_category_sums.sql``, merged by addition;
* ``steering_times``: the distinct order times of positive lines (``sql/steering_order_times.sql``),
  a keyed set merged by union.

The stage's final queries (``steering_spend.sql``, ``steering_category_spend.sql``,
``steering_responses.sql``, :mod:`centile.steering.history`) run over them, on a connection of
the run's threads and memory limit; the responses join the session's contacts (read from the
config, not batches). The order lines are all before ``as_of`` (it is at or after the
watermark), so the relations are exact for any such ``as_of``: the steering outputs are the same
bytes as over the batch files.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from centile.backend.session import connect
from centile.config import Config
from centile.errors import InputError
from centile.io.sqlfiles import ident, literal
from centile.refresh import state as st
from centile.refresh.features import _load
from centile.refresh.ingest import merged_sql
from centile.steering.history import category_sql, responses_sql, spend_sql

#: the state tables of the steering stage
TABLES = ("steering_spend", "steering_categories", "steering_times")


def has_steering(doc: dict[str, Any]) -> bool:
    """Does the state keep the steering history (a state built before it was kept does not)?"""
    return set(TABLES) <= set(st.state_tables(doc))


def table_sql(root: Path, doc: dict[str, Any], table: str) -> str:
    """One row per key of state table ``table`` over every partition of state ``root`` (manifest
    ``doc``): a partition holds whole customers, so the partitions' merged rows are disjoint."""
    cols = ", ".join(ident(c) for c in st.TABLES[table].types)
    parts = []
    for part in doc["parts"]:
        runs = [root / r["file"] for r in part["runs"].get(table, []) if r["rows"]]
        if len(runs) == 1:  # one run file has one row per key already
            parts.append(f"SELECT {cols} FROM read_parquet({literal(str(runs[0]))})")
        elif runs:
            parts.append(f"SELECT {cols} FROM ({merged_sql(table, doc['types'], runs)}) m")
    return " UNION ALL ".join(parts) if parts else st.empty_sql(table, doc["types"])


@dataclass(frozen=True)
class StateHistory:
    """The steering history of refresh state ``root`` (manifest ``doc``), read with a connection of
    ``cfg``'s threads and memory limit; the contacts come from session ``s``
    (:class:`centile.steering.history.History`)."""

    cfg: Config
    root: Path
    doc: dict[str, Any]
    s: Any

    @contextlib.contextmanager
    def _connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with st.state_lock(self.root):  # an ingest removes the run files a merge replaced
            if st.read_manifest(self.root) != self.doc:
                raise InputError(f"refresh state {self.root}: an ingest changed the state during this run; run again")
            con = connect(self.cfg)
            try:
                yield con
            finally:
                con.close()

    def spend(self) -> pl.DataFrame:
        with self._connection() as con:
            return con.sql(spend_sql(table_sql(self.root, self.doc, "steering_spend"))).pl()

    def category_spend(self) -> pl.DataFrame:
        with self._connection() as con:
            return con.sql(category_sql(table_sql(self.root, self.doc, "steering_categories"))).pl()

    def responses(self, as_of: dt.date, window: int) -> pl.DataFrame:
        # the contacts the responses query counts (sent before as_of), from the session
        contacts = self.s.frame('SELECT customer_id, medium, "group", sent_ts FROM contacts '
                                "WHERE CAST(sent_ts AS DATE) < $as_of", {"as_of": as_of})
        want = st.column_type("steering_times", "customer_id", self.doc["types"])
        have = {pl.Int64: "BIGINT", pl.String: "VARCHAR"}.get(contacts.schema["customer_id"], "?")
        if have != want:
            raise InputError(f"contacts: customer ids are {have} where the refresh state {self.root}'s are {want}; "
                             "a run over the batch files would type every table alike: map contacts.customer_id "
                             "to the orders' type, or rebuild the state")
        with self._connection() as con:
            con.register("contacts", contacts)
            try:
                return con.sql(responses_sql(table_sql(self.root, self.doc, "steering_times")),
                               params={"as_of": as_of, "window": window}).pl()
            finally:
                con.unregister("contacts")


def state_history(cfg: Config, state: str | Path, s: Any) -> StateHistory:
    """The steering history of the refresh state in ``state`` (contacts from session ``s``).

    Raises
    ------
    InputError
        No state, or a state built before it kept the steering history (rebuild it into an empty
        folder).
    """
    root = Path(state)
    doc = _load(root)
    if not has_steering(doc):
        raise st.not_kept(root, "the steering history (spend sums and order times)", "steering needs")
    return StateHistory(cfg, root, doc, s)


__all__ = ["TABLES", "StateHistory", "has_steering", "state_history", "table_sql"]
