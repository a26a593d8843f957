"""Baskets and recommendations from a refresh state: its ``basket_lines`` table stands in for the order lines.

The basket and recommendation passes (:mod:`centile.baskets`) read the valid positive order lines
(``sql/baskets_lines.sql``: customer, order, order_ts, item, kept = not returned in full) one
customer partition at a time, and use of them, per (customer, order, item):

* that a line exists, and that a kept line does (an item counts once per basket; with
  ``exclude_returned`` a basket holds its kept items only; a history weighs an item only when
  the basket holds it kept);
* the first order_ts of its lines (a history's recency weight);
* with an evaluation cutoff: whether a line, and a kept line, lies before the cutoff (the
  training baskets, their first order_ts) and whether one lies from it on (the items to find),
  and the first and last order_ts of all lines (the error naming the orders' span).

The state keeps per (customer, order, product, category, kept) the first and last order_ts of
the lines (``sql/refresh_basket_lines.sql``: merged by min / max over batches, never pruned), and
this module turns it back into lines: per state row, one line at the first order_ts and, when
it differs, one at the last (a key's rows in several run files, or a product's rows of several
categories, only repeat what the passes take the first, last or any of). Those stand-in lines
answer every question above as the real lines do, so ``basket_*.parquet`` and
``recommendation*.parquet`` are the same bytes as over the batch files (the passes are already
independent of the order of lines and of the partitioning). The passes cost the same either way;
what reading the state saves is the validation and decoding of the batch files, once no other
stage of the run opens them. The rows read are about as many as the lines (a line rarely shares
its key with another), and the table grows with the history, as the batch files do.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from centile.backend.partitions import Partitioning, bucket_sql, choose_partitions
from centile.backend.session import connect
from centile.config import Config
from centile.errors import InputError
from centile.io.sqlfiles import literal
from centile.refresh import state as st
from centile.refresh.features import _load
from centile.runtime import Progress

TABLE = "basket_lines"
#: the item column of each level
COLUMNS = {"product": "product_id", "category": "category"}


def has_basket_lines(doc: dict[str, Any]) -> bool:
    """Does the state keep basket lines (a state built before they were kept does not)?"""
    return TABLE in st.state_tables(doc)


@dataclass
class StateBaskets:
    """The basket lines of refresh state ``root`` (manifest ``doc``) for a run at ``as_of``, read
    with a connection of ``cfg``'s threads and memory limit."""

    cfg: Config
    root: Path
    doc: dict[str, Any]
    as_of: dt.date

    def has(self, table: str, column: str) -> bool:
        """Did the state's batches (``orders``) or its products table map ``column``
        (:meth:`centile.backend.session.Session.has` over the batch files)?"""
        return column in self.doc.get("columns", {}).get(table, ())

    def partitioning(self) -> Partitioning:
        """The passes' customer partitions: ``cfg.partitions``, else at least as many as the memory
        limit asks for the state's basket lines (as a session chooses them for its order lines),
        aligned with the state's partitions: a divisor of their count (a pass reads whole state
        partitions) or a multiple (a pass reads one, with a bucket filter)."""
        if self.cfg.partitions:
            return Partitioning(int(self.cfg.partitions))
        n = int(self.doc["partitions"])
        rows = sum(r["rows"] for part in self.doc["parts"] for r in part["runs"].get(TABLE, []))
        want = choose_partitions(None, self.cfg.memory_limit, rows)
        if want <= n:
            return Partitioning(min(d for d in range(1, n + 1) if n % d == 0 and d >= want))
        return Partitioning(n * -(-want // n))

    def _runs(self, lo: int, hi: int) -> tuple[list[Path], bool]:
        """The run files of the state partitions that overlap buckets ``[lo, hi)``, and whether
        those partitions hold more buckets than that (their rows then need the bucket filter)."""
        parts = Partitioning(int(self.doc["partitions"]))
        files, wider = [], False
        for p, part in enumerate(self.doc["parts"]):
            plo, phi = parts.bounds(p)
            if plo < hi and lo < phi:
                files += [self.root / r["file"] for r in part["runs"].get(TABLE, []) if r["rows"]]
                wider |= plo < lo or phi > hi
        return files, wider

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """The state locked and checked unchanged (an ingest removes the run files a merge replaced)."""
        with st.state_lock(self.root):
            if st.read_manifest(self.root) != self.doc:
                raise InputError(f"refresh state {self.root}: an ingest changed the state during this run; run again")
            yield

    def _rows(self, files: list[Path], col: str, kept_only: bool, where: str = "true") -> str:
        """The state rows of ``files`` with an item at column ``col`` (kept ones only if
        ``kept_only``) and a line before as_of, filtered by ``where``."""
        src = (f"read_parquet([{', '.join(literal(str(f)) for f in files)}])" if files
               else f"({st.empty_sql(TABLE, self.doc['types'])})")
        return (f"SELECT * FROM {src} AS r WHERE {col} IS NOT NULL AND first_ts < $as_of AND {where}"
                + (" AND kept" if kept_only else ""))

    def items(self, level: str, exclude_returned: bool) -> pl.Series:
        """The sorted distinct items (:func:`centile.baskets.lines.basket_items`)."""
        col = COLUMNS[level]
        files = [self.root / r["file"] for part in self.doc["parts"] for r in part["runs"].get(TABLE, []) if r["rows"]]
        with self._reading(), contextlib.closing(connect(self.cfg)) as con:
            df = con.sql(f"SELECT DISTINCT {col} AS item FROM ({self._rows(files, col, exclude_returned)}) AS l",
                         params={"as_of": self._start()}).pl()
        return df.get_column("item").sort()

    def _start(self) -> dt.datetime:
        return dt.datetime.combine(self.as_of, dt.time())

    def lines(self, con: Any, parts: Partitioning, part: int, level: str, exclude_returned: bool) -> pl.DataFrame:
        """Stand-in lines of partition ``part``: customer_id, order_id, order_ts, item, kept (see
        the module doc), with ``exclude_returned`` the kept ones only."""
        col = COLUMNS[level]
        lo, hi = parts.bounds(part)
        files, wider = self._runs(lo, hi)
        where = f"{bucket_sql('customer_id')} BETWEEN {lo} AND {hi - 1}" if wider else "true"
        # every state row as is (rows of one key in several run files, or of several categories
        # at product level, repeat what the passes take the first, last or any of)
        sql = f"""
            SELECT customer_id, order_id,
                   unnest(CASE WHEN last_ts > first_ts AND last_ts < $as_of THEN [first_ts, last_ts]
                               ELSE [first_ts] END) AS order_ts,
                   {col} AS item, kept
            FROM ({self._rows(files, col, exclude_returned, where)}) AS r"""
        return con.sql(sql, params={"as_of": self._start()}).pl()

    def source(self, level: str, exclude_returned: bool, all_kept: bool = False,
               progress: Progress | None = None) -> StateLines:
        """The lines one partition at a time, as :class:`centile.baskets.parts.SessionLines` gives
        them (``all_kept``: every line counts as kept, as ``recommend_lines`` without
        ``exclude_returned``)."""
        return StateLines(self, self.partitioning(), level, exclude_returned, all_kept, progress)


class StateLines:
    """A source of basket lines (:mod:`centile.baskets.parts`) from the state; always here (the
    state is a local folder)."""

    remote = False

    def __init__(self, state: StateBaskets, parts: Partitioning, level: str, exclude_returned: bool,
                 all_kept: bool, progress: Progress | None) -> None:
        self.state, self.parts, self.level = state, parts, level
        self.exclude_returned, self.all_kept, self.progress = exclude_returned, all_kept, progress
        self.count = parts.count

    def each(self, label: str) -> Iterator[pl.DataFrame]:
        con = connect(self.state.cfg)
        try:
            for part in self.parts.each(label, self.progress):
                with self.state._reading():
                    lines = self.state.lines(con, self.parts, part, self.level, self.exclude_returned)
                if self.all_kept:
                    lines = lines.with_columns(kept=pl.lit(True))
                yield lines
                del lines
        finally:
            con.close()


def state_baskets(cfg: Config, state: str | Path, as_of: dt.date | None = None) -> StateBaskets:
    """The basket lines of the refresh state in ``state`` at ``as_of`` (default: its watermark).

    Raises
    ------
    InputError
        No state, an ``as_of`` before its watermark, or a state built before it kept basket
        lines (rebuild it into an empty folder).
    """
    root = Path(state)
    doc = _load(root)
    if not has_basket_lines(doc):
        raise st.not_kept(root, "basket lines", "baskets and recommendations need")
    return StateBaskets(cfg, root, doc, st.as_of_for(doc, as_of, "run without --state over the batch files"))


__all__ = ["StateBaskets", "StateLines", "has_basket_lines", "state_baskets"]
