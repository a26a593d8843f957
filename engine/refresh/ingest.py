"""``centile ingest``: apply batches of order lines and e-mail events to a refresh state.

A batch is validated by the session's own rules (:func:`centile.backend.sources.stage_tables`
with ``sql/stage_<table>.sql`` and :func:`~centile.backend.sources.set_aside_duplicates`), then
aggregated into the state tables of :mod:`centile.refresh.state` (``sql/refresh_*.sql``) and
merged partition by partition. Rows older than the state's day buckets (the watermark minus the
longest window and ``[refresh] lateness_days``) cannot be merged exactly: their partitions are
rebuilt from every batch file of the ledger.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import duckdb
import numpy as np

from centile.backend.partitions import Partitioning, bucket_sql
from centile.backend.session import _empty_view, connect
from centile.backend.sources import (
    CODED,
    Registered,
    register_tables,
    set_aside_duplicates,
    stage_tables,
)
from centile.config import Config, TableSpec, _format_of
from centile.errors import ConfigError, InputError, ValidationError
from centile.io.sqlfiles import ident, literal, read_sql
from centile.refresh import gather
from centile.refresh import hashes as lh
from centile.refresh import rejects as rj
from centile.refresh import state as st
from centile.runtime import Progress

log = logging.getLogger(__name__)

#: the tables a batch may hold
BATCH_TABLES = ("orders", "email_events")
#: order id types kept as BIGINT in the basket lines
_INTEGERS = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER")


@dataclass(frozen=True)
class IngestResult:
    """What one ``ingest`` call did."""

    state: Path
    applied: list[dict[str, Any]]
    skipped: list[str]
    watermark: dt.date | None
    rebuilt: list[int] = field(default_factory=list)
    late_rows: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    rejects: dict[str, dict[str, int]] = field(default_factory=dict)
    partitions: int = 0

    def summary(self) -> dict[str, Any]:
        return {"state": str(self.state), "applied": self.applied, "skipped_already_applied": self.skipped,
                "watermark": self.watermark.isoformat() if self.watermark else None,
                "partitions": self.partitions, "partitions_rebuilt_for_late_rows": self.rebuilt,
                "late_rows": self.late_rows, "rows_applied": self.rows, "rows_rejected": self.rejects}


def _mapping(spec: TableSpec | None) -> dict[str, Any]:
    """The parts of a table spec that shape the validated rows (not where the files are)."""
    if spec is None:
        return {}
    return {"columns": dict(spec.columns), "filter": spec.filter, "timestamp_format": spec.timestamp_format,
            "options": dict(spec.options), "null_strings": list(spec.null_strings),
            "duplicates": spec.duplicates, "timezone": spec.timezone}


def _new_manifest(cfg: Config) -> dict[str, Any]:
    s = cfg.settings("refresh")
    w = cfg.windows
    return {"version": st.VERSION, "partitions": s.partitions, "lateness_days": s.lateness_days,
            "max_runs": s.max_runs,
            "windows_days": [w.d6, w.d12, w.d24], "horizon_days": max(w.d6, w.d12, w.d24) + s.lateness_days,
            "duckdb": duckdb.__version__, "tables": list(st.TABLES), "watermark": None, "generation": 0,
            "types": {}, "columns": {},
            "mapping": {t: _mapping(cfg.tables.get(t)) for t in BATCH_TABLES}, "ledger": [],
"products": products_record(cfg), "rejects": [], "inputs": {},
            "parts": [{"part": p, "runs": {}} for p in range(s.partitions)]}


def products_record(cfg: Config) -> dict[str, Any] | None:
    """What the state keeps of the products table: its files' content fingerprints and mapping.
    Every line's premium margin and (without a category column on the lines) its category are
    aggregated with the products table of the ingest, so the state follows one fixed table."""
    spec = cfg.tables.get("products")
    if spec is None:
        return None
    return {"fingerprints": sorted(st.file_hash(Path(p)) for p in spec.paths), "mapping": _mapping(spec)}


def check_products(doc: dict[str, Any], cfg: Config, root: Path) -> None:
    """Refuse a products table other than the one the state was built with (or one it was built
    without): the premium margins and categories of every line applied so far depend on it."""
    have, want = doc.get("products"), products_record(cfg)
    if have == want:
        return
    if have is None:
        what = "was built without a products table; remove [tables.products] from the config"
    elif want is None:
        what = "was built with a products table; use the config that maps it (-c)"
    else:
        what = ("was built with another products table (other content or column mapping); use the products "
                "file it was built with")
    raise ConfigError(f"refresh state {root} {what}, or rebuild the state into an empty folder with this "
                      "products table (the premium margins and product categories of every applied line "
                      "depend on it)")


def _check_state(doc: dict[str, Any], cfg: Config, root: Path) -> None:
    check_products(doc, cfg, root)
    for t in BATCH_TABLES:
        if doc["mapping"].get(t) != _mapping(cfg.tables.get(t)):
            raise ConfigError(f"refresh state {root}: [tables.{t}] maps the columns differently from the config "
                              "the state was built with; use that config, or rebuild the state into an empty "
                              "folder")
    if doc.get("duckdb") != duckdb.__version__:
        raise InputError(f"refresh state {root} was built with DuckDB {doc.get('duckdb')}, this is "
                         f"{duckdb.__version__}: its line hashes may differ; rebuild the state into an empty folder")


def batch_specs(cfg: Config, files: dict[str, list[Path]], fix: str = "ingest them in separate calls"
                ) -> dict[str, TableSpec]:
    """The table specs reading ``files`` per table (the config's mapping kept); tables without files
    are left out. A table whose files mix CSV and Parquet is refused with ``fix`` as the way out."""
    specs = {}
    for table, paths in files.items():
        if not paths:
            continue
        formats = {_format_of(str(p)) for p in paths}
        if len(formats) > 1:
            raise InputError(f"{table}: batches mix CSV and Parquet ({', '.join(map(str, paths))}); {fix}")
        base = cfg.tables.get(table)
        paths_t = tuple(str(p) for p in paths)
        specs[table] = (replace(base, paths=paths_t, format=formats.pop()) if base is not None
                        else TableSpec(table, paths_t, formats.pop()))
    return specs


@dataclass(frozen=True)
class Validated:
    """What :func:`_validate` found in a batch."""

    #: rejected rows per table and reason
    rejects: dict[str, dict[str, int]]
    #: per batch table, its counts for the validation summary (:func:`centile.refresh.rejects.batch_stats`)
    stats: dict[str, dict[str, Any]]
    #: the order lines' registration and the SQL of the columns a line's hash covers ("": no hash)
    orders: Registered | None
    key: str


def _validate(con: duckdb.DuckDBPyConnection, cfg: Config, files: dict[str, list[Path]],
              doc: dict[str, Any], root: Path) -> Validated:
    """Register and validate the batch files with the session's rules; leave ``batch_all`` (valid
    order lines, contract defaults applied, with ``__bucket``, ``__h``, ``__day`` and the line's
    own category ``__line_category``), ``batch_email_all`` and ``batch_rejects``
    (:func:`centile.refresh.rejects.collect_batch`)."""
    specs = batch_specs(cfg, files)
    if specs and "products" in cfg.tables:
        specs["products"] = cfg.tables["products"]
    tables, id_types = register_tables(con, cfg.with_(tables=MappingProxyType(specs))) if specs else ({}, {})
    stage_tables(con, tables)
    if "orders" in tables:
        set_aside_duplicates(con, tables["orders"])
    types = dict(doc["types"])
    if tables:
        new = {"id": id_types["id"]}
        if "orders" in tables:
            new["product"] = id_types["product"]
            new["order"] = "VARCHAR" if tables["orders"].has("order_id") else "DATE"
            # the order ids' own type for the order totals and basket lines: integers as BIGINT (as a read of every
            # batch widens them), anything else as text (the state's orders table keeps them as text)
            key = con.execute("DESCRIBE SELECT order_id FROM orders_valid").fetchone()[1]
            new["order_key"] = ("DATE" if not tables["orders"].has("order_id") else "BIGINT"
                                if key in _INTEGERS else "VARCHAR")
        for k, v in new.items():
            if types.setdefault(k, v) != v:
                raise InputError(f"batch {', '.join(str(p) for ps in files.values() for p in ps)}: "
                                 f"{'product' if k == 'product' else 'customer' if k == 'id' else 'order'} ids "
                                 f"are {v} where the state's are {types[k]}; a full read would type every batch "
                                 "alike: map the column to one type in every batch, or rebuild the state")
    for name, reg in tables.items():
        cols = sorted(c for c in reg.columns if reg.has(c))
        known = doc["columns"].setdefault(name, cols)
        if name == "products":
            continue  # fixed by its fingerprint (check_products)
        if known != cols:
            raise InputError(f"{name}: batch {', '.join(map(str, files[name]))} has the columns "
                             f"{', '.join(cols)} where earlier batches had {', '.join(known)}; every batch of "
                             "a table needs the same columns (map the missing ones in [tables.<table>.columns])")
    doc["types"] = types
    rejects = {name: {str(k): int(v) for k, v in con.execute(
        f"SELECT reject_reason, count(*) FROM {ident(name + '_rejects')} "
        "GROUP BY 1 ORDER BY 1").fetchall()} for name in tables}
    if "orders" not in tables:
        _empty_view(con, "orders", {"id": types.get("id", "BIGINT"), "product": types.get("product", "BIGINT")})
        con.execute("CREATE OR REPLACE TEMP VIEW orders_valid AS SELECT * FROM orders")
        order_id, key = ("CAST(order_ts AS DATE)" if types.get("order") == "DATE" else "CAST(order_id AS VARCHAR)"), ""
    else:
        reg = tables["orders"]
        order_id = "order_id" if reg.has("order_id") else "CAST(order_ts AS DATE)"
        # the texts stored as codes (sources.CODED) hashed as texts: the state's lines hash their texts
        coded = CODED.get("orders", ())
        key = ", ".join(f"CAST({ident(c)} AS VARCHAR)" if c in coded else ident(c) for c in reg.columns if reg.has(c))
    dedupe = bool(key) and types.get("order") == "VARCHAR" and doc["mapping"]["orders"].get(
        "duplicates", "set_aside") != "keep"
    # the product's market price and cost (premium margin) and, when the lines have no category
    # column, its category: the session's order_categories view
    prod = tables.get("products")
    has_product = "orders" in tables and tables["orders"].has("product_id")
    market = "p.__market" if prod is not None and prod.has("market_price") and has_product else "NULL::DOUBLE"
    category = ("p.__category" if prod is not None and prod.has("category") and has_product
                and not tables["orders"].has("category") else "category")
    join = ("LEFT JOIN (SELECT product_id, market_price AS __market, unit_cost AS __cost, category AS __category "
            "FROM products_valid) AS p USING (product_id)" if prod is not None and has_product else "")
    cost = "p.__cost" if join else "NULL::DOUBLE"
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE batch_all AS
        SELECT customer_id, {order_id} AS order_id, order_ts,
               coalesce(quantity, 1.0) AS quantity, unit_price, product_id, CAST({category} AS VARCHAR) AS category,
               unit_cost, coalesce(returned_quantity, 0.0) AS returned_quantity, CAST(channel AS VARCHAR) AS channel,
               {bucket_sql()} AS __bucket,
               {f"hash({key})" if dedupe else "CAST(NULL AS UBIGINT)"} AS __h, CAST(order_ts AS DATE) AS __day,
               {market} AS __market, {cost} AS __cost,
               CAST(orders_valid.category AS VARCHAR) AS __line_category
        FROM orders_valid {join}""")
    if "email_events" not in tables:
        _empty_view(con, "email_events", {"id": types.get("id", "BIGINT"), "product": "BIGINT"})
        src = "SELECT *, 0 AS __bucket FROM email_events"
    else:
        src = f"SELECT *, {bucket_sql()} AS __bucket FROM email_events_valid"
    con.execute("CREATE OR REPLACE TEMP TABLE batch_email_all AS SELECT customer_id, ts, event, "
                f"CAST(campaign_id AS VARCHAR) AS campaign_id, __bucket FROM ({src}) e")
    rj.collect_batch(con, tables, BATCH_TABLES)
    return Validated(rejects, rj.batch_stats(con, tables, BATCH_TABLES), tables.get("orders"),
                     key if dedupe else "")


