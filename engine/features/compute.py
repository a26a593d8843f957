"""The customer feature table: one row per customer, computed by DuckDB from ``sql/``."""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl

from centile.backend.partitions import Partitioning, bucket_sql
from centile.backend.session import Session, add_by_key, open_session
from centile.backend.sources import input_fingerprints
from centile.config import Config
from centile.io.outputs import Staging, build_manifest, staged_output, write_manifest
from centile.io.sqlfiles import ident, read_sql
from centile.runtime import Progress

log = logging.getLogger(__name__)

#: Feature -> what it needs, for the "available features" report.
FEATURE_NEEDS = {
    "recency/orders/revenue/returns": "orders",
    "max_price_kept_24m": "orders (per product with product_id, else per line)",
    "premium_margin_12m": "products.market_price and orders.product_id",
    "emails_sent_12m, open_rate_12m, click_rate_12m": "email_events",
    "preferred_channel": "orders.channel",
    "share_<category>, top_category": "orders.category, else products.category",
}


#: The columns of the feature table, in order; then ``share_<category>`` per top category.
FEATURE_COLUMNS = (
    "customer_id", "recency_days", "first_order_ts", "last_order_ts", "tenure_days", "orders_6m", "orders_12m",
    "orders_total", "gross_revenue_12m", "returned_value_12m", "net_revenue_12m", "gross_revenue_lifetime",
    "returned_value_lifetime", "net_revenue_lifetime", "avg_order_value_12m", "return_rate_12m",
    "max_price_kept_24m", "premium_margin_12m", "emails_sent_12m", "open_rate_12m", "click_rate_12m",
    "preferred_channel", "top_category",
)
#: per top category: its share of the customer's 12-month net revenue
CATEGORY_PATTERN = "share_*"

#: The tables the feature job reads (the others are not validated by it).
FEATURE_TABLES = ("orders", "products", "email_events", "customers")


@dataclass(frozen=True)
class FeaturesResult:
    """What ``run_features`` produced."""

    features: pl.DataFrame
    out: Path | None
    as_of: dt.date
    available: dict[str, bool]
    skipped: dict[str, str]
    summary: dict[str, Any] = field(default_factory=dict)


def window_params(s: Session) -> dict[str, Any]:
    """The bound parameters of the feature queries."""
    as_of = dt.datetime.combine(s.as_of, dt.time())
    w = s.cfg.windows
    return {"as_of": s.as_of, "s6": as_of - dt.timedelta(days=w.d6),
            "s12": as_of - dt.timedelta(days=w.d12), "s24": as_of - dt.timedelta(days=w.d24)}


def availability(s: Session) -> tuple[dict[str, bool], dict[str, str]]:
    """Which optional feature groups can be computed, and why the others are skipped."""
    has_category = s.has("orders", "category") or (s.has("products", "category") and s.has("orders", "product_id"))
    avail = {
        "premium_margin_12m": s.has("products", "market_price") and s.has("orders", "product_id"),
        "email": s.has("email_events"),
        "preferred_channel": s.has("orders", "channel"),
        "category": has_category,
    }
    reasons = {
        "premium_margin_12m": "needs a products table with market_price and product_id on the order lines",
        "email": "needs an email_events table (emails_sent_12m, open_rate_12m, click_rate_12m)",
        "preferred_channel": "needs a channel column on the order lines",
        "category": "needs category on the order lines or in products (share_<category>, top_category)",
    }
    skipped = {k: reasons[k] for k, ok in avail.items() if not ok}
    return avail, skipped


def _params_for(sql: str, params: dict[str, Any]) -> dict[str, Any]:
    """Only the parameters a query mentions (DuckDB rejects unused ones)."""
    return {k: v for k, v in params.items() if re.search(rf"\${k}\b", sql)}


def run_sql(s: Session, name: str, params: dict[str, Any], *, table: str | None = None) -> None:
    """Run ``sql/<name>.sql`` into a temp table (``table`` or the file's name)."""
    sql = read_sql(name)
    s.con.execute(f"CREATE OR REPLACE TEMP TABLE {ident(table or name)} AS\n{sql}", _params_for(sql, params))


def top_categories(s: Session, per_customer: str | None = None) -> list[Any]:
    """The ``top_categories`` categories with the most net revenue over every customer (ties by name),
    from the order lines, or from ``per_customer``: the table feat_category.sql wrote for every
    customer (its exact sums added per category are the same figures, without reading the lines).
    On a cluster each partition's exact sums come from its worker and are added there."""
    if per_customer is None:
        totals = s.everywhere("features: categories", category_totals, add_by_key, tables=("orders", "products"))
    else:
        totals = dict(s.con.execute(f"SELECT category, sum(net_revenue) FROM {ident(per_customer)} "
                                    "GROUP BY category").fetchall())
    # the exact DECIMAL sums ordered as SQL's ORDER BY net_revenue DESC, category (text by code point)
    ranked = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))
    return [c for c, _ in ranked[:s.cfg.top_categories]]


