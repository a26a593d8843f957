"""Journeys for attribution: touchpoint paths in CSR form, from the inputs or from a path table.

From ``touchpoints`` + ``orders`` (``sql/attribution_journeys.sql`` over
``sql/attribution_conversions.sql``, or a refresh state's order totals): every order
is a conversion worth its net revenue; its journey is the customer's touches
after the previous order and inside the ``lookback_days`` before it (a touch
credits only the next conversion). Touches after a customer's last order and
inside the lookback before ``as_of`` form a null journey. Orders without a
touch in their window have no path and are counted, not attributed.

From a path table (ChannelAttribution's format): one row per distinct path with
``path`` (channels joined by ``separator``), ``total_conversions``, optional
``total_conversion_value`` and ``total_null``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import polars as pl

from centile.errors import ConfigError, InputError

#: separators analysts use; named in the error when the configured one matches no path
_COMMON_SEPARATORS = (" > ", ">", " -> ", "->", ",", "|", ";", " / ")


@dataclass(frozen=True)
class Journeys:
    """Journeys as integer arrays: journey ``j`` is ``channel[offsets[j]:offsets[j+1]]`` (ids into
    ``channels``, oldest touch first); ``age_days`` per touch (NaN for path tables)."""

    channels: tuple[str, ...]
    offsets: np.ndarray
    channel: np.ndarray
    age_days: np.ndarray
    conv: np.ndarray
    null: np.ndarray
    value: np.ndarray
    customer_id: pl.Series | None = None  # per journey; None for a path table
    unattributed_conversions: float = 0.0  # conversions without any touch in their window
    unattributed_value: float = 0.0

    @property
    def n(self) -> int:
        return int(self.offsets.size - 1)

    @property
    def has_time(self) -> bool:
        return self.customer_id is not None

    def take(self, rows: np.ndarray) -> Journeys:
        """The journeys at positions ``rows`` (sorted), e.g. one segment."""
        rows = np.asarray(rows, dtype=np.int64)
        lens = np.diff(self.offsets)[rows]
        offsets = np.zeros(rows.size + 1, np.int64)
        np.cumsum(lens, out=offsets[1:])
        channel = np.empty(int(offsets[-1]), self.channel.dtype)
        age = np.empty(int(offsets[-1]), self.age_days.dtype)
        # the touch positions a block of journeys at a time: three int64 arrays per touch of the
        # whole set were the largest thing this step held
        for a in range(0, rows.size, TAKE_BLOCK):
            b = min(rows.size, a + TAKE_BLOCK)
            ln = lens[a:b]
            idx = np.repeat(self.offsets[rows[a:b]] - offsets[a:b], ln) + np.arange(offsets[a], offsets[b])
            channel[offsets[a]:offsets[b]] = self.channel[idx]
            age[offsets[a]:offsets[b]] = self.age_days[idx]
        return Journeys(self.channels, offsets, channel, age, self.conv[rows], self.null[rows], self.value[rows],
                        None if self.customer_id is None else self.customer_id.gather(rows))


#: journeys per block when :meth:`Journeys.take` gathers their touches
TAKE_BLOCK = 1 << 18


def _path_options(df: pl.DataFrame, collapse_repeats: bool, max_path_length: int) -> pl.DataFrame:
    """Touch rows sorted by journey (``_jid``) then time, after collapsing repeats and keeping the last
    ``max_path_length`` touches (0: all)."""
    if collapse_repeats:
        keep = (pl.col("_jid") != pl.col("_jid").shift(1)) | (pl.col("channel") != pl.col("channel").shift(1))
        df = df.filter(keep.fill_null(True))
    if max_path_length:
        df = df.filter(pl.int_range(pl.len()).reverse().over("_jid") < max_path_length)
    return df


def _assemble(df: pl.DataFrame, channels: tuple[str, ...], per_journey: pl.DataFrame,
              customer: bool, unattributed: tuple[float, float]) -> Journeys:
    ids = {c: i for i, c in enumerate(channels)}
    ch = df["channel"].replace_strict(ids, return_dtype=pl.Int32).to_numpy()
    lens = df.group_by("_jid", maintain_order=True).len()["len"].to_numpy()
    offsets = np.zeros(lens.size + 1, np.int64)
    np.cumsum(lens, out=offsets[1:])
    age = df["age_days"].to_numpy().astype(np.float64) if "age_days" in df.columns else np.full(ch.size, np.nan)
    return Journeys(channels, offsets, np.ascontiguousarray(ch, dtype=np.int32), np.ascontiguousarray(age),
                    per_journey["conv"].to_numpy().astype(np.float64),
                    per_journey["null"].to_numpy().astype(np.float64),
                    per_journey["value"].to_numpy().astype(np.float64),
                    per_journey["customer_id"] if customer else None, *unattributed)


def journeys_from_touches(rows: pl.DataFrame, *, collapse_repeats: bool = False, max_path_length: int = 0,
                          unattributed: tuple[float, float] = (0.0, 0.0)) -> Journeys:
    """Journeys from touch rows ``customer_id, journey, converted, age_days, channel, value`` sorted by
    journey and time (the output of ``sql/attribution_journeys.sql``)."""
    df = _path_options(rows.with_columns(_jid=pl.struct("customer_id", "journey").rle_id()),
                       collapse_repeats, max_path_length)
    channels = tuple(sorted(df["channel"].unique().to_list()))
    per = (df.group_by("_jid", maintain_order=True)
           .agg(pl.col("customer_id").first(), pl.col("converted").first(), pl.col("value").first())
           .with_columns(conv=pl.col("converted").cast(pl.Float64), null=(~pl.col("converted")).cast(pl.Float64),
                         value=pl.when("converted").then("value").otherwise(0.0)))
    return _assemble(df, channels, per, True, unattributed)


def _concat(parts: list[Journeys]) -> Journeys:
    """Journeys of disjoint customer partitions as one, channels renumbered into their sorted union and
    journeys in customer order (a customer's journeys keep their order): the same arrays as one pass.
    Empties ``parts`` once they are copied (the caller holds no other reference to them)."""
    channels = tuple(sorted({c for p in parts for c in p.channels}))
    ids = {c: i for i, c in enumerate(channels)}
    chan, lens = [], []
    for p in parts:
        remap = np.array([ids[c] for c in p.channels], dtype=np.int32)
        chan.append(remap[p.channel] if p.channel.size else p.channel.astype(np.int32))
        lens.append(np.diff(p.offsets))
    lens_all = np.concatenate(lens) if lens else np.zeros(0, np.int64)
    offsets = np.zeros(lens_all.size + 1, np.int64)
    np.cumsum(lens_all, out=offsets[1:])
    customer = pl.concat([p.customer_id for p in parts]) if parts else pl.Series("customer_id", [])
    channel = np.ascontiguousarray(np.concatenate(chan), dtype=np.int32)
    del chan, lens
    age = np.ascontiguousarray(np.concatenate([p.age_days for p in parts]))
    conv, null = np.concatenate([p.conv for p in parts]), np.concatenate([p.null for p in parts])
    value = np.concatenate([p.value for p in parts])
    parts.clear()
    whole = Journeys(channels, offsets, channel, age, conv, null, value, customer)
    del channel, age, conv, null, value
    # customer order, a customer's journeys in their order (the position breaks ties: a stable sort)
    order = (pl.DataFrame({"c": customer, "i": np.arange(customer.len(), dtype=np.int64)})
             .sort("c", "i")["i"].to_numpy())
    return whole.take(order) if np.any(order[1:] != order[:-1] + 1) else whole


def _journeys_of_partition(session, part: int, sql: str, as_of: dt.datetime, lookback_days: int,
                           collapse_repeats: bool, max_path_length: int, state_orders=None
                           ) -> tuple[Journeys | None, int, object]:
    """One partition's journeys (None without touches), its orders' count and exact value.
    ``state_orders``: the partitioning and a refresh state's order totals, read for the
    conversions instead of the ``orders`` view."""
    from decimal import Decimal

    from centile.io.sqlfiles import read_sql

    with contextlib.ExitStack() as stack:
        if state_orders is None:
            conv = read_sql("attribution_conversions")
        else:  # the state's rows per order: the same first line time and exact net revenue
            parts, orders = state_orders
            conv = orders.conversions_sql(stack.enter_context(orders.registered(session, parts, part)))
        session.con.execute(f"CREATE OR REPLACE TEMP VIEW conversions AS {conv}")
        rows = session.frame(sql, {"as_of": as_of, "lookback_days": lookback_days})
        n, v = session.con.execute("SELECT count(*), coalesce(sum(exact), 0) FROM conversions").fetchall()[0]
        session.con.execute("DROP VIEW conversions")
    j = journeys_from_touches(rows, collapse_repeats=collapse_repeats, max_path_length=max_path_length) \
        if rows.height else None
    return j, int(n), Decimal(v)


def journeys_from_session(session, *, lookback_days: int, collapse_repeats: bool = False,
                          max_path_length: int = 0, progress=None, orders=None) -> Journeys:
    """Journeys of the validated ``touchpoints`` and ``orders`` of an open session.

    Built one customer-hash partition at a time (only that partition's touch rows are held as a
    frame), kept as compact arrays and put together in customer order: the same journeys for any
    partition count. Money is summed as exact decimals across partitions. ``orders``: a refresh
    state's order totals (:class:`centile.refresh.order_totals.StateOrders`) read for the
    conversions instead of the ``orders`` view (``centile run --state``): the same journeys."""
    from decimal import Decimal

    from centile.io.sqlfiles import read_sql

    as_of = dt.datetime.combine(session.as_of, dt.time())
    sql = read_sql("attribution_journeys")
    # one partition at a time here, or on a cluster's workers (more partitions there: one per worker
    # thread at least; the journeys do not depend on the count)
    parts = session.work_partitions() if session.distributed() else session.partitioning()
    if orders is None:
        results = session.map_partitions(parts, "attribution", _journeys_of_partition, sql, as_of,
                                         int(lookback_days), collapse_repeats, max_path_length,
                                         progress=progress, tables=("orders", "touchpoints"))
    else:  # the conversions from the state: the lines are not read
        with orders.reading():
            results = session.map_partitions(parts, "attribution", _journeys_of_partition, sql, as_of,
                                             int(lookback_days), collapse_repeats, max_path_length,
                                             (parts, orders), progress=progress, tables=("touchpoints",))
    parts_out = [j for j, _n, _v in results if j is not None]
    n_orders = sum(n for _j, n, _v in results)
    v_orders = sum((v for _j, _n, v in results), Decimal(0))
    del results  # _concat frees each partition's arrays once copied
    if not parts_out:
        raise InputError(f"touchpoints: no touchpoint lies before as_of {session.as_of} inside the "
                         f"{lookback_days}-day lookback of a conversion or of as_of; nothing to attribute")
    j = _concat(parts_out)
    return replace(j, unattributed_conversions=float(n_orders) - float(j.conv.sum()),
                   unattributed_value=float(v_orders) - float(j.value.sum()))


def read_path_table(path: str | Path, separator: str = " > ", *, collapse_repeats: bool = False,
                    max_path_length: int = 0) -> Journeys:
    """Journeys from an aggregated path table (CSV or Parquet; see module docstring)."""
    p = Path(path)
    where = f"[attribution] paths = {str(path)!r}"
    if not isinstance(separator, str) or separator == "":
        raise ConfigError(f"[attribution] separator = {separator!r}: must be a non-empty string such as ' > '")
    if not p.exists():
        raise InputError(f"{where}: no such file")
    try:
        df = pl.read_parquet(p) if p.suffix.lower() == ".parquet" else pl.read_csv(p, infer_schema_length=None)
    except Exception as exc:  # polars raises several error types for unreadable files
        raise InputError(f"{where}: cannot read it: {exc}") from None
    need = ("path", "total_conversions")
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise InputError(f"{where}: missing column {missing[0]!r}; a path table has path, total_conversions, "
                         f"optional total_conversion_value and total_null (has {', '.join(df.columns)})")
    if df.height == 0:
        raise InputError(f"{where}: the path table has no rows")
    cols = {"total_conversions": "conv", "total_conversion_value": "value", "total_null": "null"}
    out = []
    for src, dst in cols.items():
        if src not in df.columns:
            out.append(pl.lit(0.0).alias(dst))
            continue
        s = df[src]
        if not s.dtype.is_numeric():
            try:
                s = s.cast(pl.Float64, strict=True)
            except Exception:  # noqa: BLE001 - polars' cast errors vary
                raise InputError(f"{where}: column {src} is not numeric") from None
        s = s.cast(pl.Float64)
        bad = df.filter(s.is_null() | s.is_nan() | (s < 0) | s.is_infinite())
        if bad.height:
            raise InputError(f"{where}: column {src} has {bad.height} missing, negative or infinite values "
                             f"(first: path {bad['path'][0]!r}, {src} = {bad[src][0]!r})")
        out.append(s.alias(dst))
    paths = df["path"].cast(pl.String)
    empty = df.filter(paths.is_null() | (paths.str.strip_chars() == ""))
    if empty.height:
        raise InputError(f"{where}: {empty.height} empty paths; every row needs at least one channel")
    if df.height and not paths.str.contains(separator, literal=True).any():
        multi = [s.strip() for s in _COMMON_SEPARATORS if paths.str.contains(s.strip(), literal=True).any()]
        if multi:
            raise ConfigError(f"[attribution] separator = {separator!r}: no path contains it, but the paths "
                              f"contain {multi[0]!r} (first path: {paths[0]!r}); set separator = {multi[0]!r}")
    table = pl.DataFrame({"path": paths}).with_columns(out).with_row_index("_jid")
    rows = (table.with_columns(channel=pl.col("path").str.split(separator)).explode("channel")
            .with_columns(pl.col("channel").str.strip_chars()))
    blank = rows.filter(pl.col("channel") == "")
    if blank.height:
        raise InputError(f"{where}: path {blank['path'][0]!r} has an empty channel between separators "
                         f"{separator!r}")
    rows = _path_options(rows, collapse_repeats, max_path_length)
    channels = tuple(sorted(rows["channel"].unique().to_list()))
    per = table.select("_jid", "conv", "null", "value").with_columns(customer_id=pl.lit(None))
    keep = table.filter((pl.col("conv") + pl.col("null")) > 0)
    if keep.height == 0:
        raise InputError(f"{where}: every path has zero conversions and zero nulls")
    return _assemble(rows, channels, per, False, (0.0, 0.0))