def _delta(con: duckdb.DuckDBPyConnection, root: Path, doc: dict[str, Any], parts: Partitioning, ps: list[int],
           dedupe: bool, tables: tuple[str, ...]) -> int:
    """The delta state tables ``d_<table>`` of the batch rows of partitions ``ps``, computed once for
    all of them (each row keeps its ``__bucket``: :func:`_write_part` takes a partition's rows); with
    ``dedupe``, lines whose hash their partition's runs hold (applied before) are left out. Returns
    how many were."""
    where = " OR ".join("(__bucket >= {} AND __bucket < {})".format(*parts.bounds(p)) for p in ps) or "false"
    con.execute(f"CREATE OR REPLACE TEMP TABLE batch_orders AS SELECT * FROM batch_all WHERE {where}")
    dropped = 0
    runs = {p: [root / r["file"] for r in doc["parts"][p]["runs"].get("hashes", []) if r["rows"]]
            for p in ps} if dedupe else {}
    if any(runs.values()):
        # the batch's hashes searched in their partition's sorted runs (centile.refresh.hashes): a
        # binary search per day and hash in memory-mapped arrays, not a read of every hash kept
        mine = con.execute("SELECT DISTINCT __h, CAST(date_diff('day', DATE '1970-01-01', __day) AS INTEGER) AS d, "
                           "__bucket FROM batch_orders WHERE __h IS NOT NULL").fetchnumpy()
        of = parts.parts_of(mine["__bucket"])
        found = [lh.seen(runs[p], np.asarray(mine["__h"])[of == p], np.asarray(mine["d"])[of == p])
                 for p in ps if runs[p]]
        found = np.concatenate(found) if found else np.empty(0, np.uint64)
        if found.size:
            before = con.execute("SELECT count(*) FROM batch_orders").fetchall()[0][0]
            # as a parameter, not a registered Arrow table: registering one loads pandas (0.6 s a process)
            con.execute("CREATE OR REPLACE TEMP TABLE __centile_seen AS SELECT CAST(unnest($h) AS UBIGINT) AS h",
                        {"h": [str(x) for x in found.tolist()]})
            # the hash covers every column of the line, the customer id among them
            rj.note_dropped(con, "(SELECT b.customer_id, b.__h FROM batch_orders AS b SEMI JOIN __centile_seen "
                                 "AS o ON b.__h = o.h)")
            con.execute("CREATE OR REPLACE TEMP TABLE batch_orders AS SELECT b.* FROM batch_orders AS b "
                        "ANTI JOIN __centile_seen AS o ON b.__h = o.h")
            con.execute("DROP TABLE __centile_seen")
            dropped = before - con.execute("SELECT count(*) FROM batch_orders").fetchall()[0][0]
    con.execute(f"CREATE OR REPLACE TEMP VIEW batch_email AS SELECT * FROM batch_email_all WHERE {where}")
    for table in tables:
        sql = ("SELECT DISTINCT customer_id, __h AS h, __day AS day, __bucket FROM batch_orders WHERE __h IS NOT NULL"
               if table == "hashes" else read_sql("refresh_" + table))
        con.execute(f"CREATE OR REPLACE TEMP TABLE {ident('d_' + table)} AS {sql}")
    return dropped