def category_totals(s: Session) -> dict[Any, Any]:
    """Net revenue per category (exact DECIMAL) of the customers the session's views hold
    (``sql/feat_category_totals.sql``)."""
    return dict(s.con.execute(read_sql("feat_category_totals")).fetchall())


def _share_names(top: list[Any]) -> list[str]:
    names: list[str] = []
    for cat in top:
        name = "share_" + (re.sub(r"[^0-9a-z]+", "_", str(cat).lower()).strip("_") or "blank")
        while name in names:
            name += "_"
        names.append(name)
    return names


#: up to this many (customer, category) rows the category columns are computed by a NumPy sort
#: (centile.kernels.category_sort, a few ms) rather than the compiled kernel, whose loading costs
#: about 1.2 s a process (importing numba, loading its cached machine code); the results are equal
SORT_PIVOT_ROWS = 250_000


def _with_categories(s: Session, base_sql: str, params: dict[str, Any], top: list[Any]) -> pl.DataFrame:
    """The feature table (``base_sql``) plus each customer's top category and the shares of lifetime
    net revenue of the ``top`` categories (``share_<category>``), from ``f_category``: one row per
    customer and category with its exact net revenue (DECIMAL).

    The base rows come from DuckDB; the category columns from one pass of a kernel over
    f_category's rows, each placed at its customer's row (a DuckDB aggregate per customer of the
    4.26M rows at 1M customers, joined back, took about twice as long). The same values as SQL's:
    the top category by exact revenue (ties: the first name), and a share is
    ``CAST(net AS DOUBLE) / net_revenue_lifetime`` where that is positive (0 without a row), else NULL.
    """
    base = s.frame(base_sql, params)
    return base.hstack(category_columns(s.con, base, top))


def category_columns(con: duckdb.DuckDBPyConnection, base: pl.DataFrame, top: list[Any]) -> list[pl.Series]:
    """``top_category`` and ``share_<category>`` per row of ``base`` (its ``customer_id`` and
    ``net_revenue_lifetime``), from the table or view ``f_category`` on ``con`` (at most one row per
    customer and category; a customer of it that ``base`` lacks is left out)."""
    import pyarrow as pa

    names = _share_names(top)
    cats = [r[0] for r in con.execute(read_sql("feat_category_names")).fetchall()]
    rows = con.sql(read_sql("feat_category_rows")).to_arrow_table()
    # each row's customer as its row in base (a customer of f_category is in the universe)
    at = (pl.from_arrow(rows.select(["customer_id"])).lazy()
          .join(base.lazy().select("customer_id").with_row_index("__pos"), on="customer_id", how="left",
                maintain_order="left").collect().get_column("__pos"))
    keep = None
    if at.null_count():
        keep = at.is_not_null().to_numpy()
        at = at.drop_nulls()
    net = rows.column("net_revenue")
    if not pa.types.is_decimal128(net.type):
        net = net.cast(pa.decimal128(38, net.type.scale))
    net = net.combine_chunks()
    words = np.frombuffer(net.buffers()[1], dtype=np.int64, count=2 * (len(net) + net.offset))[2 * net.offset:]
    lo, hi = words[0::2], words[1::2]  # little-endian 128-bit integers
    # through Polars: pyarrow's to_numpy loads its pandas shim (half a second in a fresh process)
    code = pl.from_arrow(rows.column("code")).to_numpy()
    value = pl.from_arrow(rows.column("net_double")).to_numpy()
    if keep is not None:
        code, hi, lo, value = code[keep], hi[keep], lo[keep], value[keep]
    index = {c: i for i, c in enumerate(cats)}
    if code.size <= SORT_PIVOT_ROWS:  # e.g. a refresh's few customers: no compiled kernel to load
        from centile.kernels.category_sort import category_pivot_sorted as category_pivot
    else:
        from centile.kernels.categories import category_pivot
    best, values = category_pivot(at.to_numpy(), code, hi, lo, value, base.height, len(cats),
                                  [index.get(c, -1) for c in top])
    b = pl.Series("b", best)
    if cats:
        named = pl.Series("top_category", cats, dtype=pl.String).gather(b.clip(lower_bound=0))
        top_category = pl.select(pl.when(b >= 0).then(named)).to_series().alias("top_category")
    else:
        top_category = pl.Series("top_category", [None] * base.height, dtype=pl.String)
    nrl = base.get_column("net_revenue_lifetime")
    shares = pl.DataFrame([pl.Series(n, values[j]) for j, n in enumerate(names)]).select(
        [pl.when(nrl > 0).then(pl.col(n) / nrl).alias(n) for n in names])
    return [top_category, *shares.get_columns()]


