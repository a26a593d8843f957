"""Features from a refresh state: the feature table at any ``as_of`` at or after the watermark,
equal to :func:`centile.features.compute.compute_features` over every applied batch.

The state tables stand in for the order lines: ``sql/refresh_f_*.sql`` compute the same
intermediate tables (``f_orders``, ``f_kept``, ``f_email``, ``f_channel``, ``f_category``) with the
same types as ``sql/feat_*.sql``, and the same final query (``sql/features.sql`` plus the category
shares) turns them into the feature table, so casts and divisions are the very same operations.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import tempfile
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import duckdb
import numpy as np
import polars as pl
import pyarrow.parquet as pq

from centile.backend.partitions import Partitioning, bucket_sql
from centile.backend.session import Session, connect, open_session
from centile.backend.sources import register_tables, stage_tables
from centile.config import Config, TableSpec
from centile.errors import InputError, ValidationError
from centile.features.compute import (
    FeaturesResult,
    _params_for,
    _with_categories,
    compute_features,
    session_summary,
    window_params,
)
from centile.io.outputs import build_manifest, staged_output, write_manifest
from centile.io.sqlfiles import ident, literal, read_sql
from centile.refresh import gather
from centile.refresh import state as st
from centile.refresh.ingest import (
    _cast,
    _check_state,
    _ledger_files,
    _mapping,
    check_products,
    merge_sql,
    merged_sql,
)
from centile.runtime import Progress

log = logging.getLogger(__name__)

_REASONS = {
    "premium_margin_12m": "needs a products table with market_price and product_id on the order lines",
    "email": "needs e-mail events: no email_events batch has been ingested",
    "preferred_channel": "needs a channel column on the order lines",
    "category": "needs category on the order lines or in products",
}


def _load(state: str | Path) -> dict[str, Any]:
    doc = st.read_manifest(Path(state))
    if doc is None or not doc.get("watermark"):
        raise InputError(f"no refresh state with data in {state}: run `centile ingest --state {state} BATCH...` "
                         "first")
    return doc


#: state tables whose features need one row per key: their runs are merged when read (the others
#: are sums, maxima and ORs over days, which the feature queries aggregate anyway)
_KEYED = ("totals", "orders", "email_keyed", "categories")


def _register(con: duckdb.DuckDBPyConnection, root: Path, doc: dict[str, Any]) -> None:
    """Every state table as ``raw_<table>`` (all run files of all partitions) and ``st_<table>`` (one
    row per key where the features need it), as views."""
    for table in st.TABLES:
        if not st.TABLES[table].features:
            continue
        runs_all = [root / r["file"] for part in doc["parts"] for r in part["runs"].get(table, []) if r["rows"]]
        con.execute(f"CREATE OR REPLACE TEMP VIEW {ident('raw_' + table)} AS " + (
            f"SELECT * FROM read_parquet([{', '.join(literal(str(f)) for f in runs_all)}])" if runs_all
            else st.empty_sql(table, doc["types"])))
        selects, plain = [], []
        for part in doc["parts"]:
            runs = [root / r["file"] for r in part["runs"].get(table, []) if r["rows"]]
            if table in _KEYED and len(runs) > 1:
                selects.append(merged_sql(table, doc["types"], runs))
            else:
                plain.extend(runs)
        if plain:
            selects.append(f"SELECT * FROM read_parquet([{', '.join(literal(str(f)) for f in plain)}])")
        sql = " UNION ALL ".join(f"({q})" for q in selects) if selects else st.empty_sql(table, doc["types"])
        con.execute(f"DROP TABLE IF EXISTS {ident('st_' + table)}")
        con.execute(f"CREATE OR REPLACE TEMP VIEW {ident('st_' + table)} AS {sql}")
    con.execute("CREATE OR REPLACE TEMP VIEW st_customers AS SELECT customer_id FROM cust_all")


def _gather(con: duckdb.DuckDBPyConnection, root: Path, doc: dict[str, Any], ids: pl.Series) -> None:
    with tempfile.TemporaryDirectory(prefix="centile-gather-") as tmp:
        _gather_in(con, root, doc, ids, tmp)


def _gather_in(con: duckdb.DuckDBPyConnection, root: Path, doc: dict[str, Any], ids: pl.Series, tmp: str) -> None:
    """``st_<table>``: the state rows of the customers ``ids`` (one row per key where the features
    need it), as tables. Runs with a file sorted by customer (``gather``) are read by position
    (:func:`centile.refresh.gather.rows_of`: a binary search per customer and one ``take`` over
    the memory-mapped file); runs without one (states written before) with Polars' prefiltered
    Parquet scan, which decodes the other columns of the matching rows only."""
    wanted = ids.implode()
    # each partition's files are searched for its own customers only
    parts = Partitioning(int(doc["partitions"]))
    bucket = pl.from_arrow(con.sql(f"SELECT customer_id, {bucket_sql()} AS b FROM aff").to_arrow_table())
    of_part = pl.Series(parts.parts_of(bucket["b"].to_numpy()))
    ids_of = {p: g["customer_id"] for (p,), g in bucket.with_columns(p=of_part).group_by("p")}
    for table in st.TABLES:
        if not st.TABLES[table].features:
            continue
        entries = [r for part in doc["parts"] for r in part["runs"].get(table, []) if r["rows"]]
        found = []
        for p, part in enumerate(doc["parts"]):
            by_position = [root / r["gather"] for r in part["runs"].get(table, []) if r["rows"] and r.get("gather")]
            if by_position and p in ids_of:
                found.append(gather.rows_of(by_position, ids_of[p]))
        scanned = [root / r["file"] for r in entries if not r.get("gather")]
        if scanned:
            found.append(pl.scan_parquet(scanned, parallel="prefiltered").filter(
                pl.col("customer_id").is_in(wanted)).collect().to_arrow())
        # handed to DuckDB as uncompressed Parquet files, not registered Arrow tables: registering one
        # loads pandas (0.6 s a process), writing and reading back the rows costs a few milliseconds
        files = []
        for i, rows in enumerate(found):
            files.append(Path(tmp) / f"{table}-{i}.parquet")
            pq.write_table(rows, files[-1], compression="none")
        rows = (f"SELECT {_cast(table, doc['types'])} FROM read_parquet([{', '.join(literal(str(f)) for f in files)}])"
                if files else st.empty_sql(table, doc["types"]))
        sql = merge_sql(table, doc["types"], rows) if table in _KEYED else rows
        con.execute(f"DROP VIEW IF EXISTS {ident('st_' + table)}")
        con.execute(f"CREATE OR REPLACE TEMP TABLE {ident('st_' + table)} AS {sql}")
        for f in files:
            f.unlink()
    con.execute("DROP VIEW IF EXISTS st_customers")
    con.execute("CREATE OR REPLACE TEMP TABLE st_customers AS SELECT customer_id FROM cust_all SEMI JOIN aff "
                "USING (customer_id)")


def _customers(con: duckdb.DuckDBPyConnection, cfg: Config, doc: dict[str, Any], root: Path
               ) -> dict[str, Any] | None:
    """``cust_all``: the valid customer ids of the config's customers table (empty without one),
    validated by the session's rules; returns the table's record (fingerprints and mapping) for
    the feature cache, which is not used across a changed customers table."""
    id_type = doc["types"].get("id", "BIGINT")
    spec = cfg.tables.get("customers")
    if spec is None:
        con.execute(f"CREATE OR REPLACE TEMP TABLE cust_all AS SELECT CAST(NULL AS {id_type}) AS customer_id "
                    "WHERE false")
        return None
    tables, id_types = register_tables(con, cfg.with_(tables=MappingProxyType({"customers": spec})))
    if id_types["id"] != id_type:
        raise InputError(f"customers ({', '.join(spec.paths)}): customer ids are {id_types['id']} where the refresh "
                         f"state's are {id_type}; a full read would type every table alike: map "
                         "customers.customer_id to the orders' type")
    stage_tables(con, tables)
    rejected = con.execute("SELECT count(*) FROM customers_rejects").fetchone()[0]
    if cfg.strict and rejected:
        raise ValidationError(f"--strict: {rejected} rows of customers break the data contract; fix the "
                              "customers table, or run without strict to set them aside")
    con.execute("CREATE OR REPLACE TEMP TABLE cust_all AS SELECT DISTINCT customer_id FROM customers_valid "
                "WHERE customer_id IS NOT NULL")
    return {"fingerprints": sorted(st.file_hash(Path(p)) for p in spec.paths), "mapping": _mapping(spec)}


def state_availability(doc: dict[str, Any]) -> tuple[dict[str, bool], dict[str, str]]:
    cols = doc["columns"].get("orders", [])
    products = doc["columns"].get("products", []) if doc.get("products") else []
    avail = {"premium_margin_12m": "market_price" in products and "product_id" in cols,
             "email": any(e["table"] == "email_events" for e in doc["ledger"]),
             "preferred_channel": "channel" in cols,
             "category": "category" in cols or ("category" in products and "product_id" in cols)}
    return avail, {k: _REASONS[k] for k, ok in avail.items() if not ok}


def _run(con: duckdb.DuckDBPyConnection, name: str, table: str, params: dict[str, Any]) -> None:
    sql = read_sql(name)
    con.execute(f"CREATE OR REPLACE TEMP TABLE {ident(table)} AS\n{sql}", _params_for(sql, params))


def _feature_rows(s: Session, avail: dict[str, bool], top: list[Any] | None) -> pl.DataFrame:
    """The feature rows of the customers the ``st_`` views hold: the intermediate tables of
    ``sql/feat_*.sql`` from the state, then the same final query."""
    con = s.con
    params = window_params(s)
    # universe.sql: everyone with an order line or an e-mail event (st_totals), or in customers
    con.execute("CREATE OR REPLACE TEMP TABLE universe AS SELECT customer_id FROM st_totals "
                "UNION SELECT customer_id FROM st_customers")
    _run(con, "refresh_f_orders", "f_orders", params)
    _run(con, "refresh_f_kept", "f_kept", params)
    empties = {
        "f_premium": ("refresh_f_premium" if avail["premium_margin_12m"] else None,
                      "SELECT NULL::DOUBLE AS premium_margin_12m"),
        "f_email": ("refresh_f_email" if avail["email"] else None,
                    "SELECT NULL::BIGINT AS emails_sent_12m, NULL::BIGINT AS opened_12m, "
                    "NULL::BIGINT AS clicked_12m"),
        "f_channel": ("refresh_f_channel" if avail["preferred_channel"] else None,
                      "SELECT NULL::VARCHAR AS preferred_channel"),
    }
    for table, (name, empty) in empties.items():
        if name:
            _run(con, name, table, params)
        else:
            con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS "
                        f"SELECT customer_id, e.* FROM universe, ({empty}) e WHERE false")
    con.execute("CREATE OR REPLACE TEMP TABLE f_category AS "
                "SELECT customer_id, category, net AS net_revenue FROM st_categories")
    sql = read_sql("features")
    p = _params_for(sql, {**params, "has_premium": avail["premium_margin_12m"], "has_email": avail["email"]})
    return _with_categories(s, sql, p, top) if top is not None else s.frame(sql, p)


def _affected(con: duckdb.DuckDBPyConnection, root: Path, doc: dict[str, Any], meta: dict[str, Any],
              cfg: Config, as_of: dt.date) -> None:
    """``aff``: the customers whose feature row may differ from the cache's: every customer an
    ingest since the cache changed (all of a rebuilt partition), and every customer with a row of
    the state whose day lies between the window starts of the cache's ``as_of`` and this one."""
    parts = Partitioning(int(doc["partitions"]))
    changes = [c for c in doc.get("changes", []) if c["gen"] > meta["gen"]]
    sel = [f"SELECT customer_id FROM read_parquet({literal(str(root / c['file']))})" for c in changes]
    rebuilt = sorted({p for c in changes for p in c["rebuilt"]})
    if rebuilt:
        ranges = " OR ".join("(b >= {} AND b < {})".format(*parts.bounds(p)) for p in rebuilt)
        sel.append(f"SELECT customer_id FROM (SELECT customer_id, {bucket_sql()} AS b FROM raw_totals) WHERE {ranges}")
    old = dt.date.fromisoformat(meta["as_of"])
    lo, hi = min(old, as_of), max(old, as_of)
    w = cfg.windows

    def between(col: str, days: int, ts: bool) -> str:
        a, b = lo - dt.timedelta(days=days), hi - dt.timedelta(days=days)
        kind = "TIMESTAMP" if ts else "DATE"
        return f"({col} >= {kind} '{a.isoformat()}' AND {col} < {kind} '{b.isoformat()}')"

    if lo != hi:
        # one range per scan: a range filter skips the row groups of other days (run files are
        # in day order, state.Table.order); an OR of two ranges would read every row group
        sel += [f"SELECT customer_id FROM raw_orders WHERE {between('last_ts', w.d6, True)}",
                f"SELECT customer_id FROM raw_orders WHERE {between('last_ts', w.d12, True)}",
                f"SELECT customer_id FROM raw_days WHERE {between('day', w.d12, False)}",
                f"SELECT customer_id FROM raw_premium WHERE {between('day', w.d12, False)}",
                f"SELECT customer_id FROM raw_kept WHERE {between('day', w.d24, False)}",
                f"SELECT customer_id FROM raw_email_keyed WHERE {between('sent_ts', w.d12, True)}",
                f"SELECT customer_id FROM raw_email_days WHERE {between('day', w.d12, False)}"]
    body = " UNION ALL ".join(sel) if sel else "SELECT customer_id FROM raw_totals WHERE false"
    con.execute(f"CREATE OR REPLACE TEMP TABLE aff AS SELECT DISTINCT customer_id FROM ({body})")