def _delta_counts(con: duckdb.DuckDBPyConnection, tables: tuple[str, ...], parts: Partitioning
                  ) -> dict[str, np.ndarray]:
    """The rows of each delta table per partition (one query per table, not per table and partition)."""
    out = {}
    for table in tables:
        got = con.execute(f"SELECT __bucket, count(*) AS n FROM {ident('d_' + table)} GROUP BY 1").fetchnumpy()
        out[table] = np.bincount(parts.parts_of(got["__bucket"]), weights=np.asarray(got["n"]),
                                 minlength=parts.count).astype(np.int64)
    return out


def _cast(table: str, types: dict[str, str]) -> str:
    return ", ".join(f"CAST({ident(c)} AS {st.column_type(table, c, types)}) AS {ident(c)}"
                     for c in st.TABLES[table].types)


def merged_sql(table: str, types: dict[str, str], runs: list[Path], cutoff: dt.date | None = None,
               delta: bool = False, delta_where: str = "true") -> str:
    """One row per key of state table ``table`` over its run files (and the rows of ``d_<table>``
    where ``delta_where`` if ``delta``), merged by the table's aggregates; day buckets before
    ``cutoff`` pruned."""
    spec = st.TABLES[table]
    parts = [f"SELECT {_cast(table, types)} FROM {ident('d_' + table)} WHERE {delta_where}"] if delta else []
    if runs:
        parts.append(f"SELECT {_cast(table, types)} FROM read_parquet([{', '.join(literal(str(r)) for r in runs)}])")
    union = " UNION ALL ".join(parts) if parts else st.empty_sql(table, types)
    where = f"WHERE {spec.day} >= DATE '{cutoff.isoformat()}'" if spec.day and cutoff else ""
    return merge_sql(table, types, union, where)