#: the per-partition feature queries in order: (sql file, temp table); universe reads f_orders and f_email
_STEPS = (("order_facts", "order_facts"), ("feat_email", "f_email"), ("feat_orders", "f_orders"),
          ("universe", "universe"), ("feat_kept", "f_kept"), ("feat_premium", "f_premium"),
          ("feat_channel", "f_channel"), ("feat_category", "f_category"))

#: the optional feature queries: temp table -> (availability key, the empty table's columns)
_OPTIONAL = {
    "f_email": ("email", "SELECT NULL::BIGINT AS emails_sent_12m, NULL::BIGINT AS opened_12m, "
                         "NULL::BIGINT AS clicked_12m"),
    "f_premium": ("premium_margin_12m", "SELECT NULL::DOUBLE AS premium_margin_12m"),
    "f_channel": ("preferred_channel", "SELECT NULL::VARCHAR AS preferred_channel"),
    "f_category": ("category", "SELECT NULL::VARCHAR AS category, NULL::DOUBLE AS net_revenue"),
}


def _partition_features(s: Session, params: dict[str, Any], avail: dict[str, bool], top: list[Any] | None,
                        progress: Progress | None, joins: Partitioning) -> pl.DataFrame:
    """The feature rows of the customers the session's views hold (one partition, or all).

    The per-customer aggregates go into temp tables (DuckDB spills them); the final join, whose
    hash tables and result DuckDB must hold at once, runs over ``joins`` customer-hash slices of
    those tables, so that under a tight memory limit it needs a slice's memory, not everyone's.
    """
    for name, table in _STEPS:
        if progress:
            progress(f"features: {name}")
        key, empty = _OPTIONAL.get(table, (None, ""))
        if key is None or avail[key]:
            run_sql(s, name, params, table=table)
        else:
            s.con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS "
                          f"SELECT customer_id, e.* FROM order_facts, ({empty}) e WHERE false")
    if avail["category"] and top is None:  # one partition holding every customer
        top = top_categories(s, "f_category")
    sql = read_sql("features")
    p = _params_for(sql, {**params, "has_premium": avail["premium_margin_12m"], "has_email": avail["email"]})
    if progress:
        progress("features: joining")
    tables = [table for _name, table in _STEPS]
    frames = []
    if joins.count > 1:  # the tables move aside; views under their names hold one slice at a time
        for t in tables:
            s.con.execute(f"ALTER TABLE {t} RENAME TO {t}__all")
    try:
        for part in range(joins.count):
            if joins.count > 1:
                lo, hi = joins.bounds(part)
                for t in tables:
                    s.con.execute(f"CREATE OR REPLACE TEMP VIEW {t} AS SELECT * FROM {t}__all "
                                  f"WHERE {bucket_sql()} >= {lo} AND {bucket_sql()} < {hi}")
            frames.append(_with_categories(s, sql, p, top) if top is not None else s.frame(sql, p))
    finally:
        kind = "VIEW" if joins.count > 1 else "TABLE"
        for t in tables:  # a partition's intermediates go before the next
            s.con.execute(f"DROP {kind} IF EXISTS {t}")
            s.con.execute(f"DROP TABLE IF EXISTS {t}__all")
    return frames[0] if len(frames) == 1 else pl.concat(frames, how="vertical")


def _features_of_partition(s: Session, part: int, params: dict[str, Any], avail: dict[str, bool],
                           top: list[Any] | None, progress: Progress | None, joins: Partitioning) -> pl.DataFrame:
    return _partition_features(s, params, avail, top, progress, joins)


def compute_features(s: Session, progress: Progress | None = None, parts: Partitioning | None = None
                     ) -> tuple[pl.DataFrame, dict[str, bool], dict[str, str]]:
    """Compute the feature table over an open session (Polars, ordered by customer_id).

    The customers are processed in customer-hash partitions (``parts``, else the configured
    ``partitions``, else one pass), one at a time; only the categories' totals are computed over
    every customer first. Every feature of a customer depends on that customer's rows alone, with
    money summed as exact decimals, so the table is the same for any partition count and thread
    count. On a distributed backend the partitions run on its workers. One pass is the default
    (in this process) because the feature queries are DuckDB hash aggregates, which
    spill beyond the memory limit by themselves, while each partition rescans the validated rows:
    at 5M customers with an 8 GB limit, six partitions took 672 s against about 200 s in one pass.
    """
    params = window_params(s)
    avail, skipped = availability(s)
    parts = parts or s.work_partitions()
    # one pass over the order lines, but the final join in slices when the memory budget asked for
    # partitions (a single pass's join of every customer ran out of a 0.8 GB DuckDB share at 1M)
    joins = s.partitioning() if parts.count == 1 and not s.distributed() else Partitioning(1)
    # over every customer before the partitions; with one partition, from its own f_category
    top = top_categories(s) if avail["category"] and parts.count > 1 else None
    # per partition, here or on a cluster's workers (each worker reads its customers' rows itself),
    # in customer order; on a cluster the workers keep each partition's rows for the later stages'
    # per-customer tasks (the segments' steps read their feature columns there: ``s.kept``)
    df, kept = s.map_rows(parts, "features", _features_of_partition, params, avail, top,
                          progress if parts.count == 1 and not s.distributed() else None, joins,
                          progress=progress, tables=FEATURE_TABLES)
    if kept is not None:
        s.kept["features"] = kept
    return df, avail, skipped