def _top(con: duckdb.DuckDBPyConnection, k: int) -> list[Any]:
    """The ``k`` categories with the most net revenue over every customer (ties by name)."""
    return [r[0] for r in con.execute(
        "SELECT category FROM (SELECT category, sum(net) AS net_revenue FROM raw_categories "
        "GROUP BY category) t ORDER BY net_revenue DESC, category LIMIT $k", {"k": k}).fetchall()]


def _usable(meta: dict[str, Any] | None, doc: dict[str, Any], cfg: Config, avail: dict[str, bool],
            top: list[Any] | None, root: Path, as_of: dt.date) -> bool:
    """Can the cached feature table stand in for the customers no change touched?"""
    if meta is None or "rows" not in meta or not all((root / f["file"]).exists() for f in _cache_files(meta)):
        return False
    w = cfg.windows
    # rows before this day are outside every window at both as_of: pruning them changes nothing
    meta = {**meta, "pruned_before_ok": (min(dt.date.fromisoformat(meta["as_of"]), as_of)
                                         - dt.timedelta(days=max(w.d6, w.d12, w.d24))).isoformat()}
    return (meta["gen"] <= doc["generation"] and meta["windows"] == [w.d6, w.d12, w.d24]
            and meta["avail"] == avail and meta["top"] == [str(t) for t in top or []]
            and meta.get("top_none", top is None) == (top is None)
            # every ingest since the cache left its changed customers
            and {c["gen"] for c in doc.get("changes", [])} >= set(range(meta["gen"] + 1, doc["generation"] + 1))
            # day buckets pruned since may have been in the cache's windows: no boundary scan sees them
            and (doc.get("pruned_before") or "") <= meta.get("pruned_before_ok", ""))