def merge_sql(table: str, types: dict[str, str], rows: str, where: str = "") -> str:
    """One row per key of state table ``table`` over the relation ``rows`` (its columns), merged by
    the table's aggregates."""
    spec, union = st.TABLES[table], rows
    if not spec.merge:
        return f"SELECT DISTINCT * FROM ({union}) u {where}"
    aggs = ", ".join(f"CAST({fn}({ident(c)}) AS {st.column_type(table, c, types)}) AS {ident(c)}"
                     for c, fn in spec.merge.items())
    keys = ", ".join(ident(k) for k in spec.keys)
    return f"SELECT {keys}, {aggs} FROM ({union}) u {where} GROUP BY {keys}"


def _write_part(con: duckdb.DuckDBPyConnection, root: Path, doc: dict[str, Any], part: int, gen: int,
                cutoff: dt.date | None, fresh: bool, counts: dict[str, np.ndarray] | None = None,
                copies: bool = True) -> None:
    """Add the rows of the delta tables in partition ``part`` (``counts``: their number per table and
    partition, if known) to it as new run files (temp name, then rename); the manifest, written
    later, points at them. A table that would get more than ``max_runs`` runs, or a ``fresh``
    partition (rebuilt: the deltas hold all its rows), is merged into one file, pruning day
    buckets before ``cutoff``: an ingest writes about the size of its batch, not of the state.
    ``copies``: also write the feature tables' runs sorted by customer (``[refresh] sorted_copies``)."""
    runs_of = doc["parts"][part]["runs"]
    folder = root / f"p{part:04d}"
    folder.mkdir(exist_ok=True)
    lo, hi = Partitioning(int(doc["partitions"])).bounds(part)
    mine = f"__bucket >= {lo} AND __bucket < {hi}"
    for table in st.state_tables(doc):
        n_delta = (int(counts[table][part]) if counts is not None else
                   con.execute(f"SELECT count(*) FROM {ident('d_' + table)} WHERE {mine}").fetchall()[0][0])
        runs = [] if fresh else list(runs_of.get(table, []))
        if n_delta == 0 and not fresh:
            continue
        merge = fresh or len(runs) + 1 > int(doc["max_runs"])
        if merge and cutoff and st.TABLES[table].day:
            # a feature cache is stale for rows pruned after it was computed (features.py)
            doc["pruned_before"] = max(doc.get("pruned_before") or "", cutoff.isoformat())
        if table == "hashes":
            runs_of[table] = _write_hashes(con, root, folder, runs, gen, cutoff, merge, mine)
            continue
        name = f"{table}-{gen:06d}.parquet"
        tmp = folder / (name + ".tmp")
        spec = st.TABLES[table]
        if merge:
            con.execute("CREATE OR REPLACE TEMP TABLE __centile_run AS " + merged_sql(
                table, doc["types"], [root / r["file"] for r in runs], cutoff, delta=True, delta_where=mine))
            relation, runs = "__centile_run", []
            rows = con.execute("SELECT count(*) FROM __centile_run").fetchall()[0][0]
        else:  # the partition's delta rows as they are: no copy
            relation, rows = f"(SELECT {_cast(table, doc['types'])} FROM {ident('d_' + table)} WHERE {mine})", n_delta
        sql = f"SELECT * FROM {relation}" + (f" ORDER BY {ident(spec.order)}" if spec.order else "")
        con.execute(f"COPY ({sql}) TO {literal(str(tmp))} (FORMAT parquet, COMPRESSION zstd)")
        entry = {"file": f"{folder.name}/{name}", "rows": int(rows)}
        if spec.features and copies:
            # the same rows in customer order, for the feature cache's gather (centile.refresh.gather)
            sorted_name = f"{table}-{gen:06d}{gather.SUFFIX}"
            gather.write_sorted(con, relation, spec.keys, folder / sorted_name)
            entry["gather"] = f"{folder.name}/{sorted_name}"
        os.replace(tmp, folder / name)
        runs_of[table] = [*runs, entry]
    con.execute("DROP TABLE IF EXISTS __centile_run")


