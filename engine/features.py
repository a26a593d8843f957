"""The customer feature table: one row per customer, computed by DuckDB from ``sql/``."""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from .config import Config
from .outputs import Staging, fingerprint, staged_output, write_manifest
from .session import Progress, Session, open_session
from .sqlfiles import ident, literal, read_sql

log = logging.getLogger(__name__)

#: Feature -> what it needs, for the "available features" report.
FEATURE_NEEDS = {
    "recency/orders/revenue/returns": "orders",
    "max_price_kept_24m": "orders (per product with product_id, else per line)",
    "premium_margin_12m": "products.market_price and orders.product_id",
    "emails_sent_12m, open_rate_12m, click_rate_12m": "email_events",
    "preferred_channel": "orders.channel",
    "share_<category>, top_category": "orders.category or products.category",
}


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


def _category_columns(s: Session, base: pl.DataFrame) -> pl.DataFrame:
    """Shares of net revenue for the top categories, and each customer's top category."""
    k = s.cfg.top_categories
    top = [r[0] for r in s.con.execute(
        "SELECT category FROM f_category GROUP BY category ORDER BY sum(net_revenue) DESC, category "
        "LIMIT $k", {"k": k}).fetchall()]
    long = s.frame("SELECT customer_id, category, net_revenue FROM f_category")
    top_cat = (long.filter(pl.col("net_revenue") > 0)
                   .sort(["customer_id", "net_revenue", "category"], descending=[False, True, False])
                   .group_by("customer_id", maintain_order=True).first()
                   .select("customer_id", pl.col("category").alias("top_category")))
    out = base.join(top_cat, on="customer_id", how="left")
    used: set[str] = set()
    for cat in top:
        slug = re.sub(r"[^0-9a-z]+", "_", str(cat).lower()).strip("_") or "blank"
        name = f"share_{slug}"
        while name in used or name in out.columns:
            name += "_"
        used.add(name)
        part = long.filter(pl.col("category") == cat).select("customer_id", pl.col("net_revenue").alias("_cat"))
        out = (out.join(part, on="customer_id", how="left")
                  .with_columns(pl.when(pl.col("net_revenue_lifetime") > 0)
                                  .then(pl.col("_cat").fill_null(0.0) / pl.col("net_revenue_lifetime"))
                                  .otherwise(None).cast(pl.Float64).alias(name))
                  .drop("_cat"))
    return out


def compute_features(s: Session, progress: Progress | None = None) -> tuple[pl.DataFrame, dict[str, bool], dict[str, str]]:
    """Compute the feature table over an open session (Polars, ordered by the dense customer index)."""
    params = window_params(s)
    avail, skipped = availability(s)
    steps = [("order_facts", None), ("universe", None), ("feat_orders", "f_orders"), ("feat_kept", "f_kept")]
    for name, table in steps:
        if progress:
            progress(f"features: {name}")
        run_sql(s, name, params, table=table)
    empties = {
        "f_premium": ("feat_premium", avail["premium_margin_12m"],
                      "SELECT NULL::DOUBLE AS premium_margin_12m"),
        "f_email": ("feat_email", avail["email"],
                    "SELECT NULL::BIGINT AS emails_sent_12m, NULL::BIGINT AS opened_12m, NULL::BIGINT AS clicked_12m"),
        "f_channel": ("feat_channel", avail["preferred_channel"], "SELECT NULL::VARCHAR AS preferred_channel"),
        "f_category": ("feat_category", avail["category"],
                       "SELECT NULL::VARCHAR AS category, NULL::DOUBLE AS net_revenue"),
    }
    for table, (name, ok, empty) in empties.items():
        if progress:
            progress(f"features: {name}")
        if ok:
            run_sql(s, name, params, table=table)
        else:
            s.con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS "
                          f"SELECT customer_id, e.* FROM universe, ({empty}) e WHERE false")
    sql = read_sql("features")
    p = _params_for(sql, {**params, "has_premium": avail["premium_margin_12m"], "has_email": avail["email"]})
    if progress:
        progress("features: joining")
    df = s.frame(sql, p)
    if avail["category"]:
        df = _category_columns(s, df)
    return df, avail, skipped


def session_summary(s: Session) -> dict[str, Any]:
    """The validation summary of a session, JSON-friendly."""
    return {
        "as_of": s.as_of.isoformat(),
        "as_of_source": "config" if s.cfg.as_of else "day after the newest valid order",
        "tables": {n: t.as_dict() for n, t in s.summaries.items()},
        "absent_tables": [t for t in ("products", "email_events", "contacts", "customers", "touchpoints")
                          if t not in s.tables],
        "rows_rejected": s.total_rejects,
        "order_lines_after_as_of": s.lines_after_as_of,
        "notes": list(s.notes),
    }


def write_rejects(s: Session, path: Path) -> int:
    """Write every rejected row (table, reason, file, key, record) to Parquet."""
    s.con.execute(f"COPY (SELECT * FROM rejects ORDER BY \"table\", file, reason) TO {literal(str(path))} "
                  "(FORMAT parquet, COMPRESSION zstd)")
    return s.total_rejects


def input_fingerprints(s: Session) -> dict[str, list[dict[str, Any]]]:
    """Sizes and fingerprints of every input file (for the manifest)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for name, reg in s.tables.items():
        files = [r[0] for r in s.con.execute(
            f"SELECT DISTINCT __centile_file FROM {ident(name + '_staged')} ORDER BY 1").fetchall()]
        out[name] = [fingerprint(Path(f)) for f in files]
    return out


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
    """The manifest of a run: inputs, as_of, config, versions, row counts (timings are added on write)."""
    return {
        "job": job,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "as_of": s.as_of.isoformat(),
        "inputs": input_fingerprints(s),
        "config": s.cfg.as_dict(),
        "rows": rows,
        "summary": summary,
    }


def run_features(cfg: Config, out: str | Path | None = None, progress: Progress | None = None) -> FeaturesResult:
    """Validate the inputs and compute the feature table; write it to ``out`` if given.

    Returns a :class:`FeaturesResult` whose ``features`` is a Polars DataFrame
    with one row per customer of the universe.
    """
    with open_session(cfg, progress) as s:
        if out is None:
            df, avail, skipped = compute_features(s, progress)
            summary = session_summary(s)
            summary["features_skipped"] = skipped
            return FeaturesResult(df, None, s.as_of, avail, skipped, summary)
        with staged_output(out) as staging:
            res = write_features(s, staging, progress)
            write_manifest(staging, manifest(s, "features", res.summary,
                                             {"features": res.features.height, "rejects": s.total_rejects}))
        return res