def session_summary(s: Session) -> dict[str, Any]:
    """The validation summary of a session, JSON-friendly."""
    return {
        "as_of": s.as_of.isoformat(),
        "as_of_source": "config" if s.cfg.as_of else "day after the newest valid order",
        "tables": {n: t.as_dict() for n, t in s.summaries.items()},
        "absent_tables": [t for t in ("products", "email_events", "contacts", "customers", "touchpoints")
                          if t not in s.tables and t not in s.unread and t not in s.elsewhere],
        "not_read_by_this_job": list(s.unread),
        # centile run --state: the tables whose rows came from the refresh state, not from their files
        **({"read_from_refresh_state": list(s.elsewhere)} if s.elsewhere else {}),
        "rows_rejected": s.total_rejects,
        "order_lines_after_as_of": s.lines_after_as_of,
        "partitions": s.work_partitions().count,
        # on a cluster the order lines are counted by the workers as they validate them: the partition
        # count was chosen from this estimate (files' sizes and first rows), not from the count above
        **({"order_lines_estimated": s.lines_estimate} if s.lines_estimate is not None else {}),
        # the tables whose validated rows were written into customer-hash pieces, and how many
        "pieces": {t: p.count for t, p in s.pieces.items()},
        "notes": list(s.notes),
    }


def write_rejects(s: Session, path: Path, rejects: str = "rejects") -> int:
    """Write every rejected row (table, reason, file, key, record) of the relation ``rejects`` (the
    session's view, or SQL with its columns) to Parquet.

    Streamed in batches through Arrow: the session's connection itself may not write files.
    """
    import pyarrow.parquet as pq

    # every column in the order: the same bytes whatever order the threads found the rows in
    reader = s.con.sql(f'SELECT * FROM ({rejects}) r ORDER BY "table", file, reason, key, record'
                       ).to_arrow_reader(1 << 16)
    with pq.ParquetWriter(path, reader.schema, compression="zstd") as writer:
        for batch in reader:
            writer.write_batch(batch)
    return s.total_rejects


def write_features(s: Session, staging: Staging, progress: Progress | None = None) -> FeaturesResult:
    """Compute features and write ``features.parquet`` and ``rejects.parquet`` into ``staging``."""
    with staging.timed("features"):
        df, avail, skipped = compute_features(s, progress)
    with staging.timed("write_features"):
        df.write_parquet(staging.path("features.parquet"), compression="zstd")
        write_rejects(s, staging.path("rejects.parquet"))
    summary = session_summary(s)
    summary["customers"] = df.height
    summary["features_skipped"] = skipped
    return FeaturesResult(df, staging.target, s.as_of, avail, skipped, summary)


def manifest(s: Session, job: str, summary: dict[str, Any], rows: dict[str, int]) -> dict[str, Any]:
    """The manifest of a job over an open session (timings and versions are added on write)."""
    return build_manifest(job, as_of=s.as_of.isoformat(),
                          inputs=input_fingerprints({n: r.spec for n, r in s.tables.items()}, s.con),
                          config=s.cfg.as_dict(), rows=rows, summary=summary)


def run_features(cfg: Config, out: str | Path | None = None, progress: Progress | None = None) -> FeaturesResult:
    """Validate the inputs and compute the feature table; write it to ``out`` if given.

    Returns a :class:`FeaturesResult` whose ``features`` is a Polars DataFrame
    with one row per customer of the universe.
    """
    if out is None:
        with open_session(cfg, progress, only=FEATURE_TABLES) as s:
            df, avail, skipped = compute_features(s, progress)
            summary = session_summary(s)
            summary["features_skipped"] = skipped
            return FeaturesResult(df, None, s.as_of, avail, skipped, summary)
    from centile.backend import open_inputs

    with staged_output(out) as staging, open_inputs(cfg, progress, only=FEATURE_TABLES, spill=staging.spill) as s:
        res = write_features(s, staging, progress)
        write_manifest(staging, manifest(s, "features", res.summary,
                                         {"features": res.features.height, "rejects": s.total_rejects}))
    return res