def _write_hashes(con: duckdb.DuckDBPyConnection, root: Path, folder: Path, runs: list[dict[str, Any]], gen: int,
                  cutoff: dt.date | None, merge: bool, where: str) -> list[dict[str, Any]]:
    """Add the rows of ``d_hashes`` where ``where`` to a partition's line hashes as a new sorted run
    (centile.refresh.hashes), or, when ``merge``, merged with ``runs`` into one; returns the runs."""
    d = con.execute("SELECT h, CAST(date_diff('day', DATE '1970-01-01', day) AS INTEGER) AS day "
                    f"FROM d_hashes WHERE {where}").fetchnumpy()
    name = f"hashes-{gen:06d}{lh.SUFFIX}"
    # a hash of a day before the day buckets can match no line of a later batch (such a line is late and
    # rebuilds its partition from the batch files), so every run is pruned, not only merged ones
    rows = lh.write_run(folder / name, d["h"], d["day"], [root / r["file"] for r in runs] if merge else [],
                        cutoff)
    return [*([] if merge else runs), {"file": f"{folder.name}/{name}", "rows": rows}]


def _part_of(buckets: Iterable[int], parts: Partitioning) -> set[int]:
    return {int(p) for p in parts.parts_of(np.fromiter(buckets, dtype=np.int64))}