def _cache_files(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The cache's files, the newest first: its deltas, then its base."""
    return [*reversed(meta.get("deltas", [])), {"file": meta["file"], "rows": meta.get("rows", 0)}]


def _from_cache(root: Path, meta: dict[str, Any], changed: pl.Series, as_of: dt.date
                ) -> tuple[pl.DataFrame, pl.Series, list[pl.DataFrame]]:
    """The cache's base, which of its rows stand (customers neither in ``changed`` nor in a delta),
    and the standing rows of its deltas (a customer's row is the one of the newest file that has
    it); every file is in customer order. ``recency_days`` and ``tenure_days`` are moved to
    ``as_of``: whole days from the order's date (DuckDB's ``date_diff('day', date, as_of)`` in
    features.sql is the same integer)."""
    days = {c: (pl.lit(as_of, dtype=pl.Date) - pl.col(ts).dt.date()).dt.total_days().cast(pl.Int32).alias(c)
            for c, ts in (("recency_days", "last_order_ts"), ("tenure_days", "first_order_ts"))}
    deltas, drop = [], changed
    *newer, base = _cache_files(meta)
    for f in newer:
        cached = pl.read_ipc(root / f["file"])
        deltas.append(cached.filter(~pl.col("customer_id").is_in(drop.implode())).with_columns(**days))
        drop = pl.concat([drop, cached["customer_id"]])
    cached = pl.read_ipc(root / base["file"])
    return cached.with_columns(**days), ~cached["customer_id"].is_in(drop.implode()), deltas


def _merged(base: pl.DataFrame, keep: pl.Series, extra: pl.DataFrame) -> pl.DataFrame:
    """The rows of ``base`` where ``keep`` and every row of ``extra``, in customer order (both are,
    and no customer is in both), gathered in one pass: a filter and a merge would copy the
    million-row table twice."""
    kept = np.flatnonzero(keep.to_numpy())
    slots = (base["customer_id"].gather(kept).search_sorted(extra["customer_id"], side="left").to_numpy()
             + np.arange(extra.height))
    idx = np.empty(kept.size + extra.height, dtype=np.int64)
    from_extra = np.zeros(idx.size, dtype=bool)
    from_extra[slots] = True
    idx[slots] = base.height + np.arange(extra.height)
    idx[~from_extra] = kept
    return pl.concat([base, extra], how="vertical", rechunk=False).gather(idx)


#: the cache's deltas are folded into a new base when they hold more rows than this share of it
#: (or number more than MAX_DELTAS): below it, a refresh writes only the rows it recomputed
DELTA_SHARE, MAX_DELTAS = 0.125, 16


def _write_cache(root: Path, doc: dict[str, Any], df: pl.DataFrame, fresh: pl.DataFrame | None, cfg: Config,
                 avail: dict[str, bool], top: list[Any] | None, as_of: dt.date,
                 customers: dict[str, Any] | None) -> None:
    """Keep ``df`` (this call's feature table) as the cache: as a new base, or, when the cache was
    used and its deltas stay small, as the previous cache plus a delta holding ``fresh`` (the rows
    recomputed by this call); the rows of a delta replace the older files' rows of its customers."""
    folder = root / "cache"
    folder.mkdir(exist_ok=True)
    old = st.read_cache(root) or {}
    deltas = list(old.get("deltas", [])) if fresh is not None else []
    small = fresh is not None and len(deltas) < MAX_DELTAS and (
        sum(d["rows"] for d in deltas) + fresh.height <= DELTA_SHARE * old.get("rows", 0))
    stem = f"{doc['generation']:06d}-{as_of.isoformat()}"
    # uncompressed Arrow IPC: several times faster to write and read back than zstd Parquet
    if small:
        base = {"file": old["file"], "rows": old["rows"]}
        if fresh.height:  # nothing recomputed: the files stand as they are
            name = f"cache/delta-{stem}.arrow"
            fresh.write_ipc(root / (name + ".tmp"), compression="uncompressed")
            os.replace(root / (name + ".tmp"), root / name)
            deltas.append({"file": name, "rows": fresh.height})
    else:
        name = f"cache/features-{stem}.arrow"
        df.write_ipc(root / (name + ".tmp"), compression="uncompressed")
        os.replace(root / (name + ".tmp"), root / name)
        deltas, base = [], {"file": name, "rows": df.height}
    w = cfg.windows
    meta = {"gen": int(doc["generation"]), "as_of": as_of.isoformat(), **base, "deltas": deltas,
            "windows": [w.d6, w.d12, w.d24], "avail": avail, "top": [str(t) for t in top or []],
            "top_none": top is None, "customers": customers}
    tmp = root / (st.CACHE + ".tmp")
    tmp.write_text(json.dumps(meta))
    os.replace(tmp, root / st.CACHE)
    keep = {f["file"] for f in _cache_files(meta)}
    for path in folder.glob("*.arrow"):
        if f"cache/{path.name}" not in keep:
            path.unlink(missing_ok=True)


def features_from_state(cfg: Config, state: str | Path, progress: Progress | None = None, *,
                        cache: bool = True, stats: dict[str, int] | None = None
                        ) -> tuple[pl.DataFrame, dict[str, bool], dict[str, str], dt.date]:
    """The feature table at ``cfg.as_of`` (default: the watermark) from the state in ``state``.

    With ``cache`` the state keeps the last feature table it computed (``cache.json``): the
    next call recomputes only the customers an ingest changed since, or whose rows cross a
    window start between the two ``as_of``; every other row is the cached one with
    ``recency_days`` and ``tenure_days`` moved to the new ``as_of`` (the same SQL expressions).
    The cache is not used when the windows, the top categories or the available feature
    groups changed. ``stats``, if given, receives how many rows were recomputed and cached.

    Raises
    ------
    InputError
        No state; ``as_of`` before the watermark (the windows would need rows merged away: use
        ``--full``); a window longer than the state keeps day buckets for.
    """
    root = Path(state)
    with st.state_lock(root):
        return _features(cfg, root, progress, cache, stats)


def _features(cfg: Config, root: Path, progress: Progress | None, cache: bool, stats: dict[str, int] | None
              ) -> tuple[pl.DataFrame, dict[str, bool], dict[str, str], dt.date]:
    doc = _load(root)
    as_of = st.as_of_for(doc, cfg.as_of, "--full to recompute from every batch file")
    w = cfg.windows
    if max(w.d6, w.d12, w.d24) > int(doc["horizon_days"]):
        raise InputError(f"[features] windows {w.d6}/{w.d12}/{w.d24} days: the refresh state in {root} keeps "
                         f"day buckets for {doc['horizon_days']} days (longest window {max(doc['windows_days'])} "
                         f"+ lateness {doc['lateness_days']}); rebuild the state with these windows")
    check_products(doc, cfg, root)
    avail, skipped = state_availability(doc)
    con = connect(cfg)
    try:
        customers = _customers(con, cfg, doc, root)
        _register(con, root, doc)
        s = Session(con, cfg.with_(as_of=as_of), {}, as_of)
        if progress:
            progress("features from the refresh state")
        top = _top(con, cfg.top_categories) if avail["category"] else None
        meta = st.read_cache(root) if cache else None
        if _usable(meta, doc, cfg, avail, top, root, as_of) and meta.get("customers") == customers:
            _affected(con, root, doc, meta, cfg, as_of)
            changed = s.frame("SELECT customer_id FROM aff")["customer_id"]
            _gather(con, root, doc, changed)
            fresh = _feature_rows(s, avail, top)
            base, keep, deltas = _from_cache(root, meta, changed, as_of)
            fresh = fresh.select(base.columns).sort("customer_id")
            extra = pl.concat([*deltas, fresh]).sort("customer_id") if deltas else fresh
            df = _merged(base, keep, extra)
            counts = {"recomputed": fresh.height, "cached": df.height - fresh.height}
        else:
            df = _feature_rows(s, avail, top)
            counts = {"recomputed": df.height, "cached": 0}
            df, fresh = df.sort("customer_id"), None
        log.info("features from the refresh state: %(recomputed)d customers recomputed, %(cached)d cached", counts)
        if stats is not None:
            stats.update(counts)
    finally:
        con.close()
    if cache:
        _write_cache(root, doc, df, fresh, cfg, avail, top, as_of, customers)
    return df, avail, skipped, as_of


def full_config(cfg: Config, state: str | Path) -> Config:
    """``cfg`` reading every batch file of the state's ledger as its tables (for ``--full``)."""
    root = Path(state)
    doc = _load(root)
    _check_state(doc, cfg, root)
    files = _ledger_files(doc, root)
    tables = {t: spec for t, spec in cfg.tables.items() if t in ("products", "customers")}
    for t, paths in files.items():
        if not paths:
            continue
        base = cfg.tables.get(t)
        tables[t] = (TableSpec(t, tuple(map(str, paths)), _fmt(paths)) if base is None else
                     replace(base, paths=tuple(map(str, paths)), format=_fmt(paths)))
    return cfg.with_(tables=MappingProxyType(tables))


def _fmt(paths: list[Path]) -> str:
    from centile.config import _format_of

    return _format_of(str(paths[0]))


def run_state_features(cfg: Config, state: str | Path, out: str | Path | None = None, *, full: bool = False,
                       progress: Progress | None = None) -> FeaturesResult:
    """Compute the feature table from a refresh state (``full``: from every batch file of its ledger,
    any ``as_of``) and write ``features.parquet`` and ``manifest.json`` to ``out`` if given."""
    doc = _load(state)
    summary: dict[str, Any] = {"state": str(Path(state).resolve()), "watermark": doc["watermark"],
                               "batches": len(doc["ledger"]), "full": full}
    if full:
        fcfg = full_config(cfg, state)
        with open_session(fcfg, progress, only=("orders", "email_events", "products", "customers")) as s:
            df, avail, skipped = compute_features(s, progress)
            as_of = s.as_of
            summary |= session_summary(s)
    else:
        df, avail, skipped, as_of = features_from_state(cfg, state, progress)
        summary["as_of"] = as_of.isoformat()
    summary["customers"] = df.height
    summary["features_skipped"] = skipped
    if out is None:
        return FeaturesResult(df, None, as_of, avail, skipped, summary)
    with staged_output(out) as staging:
        with staging.timed("features"):
            df.write_parquet(staging.path("features.parquet"), compression="zstd")
        write_manifest(staging, build_manifest(
            "features", as_of=as_of.isoformat(),
            inputs={"refresh_state": {"path": summary["state"], "watermark": doc["watermark"],
                                      "ledger": doc["ledger"]}},
            config=cfg.as_dict(), rows={"features": df.height}, summary=summary))
        target = staging.target
    return FeaturesResult(df, target, as_of, avail, skipped, summary)
