"""The CLV summary from a refresh state: its ``purchases`` table stands in for the order lines.

The state keeps every purchase day of every customer with its exact decimal value
(``sql/refresh_purchases.sql``, merged by addition over batches, never pruned), the very
relation ``sql/clv_days.sql`` computes from all batches. The summary query
(``sql/clv_summary.sql``) runs over it one state partition at a time (a partition holds whole
customers), so ``clv.parquet`` is the same bytes as over the batch files.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from centile.backend.session import connect
from centile.clv.compute import summary_sql
from centile.config import Config
from centile.errors import InputError
from centile.io.sqlfiles import literal
from centile.refresh import state as st
from centile.refresh.features import _load
from centile.refresh.ingest import merged_sql


def has_purchases(doc: dict[str, Any]) -> bool:
    """Does the state keep purchase days (a state built before they were kept does not)?"""
    return "purchases" in st.state_tables(doc)


@dataclass
class StateDays:
    """The purchase days of refresh state ``root`` (manifest ``doc``), read with a connection of
    ``cfg``'s threads and memory limit (:class:`centile.clv.compute.PurchaseDays`)."""

    cfg: Config
    root: Path
    doc: dict[str, Any]
    #: the calibration end and per partition the sum and number of its purchase days up to it,
    #: counted by the summary's pass
    _totals: tuple[dt.date, list[tuple[Any, int]]] | None = field(default=None, init=False, repr=False)

    def _parts(self) -> list[str]:
        """Per state partition with purchase days, the query of its days (one row per key)."""
        out = []
        for part in self.doc["parts"]:
            runs = [self.root / r["file"] for r in part["runs"].get("purchases", []) if r["rows"]]
            if len(runs) == 1:  # one run file has one row per key already
                out.append(f"SELECT customer_id, day, value FROM read_parquet({literal(str(runs[0]))})")
            elif runs:
                out.append(merged_sql("purchases", self.doc["types"], runs))
        return out

    def summary(self, params: dict[str, Any]) -> pl.DataFrame:
        with st.state_lock(self.root):  # an ingest removes the run files a merge replaced
            if st.read_manifest(self.root) != self.doc:
                raise InputError(f"refresh state {self.root}: an ingest changed the state during this run; run again")
            con = connect(self.cfg)
            try:
                return self._summary(con, params)
            finally:
                con.close()

    def _summary(self, con: duckdb.DuckDBPyConnection, params: dict[str, Any]) -> pl.DataFrame:
        frames, totals = [], []
        # $hold_end bounds the days, read here; the summary's other parameters
        params, hold_end = {k: v for k, v in params.items() if k != "hold_end"}, params["hold_end"]
        for days in self._parts():
            con.execute(f"CREATE OR REPLACE TEMP TABLE purchase_days AS SELECT * FROM ({days}) d "
                        "WHERE day <= $hold_end", {"hold_end": hold_end})
            frames.append(con.sql(summary_sql("SELECT * FROM purchase_days"), params=params).pl())
            totals.append(con.execute("SELECT sum(value), count(*) FROM purchase_days WHERE day <= $c",
                                      {"c": params["cal_end"]}).fetchall()[0])
        self._totals = (params["cal_end"], totals)
        if not frames:
            return con.sql(summary_sql(st.empty_sql("purchases", self.doc["types"])), params=params).pl()
        return pl.concat(frames, how="vertical") if len(frames) > 1 else frames[0]

    def value_total(self, cal_end: dt.date) -> tuple[Decimal | None, int]:
        if self._totals is not None and self._totals[0] == cal_end:  # the summary's pass counted them
            rows = self._totals[1]
        else:
            with st.state_lock(self.root), contextlib.closing(connect(self.cfg)) as con:
                rows = [con.execute(f"SELECT sum(value), count(*) FROM ({days}) d WHERE day <= $c",
                                    {"c": cal_end}).fetchall()[0] for days in self._parts()]
        sums = [s for s, _n in rows if s is not None]
        with decimal.localcontext() as ctx:
            ctx.prec = 80  # exact: DECIMAL(38,4) sums have at most 38 digits
            total = sum(sums, Decimal(0)) if sums else None
        return total, sum(int(n) for _s, n in rows)


def state_days(cfg: Config, state: str | Path) -> StateDays:
    """The purchase days of the refresh state in ``state``, read with ``cfg``'s threads and memory.

    Raises
    ------
    InputError
        No state, or a state built before it kept purchase days (rebuild it into an empty folder).
    """
    root = Path(state)
    doc = _load(root)
    if not has_purchases(doc):
        raise st.not_kept(root, "purchase days", "the CLV summary needs")
    return StateDays(cfg, root, doc)


__all__ = ["StateDays", "has_purchases", "state_days"]