def _ledger_files(doc: dict[str, Any], root: Path) -> dict[str, list[Path]]:
    """The batch files of the ledger, checked unchanged (a rebuild reads them again)."""
    out: dict[str, list[Path]] = {t: [] for t in BATCH_TABLES}
    for e in doc["ledger"]:
        p = Path(e["path"])
        if not p.exists() or st.file_hash(p) != e["fingerprint"]:
            raise InputError(f"refresh state {root}: late rows need their partitions rebuilt from every batch, "
                             f"but batch file {p} (applied as {e['fingerprint']}) is missing or changed; "
                             "restore it, or rebuild the state into an empty folder")
        out[e["table"]].append(p)
    return out


def ingest(cfg: Config, state: str | Path, orders: Iterable[str | Path] = (),
           email_events: Iterable[str | Path] = (), progress: Progress | None = None) -> IngestResult:
    """Apply batch files of order lines (``orders``) and e-mail events to the state in ``state``.

    A file whose content was applied before (same fingerprint) is skipped, so applying a batch
    twice changes nothing. Returns what was applied, the new watermark and the partitions that
    late rows made rebuild.

    Raises
    ------
    ConfigError
        The config maps the columns differently from the config the state was built with, or
        maps another products table.
    InputError
        A batch cannot be read, has other columns or id types than earlier batches, or late
        rows need a rebuild while a ledger file is missing or changed.
    """
    root = Path(state)
    with st.state_lock(root):
        return _ingest(cfg, root, orders, email_events, progress)


def _ingest(cfg: Config, root: Path, orders: Iterable[str | Path], email_events: Iterable[str | Path],
            progress: Progress | None) -> IngestResult:
    root.mkdir(parents=True, exist_ok=True)
    doc = st.read_manifest(root)
    doc = _new_manifest(cfg) if doc is None else doc
    _check_state(doc, cfg, root)
    seen = {e["fingerprint"] for e in doc["ledger"]}
    new: dict[str, list[Path]] = {t: [] for t in BATCH_TABLES}
    applied, skipped = [], []
    for table, paths in (("orders", orders), ("email_events", email_events)):
        for raw in paths:
            p = Path(raw).resolve()
            if not p.is_file():
                raise InputError(f"{table} batch {raw}: no such file (a batch is one Parquet or CSV file)")
            fp = st.file_hash(p)
            if fp in seen:
                skipped.append(str(p))
                continue
            seen.add(fp)
            new[table].append(p)
            applied.append({"table": table, "path": str(p), "fingerprint": fp, "bytes": p.stat().st_size,
                            "applied_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")})
    parts = Partitioning(int(doc["partitions"]))
    if not applied:
        return IngestResult(root, [], skipped, st.watermark(doc), partitions=parts.count)

    if progress:
        progress("ingest: validating the batch")
    con = connect(cfg)
    try:
        found = _validate(con, cfg, new, doc, root)
        rejects = found.rejects
        if cfg.strict and any(rejects.values()):
            detail = "; ".join(f"{t}: " + ", ".join(f"{n} × {r}" for r, n in reasons.items())
                               for t, reasons in rejects.items() if reasons)
            raise ValidationError(f"--strict: batch rows break the data contract ({detail}); nothing was "
                                  "applied. Fix the batch, or ingest without strict to count them as rejects.")
        dedupe = doc["types"].get("order") == "VARCHAR" and doc["mapping"]["orders"].get(
            "duplicates", "set_aside") != "keep"
        newest = con.execute("SELECT max(d) FROM (SELECT max(__day) AS d FROM batch_all UNION ALL "
                             "SELECT max(CAST(ts AS DATE)) FROM batch_email_all)").fetchone()[0]
        old_wm = st.watermark(doc)
        horizon = dt.timedelta(days=int(doc["horizon_days"]))
        candidates = [d for d in (old_wm, newest + dt.timedelta(days=1) if newest else None) if d]
        wm = max(candidates) if candidates else None
        late_rows, late_parts = 0, set()
        if old_wm is not None:
            old_cut = old_wm - horizon
            rows = con.execute(
                "SELECT __bucket, count(*) FROM (SELECT __bucket FROM batch_all WHERE __day < $c UNION ALL "
                "SELECT __bucket FROM batch_email_all WHERE CAST(ts AS DATE) < $c) GROUP BY 1",
                {"c": old_cut}).fetchall()
            late_rows = sum(int(n) for _b, n in rows)
            late_parts = _part_of((b for b, _n in rows), parts)
            if late_rows:
                log.warning("ingest: %d rows are older than the state's day buckets (before %s): rebuilding "
                            "partition(s) %s from every batch file", late_rows, old_cut,
                            ", ".join(map(str, sorted(late_parts))))
        cutoff = wm - horizon if wm else None
        gen = int(doc["generation"]) + 1
        rows_applied = {"orders": int(con.execute("SELECT count(*) FROM batch_all").fetchone()[0]),
                        "email_events": int(con.execute("SELECT count(*) FROM batch_email_all").fetchone()[0])}
        dropped = 0
        touched = con.execute("SELECT DISTINCT __bucket FROM (SELECT __bucket FROM batch_all UNION ALL "
                              "SELECT __bucket FROM batch_email_all)").fetchnumpy()["__bucket"]
        touched_parts = _part_of(touched.tolist(), parts)
        # the customers this ingest changes: a feature cache recomputes them (centile.refresh.features)
        (root / "changes").mkdir(exist_ok=True)
        changes = f"changes/{gen:06d}.parquet"
        con.execute(f"COPY (SELECT DISTINCT customer_id FROM (SELECT customer_id FROM batch_all UNION ALL "
                    f"SELECT customer_id FROM batch_email_all)) TO {literal(str(root / (changes + '.tmp')))} "
                    "(FORMAT parquet)")
        os.replace(root / (changes + ".tmp"), root / changes)
        active = [p for p in range(parts.count) if p not in late_parts and p in touched_parts]
        counts = None
        if active:
            dropped += _delta(con, root, doc, parts, active, dedupe, st.state_tables(doc))
            counts = _delta_counts(con, st.state_tables(doc), parts)
        for p in parts.each("ingest", progress):
            if p in active:
                _write_part(con, root, doc, p, gen, cutoff, fresh=False, counts=counts,
                            copies=cfg.settings("refresh").sorted_copies)
        if rj.has_rejects(doc):  # a state built before rejects were kept keeps none (run --state reads the files)
            if dropped and found.orders is not None:
                rj.add_dropped(con, found.orders, found.key)
            rj.commit_batch(con, root, doc, gen)
            rj.merge_stats(doc, found.stats)
    finally:
        con.close()
    if dropped:
        rejects.setdefault("orders", {})
        rejects["orders"]["duplicate line"] = rejects["orders"].get("duplicate line", 0) + dropped
        rows_applied["orders"] -= dropped
    doc["ledger"].extend(applied)
    if late_parts:
        _rebuild(cfg, root, doc, sorted(late_parts), gen, cutoff, progress)
    doc["watermark"] = wm.isoformat() if wm else None
    doc["generation"] = gen
    cached = st.cache_generation(root)
    doc["changes"] = [c for c in doc.get("changes", []) if cached is None or c["gen"] > cached] + [
        {"gen": gen, "file": changes, "rebuilt": sorted(late_parts)}]
    st.write_manifest(root, doc)
    st.collect_garbage(root, doc)
    return IngestResult(root, applied, skipped, wm, sorted(late_parts), late_rows, rows_applied, rejects,
                        parts.count)


def _rebuild(cfg: Config, root: Path, doc: dict[str, Any], late: list[int], gen: int,
             cutoff: dt.date | None, progress: Progress | None) -> None:
    """Recompute partitions ``late`` from every batch file of the ledger (the late batch included)."""
    files = _ledger_files(doc, root)
    parts = Partitioning(int(doc["partitions"]))
    if progress:
        progress(f"ingest: rebuilding partition(s) {', '.join(map(str, late))} from {len(doc['ledger'])} batches")
    con = connect(cfg)
    try:
        _validate(con, cfg, files, doc, root)
        for p in late:
            _delta(con, root, doc, parts, [p], False, st.state_tables(doc))
            _write_part(con, root, doc, p, gen, cutoff, fresh=True, copies=cfg.settings("refresh").sorted_copies)
        # the duplicate lines of these partitions' customers, over every batch file
        rj.replace_duplicates(con, root, doc, gen, [parts.bounds(p) for p in late])
    finally:
        con.close()


def state_summary(state: str | Path) -> dict[str, Any]:
    """The manifest of a state without its partition file list (for ``--json``)."""
    doc = st.read_manifest(Path(state))
    if doc is None:
        raise InputError(f"no refresh state in {state}: run `centile ingest --state {state} BATCH...` first")
    return {k: v for k, v in doc.items() if k != "parts"} | {
        "rows": {t: sum(r["rows"] for p in doc["parts"] for r in p["runs"].get(t, [])) for t in st.state_tables(doc)}}


__all__ = ["BATCH_TABLES", "IngestResult", "ingest", "state_summary"]
