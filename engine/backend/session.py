"""A DuckDB connection with the inputs registered, validated and summarised.

Every job starts here: ``open_session(cfg)`` reads the configured tables,
sets invalid rows aside (or fails under ``strict``), fixes ``as_of`` and
exposes the valid rows as views named after the contract's tables.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from centile import urls
from centile.backend import buckets as pieces_mod
from centile.backend import partitions
from centile.backend.buckets import Pieces
from centile.backend.partitions import Partitioning, choose_partitions, plain
from centile.backend.sources import (
    Registered,
    count_rows,
    estimate_rows,
    is_table,
    materialised,
    read_error,
    register_tables,
    reject_key,
    set_aside_duplicates,
    stage_tables,
    staged_view,
)
from centile.config import Config
from centile.contract import CONTRACT
from centile.errors import ConfigError, InputError, ValidationError
from centile.io.sqlfiles import ident, literal
from centile.runtime import Progress, duckdb_connect

log = logging.getLogger(__name__)

#: validates the customer tables elsewhere and writes their pieces (see :func:`open_session`):
#: ``(con, tables, scratch, count, progress) -> (pieces, states, duplicate lines)``
Chunked = Callable[[duckdb.DuckDBPyConnection, dict[str, Registered], Path, int, "Progress | None"],
                   tuple[dict[str, Pieces], dict[str, Any], int]]


@dataclass
class TableSummary:
    """What was read from one table."""

    name: str
    files: list[str]
    #: None in a worker's session over one partition, which counts no rows
    rows_read: int | None
    rows_filtered: int | None
    rows_valid: int | None
    rejects: dict[str, int]
    columns: dict[str, str | None]
    date_min: dt.datetime | None = None
    date_max: dt.datetime | None = None
    customers: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "files": self.files, "rows_read": self.rows_read, "rows_filtered_by_config": self.rows_filtered,
            "rows_valid": self.rows_valid, "rows_rejected": sum(self.rejects.values()),
            "rejects_by_reason": self.rejects, "columns": self.columns,
            "date_min": self.date_min.isoformat() if self.date_min else None,
            "date_max": self.date_max.isoformat() if self.date_max else None,
            "customers": self.customers,
        }


@dataclass
class Session:
    """An open connection plus what was learnt about the inputs."""

    con: duckdb.DuckDBPyConnection
    cfg: Config
    tables: dict[str, Registered]
    as_of: dt.date
    summaries: dict[str, TableSummary] = field(default_factory=dict)
    lines_after_as_of: int = 0
    notes: list[str] = field(default_factory=list)
    unread: list[str] = field(default_factory=list)
    #: the customer-hash partitions of per-customer work
    parts: Partitioning = field(default_factory=Partitioning)
    #: the backend that runs per-partition work (:meth:`map_partitions`); None: this process
    backend: Any = None
    #: the customer tables whose validated rows were written into customer-hash pieces
    #: (:mod:`centile.backend.buckets`): a partition reads only its pieces of them
    pieces: dict[str, Pieces] = field(default_factory=dict)
    #: a scratch folder of this session's own (``[backend] scratch``), removed when it closes
    owned_scratch: Path | None = None
    #: tables registered but not validated here, because the job reads their rows from elsewhere
    #: (``centile run --state``: the refresh state); :meth:`has` answers for them, no view holds them
    elsewhere: dict[str, Registered] = field(default_factory=dict)
    #: per-customer rows the workers kept in the scratch folder, by the frame they make
    #: (``"features"``: :func:`centile.features.compute.compute_features`; see :meth:`map_rows`)
    kept: dict[str, partitions.Kept] = field(default_factory=dict)
    #: the order lines the partition count was chosen from when they were estimated rather than
    #: counted (on a cluster, before the chunk tasks count them; :func:`centile.backend.sources.estimate_rows`)
    lines_estimate: int | None = None

    def has(self, table: str, column: str | None = None) -> bool:
        """Is the table (and the column, if given) present in the inputs?"""
        reg = self.tables.get(table) or self.elsewhere.get(table)
        if reg is None:
            return False
        return column is None or reg.has(column)

    def frame(self, sql: str, params: dict[str, Any] | None = None) -> pl.DataFrame:
        """Run a query and return its result as a Polars DataFrame (texts stored as ``ENUM`` codes,
        the order lines' category and channel in a materialised table, ``sources.CODED``, come back
        as texts, as they do from the files)."""
        df = self.con.sql(sql, params=params or None).pl()
        coded = [n for n, t in df.schema.items() if isinstance(t, pl.Categorical | pl.Enum)]
        return df.with_columns(pl.col(coded).cast(pl.String)) if coded else df

    def close(self) -> None:
        self.con.close()
        if self.owned_scratch is not None:
            shutil.rmtree(self.owned_scratch, ignore_errors=True)
            self.owned_scratch = None

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def partitioning(self) -> Partitioning:
        """The customer-hash partitions for per-customer work on these inputs: ``cfg.partitions``,
        else chosen from the order lines and the memory limit when the inputs were validated."""
        return self.parts

    @contextlib.contextmanager
    def partition(self, parts: Partitioning, part: int, label: str = "") -> Iterator[Session]:
        """Within the block, the contract's views hold the rows of partition ``part`` only
        (tables without customers, e.g. products, whole); restored on exit. ``label`` names the
        work for :data:`centile.backend.partitions.observe`."""
        if parts.count > 1:
            _contract_views(self.con, self, parts.predicate(part), parts.bounds(part))
        try:
            if partitions.observe is not None:
                partitions.observe(label, part, self)
            yield self
        finally:
            if parts.count > 1:
                _contract_views(self.con, self)

    def work_partitions(self) -> Partitioning:
        """The partitions of per-customer work that runs best in one pass in this process (a DuckDB
        query, which spills by itself): the configured count; else, on a backend whose workers
        are elsewhere, the backend's choice (enough to keep every worker busy); else one pass."""
        if self.cfg.partitions:
            return self.parts
        if self.distributed():
            return self.backend.default_partitions(self)
        return Partitioning(1)

    def map_partitions(self, parts: Partitioning, label: str, fn: Callable[..., Any], *args: Any,
                       progress: Progress | None = None, tables: tuple[str, ...] | None = None) -> list[Any]:
        """``fn(view, p, *args)`` for every partition ``p`` in order, ``view`` holding partition ``p``
        only: here, one partition at a time (:func:`map_here`), or on the backend's workers. ``fn``
        must be a module-level function; its arguments and result should be small (mergeable state,
        or the partition's per-customer rows), never order lines. ``tables``: the input tables ``fn``
        reads (a worker validates only those; default: every table of the session; ``()``: none, ``fn``
        works on what an earlier pass left in a scratch folder, and a worker passes ``view=None``)."""
        if self.backend is None:
            return map_here(self, parts, label, fn, *args, progress=progress)
        return self.backend.map_partitions(self, parts, label, fn, *args, progress=progress, tables=tables)

    def map_reduce(self, parts: Partitioning, label: str, fn: Callable[..., Any],
                   merge: Callable[[Any, Any], Any], *args: Any, progress: Progress | None = None,
                   tables: tuple[str, ...] | None = None, finish: Callable[[Any], Any] | None = None) -> Any:
        """``fn`` per partition as in :meth:`map_partitions`, the results folded with ``merge(a, b)``
        (``a`` holding lower partitions than ``b``; it may update and return ``a``): here as each
        partition is done, on a cluster as a tree on the workers, so only the merged state comes
        back. ``merge`` must be associative for that: exact sums, counts, lists in partition order.
        ``finish(state)`` (module-level, or a ``functools.partial`` of one; it returns a new state
        and leaves its argument as it was) is applied to the merged state before it is returned; on a cluster it runs on the worker holding the merged state,
        so what it drops (e.g. pair counts below a global threshold) never reaches the client."""
        if self.backend is None:
            return reduce_here(self, parts, label, fn, merge, *args, progress=progress, finish=finish)
        return self.backend.map_reduce(self, parts, label, fn, merge, *args, progress=progress, tables=tables,
                                       finish=finish)

    def map_rows(self, parts: Partitioning, label: str, fn: Callable[..., Any], *args: Any,
                 progress: Progress | None = None, tables: tuple[str, ...] | None = None
                 ) -> tuple[pl.DataFrame, partitions.Kept | None]:
        """:meth:`map_partitions` of a ``fn`` that returns its partition's per-customer rows (one row
        per ``customer_id``): the rows of every partition in ``customer_id`` order, and, on a cluster,
        where the workers left each partition's rows (a :class:`~centile.backend.partitions.Kept`,
        valid until the session closes: later per-customer tasks read columns of them there instead
        of getting them from this process); None here."""
        if self.backend is None:
            return rows_here(self, parts, label, fn, *args, progress=progress, tables=tables)
        return self.backend.map_rows(self, parts, label, fn, *args, progress=progress, tables=tables)

    def everywhere(self, label: str, fn: Callable[..., Any], merge: Callable[[Any, Any], Any] | None, *args: Any,
                   tables: tuple[str, ...] | None = None) -> Any:
        """``fn(s, *args)`` over every customer, for a figure of the whole customer tables (totals, the
        distinct values of a column) or rows per customer: one call over this session's views here; on
        a cluster one task per partition, folded by ``merge`` on the workers (:meth:`map_reduce`), or,
        without ``merge``, the partitions' frames stacked in partition order (:meth:`map_partitions`:
        sort them), so that this process reads none of the rows the workers validated. ``fn`` must
        be module-level and ``merge`` must make the partitions' results exactly the whole's
        (:func:`add_by_key`, :func:`sorted_union`)."""
        if not self.distributed():
            return fn(self, *args)
        if merge is None:
            return pl.concat(self.map_partitions(self.work_partitions(), label, _call_on_partition, fn, *args,
                                                 tables=tables), how="vertical")
        return self.map_reduce(self.work_partitions(), label, _call_on_partition, merge, fn, *args, tables=tables)

    def distributed(self) -> bool:
        """Does per-partition work leave this process?"""
        return self.backend is not None and self.backend.distributed()

    @property
    def total_rejects(self) -> int:
        return sum(sum(s.rejects.values()) for s in self.summaries.values())


def scratch_folder(cfg: Config, spill: Path | None) -> tuple[Path | None, Path | None]:
    """The folder for a session's scratch files: ``spill`` (beside the output, removed with the
    staging folder), or with ``[backend] scratch`` a fresh folder of its own under that one.
    Returns (folder, the folder the session must remove when it closes, or None).

    The own folder is named after ``spill`` (without its process id) plus this host and process
    (several hosts may share the scratch folder); one that a killed run into the same output on
    this host left behind (its process gone) is removed first.

    Raises
    ------
    OutputError
        The scratch folder cannot be created (names it and the key).
    """
    root = cfg.backend.scratch
    if root is None or spill is None:
        return spill, None
    import socket

    from centile.errors import OutputError

    host = socket.gethostname().replace("-", "_") or "host"
    me = os.getpid()
    name = spill.name.removesuffix(f"-{me}")  # ".<out>.centile-spill": the same for every run into <out>
    base = Path(root)
    for stale in base.glob(f"{name}-{host}-*") if base.is_dir() else ():
        with contextlib.suppress(ValueError, OSError):
            pid = int(stale.name.rsplit("-", 1)[1])
            if pid != me and not _alive(pid):
                shutil.rmtree(stale, ignore_errors=True)
    folder = base / f"{name}-{host}-{me}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"[backend] scratch = {root!r} (or CENTILE_SCRATCH): cannot create {folder} "
                          f"({exc.strerror or exc}); point it to a writable folder (on a cluster, one every "
                          "worker mounts at the same path), or remove the key to use a folder beside --out") from None
    return folder, folder


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _call_on_partition(s: Session, part: int, fn: Callable[..., Any], *args: Any) -> Any:
    return fn(s, *args)


def add_by_key(a: dict[Any, Any], b: dict[Any, Any]) -> dict[Any, Any]:
    """Merge of :meth:`Session.everywhere` for exact sums by key (ints, Decimals, tuples of them):
    ``a`` plus ``b``, key by key (NULL sums, None, count as nothing)."""
    out = dict(a)
    for k, v in b.items():
        out[k] = v if out.get(k) is None else out[k] if v is None else _add(out[k], v)
    return out


def _add(x: Any, y: Any) -> Any:
    if isinstance(x, tuple):
        return tuple(y_ if x_ is None else x_ if y_ is None else x_ + y_ for x_, y_ in zip(x, y, strict=True))
    return x + y


def sorted_union(a: pl.DataFrame, b: pl.DataFrame) -> pl.DataFrame:
    """Merge of :meth:`Session.everywhere` for distinct rows: the distinct rows of both, sorted by
    every column with NULLs last (SQL's ``SELECT DISTINCT ... ORDER BY`` over every customer: text
    sorts by code point in both)."""
    return pl.concat([a, b], how="vertical").unique().sort(a.columns, nulls_last=True)


def map_here(s: Session, parts: Partitioning, label: str, fn: Callable[..., Any], *args: Any,
             progress: Progress | None = None) -> list[Any]:
    """:meth:`Session.map_partitions` in this process: one partition at a time over ``s``."""
    out = []
    args = plain(args)
    for part in parts.each(label, progress):
        with s.partition(parts, part, label):
            out.append(fn(s, part, *args))
    return out


def rows_here(s: Session, parts: Partitioning, label: str, fn: Callable[..., Any], *args: Any,
              progress: Progress | None = None, tables: tuple[str, ...] | None = None) -> tuple[pl.DataFrame, None]:
    """:meth:`Session.map_rows` in this process (through :meth:`Session.map_partitions`): the
    partitions' rows stacked and sorted (one order whatever the partitions: Polars' sort, also for
    a single partition)."""
    frames = s.map_partitions(parts, label, fn, *args, progress=progress, tables=tables)
    return pl.concat(frames, how="vertical").sort("customer_id"), None


@contextlib.contextmanager
def frames_sql(cfg: Config, frames: Mapping[str, pl.DataFrame]) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection in this process over in-memory frames registered under their names, row order
    kept (what every backend's ``local_sql`` gives)."""
    con = connect(cfg, preserve_order=True)
    try:
        for name, df in frames.items():
            con.register(name, df)
        yield con
    finally:
        con.close()


def reduce_here(s: Session, parts: Partitioning, label: str, fn: Callable[..., Any],
                merge: Callable[[Any, Any], Any], *args: Any, progress: Progress | None = None,
                finish: Callable[[Any], Any] | None = None) -> Any:
    """:meth:`Session.map_reduce` in this process: each partition's result merged before the next."""
    acc: Any = None
    args = plain(args)
    for part in parts.each(label, progress):
        with s.partition(parts, part, label):
            r = fn(s, part, *args)
        acc = r if part == 0 else merge(acc, r)
        del r
    return acc if finish is None else finish(acc)


def connect(cfg: Config, *, preserve_order: bool = False, spill: str | Path | None = None
            ) -> duckdb.DuckDBPyConnection:
    """A fresh in-memory DuckDB connection set up for the run (``preserve_order``: results keep
    the row order of their inputs, as evaluating expressions over a frame needs; ``spill``: the
    folder DuckDB spills to beyond its memory limit, created on first use)."""
    con = duckdb_connect()
    if spill is not None:
        con.execute(f"SET temp_directory = {literal(str(Path(spill).resolve()))}")
    con.execute(f"SET preserve_insertion_order = {'true' if preserve_order else 'false'}")
    # zoned timestamps become UTC wall-clock times whatever the machine's TZ (naive ones stay as they are)
    con.execute("SET TimeZone = 'UTC'")
    if cfg.threads:
        con.execute(f"SET threads = {int(cfg.threads)}")
    if cfg.memory_limit:
        share = partitions.duckdb_memory(cfg.memory_limit)
        if share is None:
            raise InputError(f"memory_limit {cfg.memory_limit!r} is not a size; use e.g. '8GB' or '512MiB'")
        con.execute(f"SET memory_limit = '{share}B'")
    return con


def _first_reject(con: duckdb.DuckDBPyConnection, table: str) -> str:
    rows = con.execute(
        f"SELECT reject_reason, __centile_file, __record FROM {ident(table + '_rejects')} LIMIT 1").fetchall()
    return f"first: {rows[0][0]} in {rows[0][1]}: {rows[0][2]}" if rows else ""


def _contract_views(con: duckdb.DuckDBPyConnection, s: Session, where: str = "true",
                    buckets: tuple[int, int] | None = None) -> None:
    """The valid rows of every present table under its contract name, the customers' rows
    limited to ``where`` (a partition's predicate over ``customer_id``; ``true``: all), which is
    the bucket range ``buckets``: a table written into pieces reads only the pieces of that range."""
    for name, spec in CONTRACT.items():
        if name == "orders" or name not in s.tables:
            continue
        if name in s.pieces and buckets is not None:
            con.execute(f"CREATE OR REPLACE TEMP VIEW {ident(name)} AS {s.pieces[name].select(buckets)}")
            continue
        cond = where if "customer_id" in spec else "true"
        con.execute(f"CREATE OR REPLACE TEMP VIEW {ident(name)} AS "
                    f"SELECT * FROM {ident(name + '_valid')} WHERE {cond}")
    if "orders" not in s.tables:  # read from elsewhere (Session.elsewhere): no view
        return
    if "orders" in s.pieces and buckets is not None:
        _orders_view(con, s, "true", f"({s.pieces['orders'].select(buckets)})")
    else:
        _orders_view(con, s, where)


def _orders_view(con: duckdb.DuckDBPyConnection, s: Session, where: str = "true",
                 source: str = "orders_valid") -> None:
    """The valid order lines before as_of, with the contract's defaults applied."""
    reg = s.tables["orders"]
    order_id = "order_id" if reg.has("order_id") else "CAST(order_ts AS DATE)"
    # products.category is joined only into order_categories (read by feat_category.sql),
    # never here: this view is scanned by every feature query
    con.execute(f"""
        CREATE OR REPLACE TEMP VIEW orders AS
        SELECT customer_id, {order_id} AS order_id, order_ts,
               coalesce(quantity, 1.0) AS quantity, unit_price, product_id, category, unit_cost,
               coalesce(returned_quantity, 0.0) AS returned_quantity, channel
        FROM {source} AS orders_valid
        WHERE order_ts < TIMESTAMP '{s.as_of.isoformat()}' AND {where}
    """)
    # the line's own category wins; products.category only when the lines have no category column
    if not reg.has("category") and s.has("products", "category") and reg.has("product_id"):
        con.execute("CREATE OR REPLACE TEMP VIEW order_categories AS "
                    "SELECT o.* REPLACE (p.category AS category) FROM orders AS o "
                    "LEFT JOIN products AS p USING (product_id)")
    else:
        con.execute("CREATE OR REPLACE TEMP VIEW order_categories AS SELECT * FROM orders")


def _empty_view(con: duckdb.DuckDBPyConnection, table: str, id_types: dict[str, str]) -> None:
    cols = []
    for col, (family, _req) in CONTRACT[table].items():
        t = {"id": id_types["id"], "product": id_types["product"], "key": "VARCHAR",
             "timestamp": "TIMESTAMP", "double": "DOUBLE", "integer": "INTEGER"}.get(family, "VARCHAR")
        cols.append(f"CAST(NULL AS {t}) AS {ident(col)}")
    con.execute(f"CREATE OR REPLACE TEMP VIEW {ident(table)} AS SELECT {', '.join(cols)} WHERE false")


def open_session(cfg: Config, progress: Progress | None = None, only: tuple[str, ...] | None = None,
                 readable: tuple[str | Path, ...] = (), restrict: bool = True,
                 spill: str | Path | None = None, buckets: tuple[int, int] | None = None,
                 cache: str | Path | None = None, bucket: str | Path | None = None, bucket_min: int = 0,
                 pieces: Mapping[str, Pieces] | None = None, chunked: Chunked | None = None,
                 elsewhere: tuple[str, ...] = ()) -> Session:
    """Register, validate and summarise the inputs of ``cfg``.

    ``only`` limits validation to the tables a job reads (every table's
    columns are still checked); the others are listed in ``Session.unread``.
    Once the inputs are registered, the connection may read only the inputs'
    folders, ``readable`` and DuckDB's own temporary folder, and write nowhere:
    SQL from a config cannot reach other files (``restrict=False`` leaves the
    connection unrestricted: ``centile sql``, a console over the user's own data). ``spill``:
    the folder DuckDB spills to beyond its memory limit (default: DuckDB's own ``.tmp``).
    ``buckets``: the hash-bucket range ``[lo, hi)`` of one partition: only those customers' rows
    are validated and kept (the filter runs while the files are read), so a worker holds one
    partition; ``cfg.as_of`` must then be set (the whole data's as_of) and a partition without
    valid order lines is not an error. ``cache`` (with ``buckets``): a folder where the partition's
    validated rows of each table are kept for the next session over the same partition (a later
    stage on a cluster), so only the first reads and validates the input files. ``bucket``: a
    scratch folder where, once validated, the customer tables' rows are written into customer-hash
    pieces (:mod:`centile.backend.buckets`; see :func:`bucketing`) for at least ``bucket_min``
    partitions, which partitions then read instead of filtering the whole tables. ``pieces`` (with
    ``buckets``): the pieces a client wrote; the partition's rows of those tables are read from its
    pieces, not from the input files (their rows are validated and their duplicates set aside).
    ``chunked`` (with ``bucket``, when every customer table goes into pieces): a function that
    validates the customer tables and writes their pieces elsewhere (on a cluster's workers,
    :mod:`centile.backend.chunks`) and returns the pieces, each table's summary state and the
    duplicate lines; this process then validates only the other tables. ``elsewhere``: tables whose
    rows the job reads from elsewhere (the refresh state of ``centile run --state``): registered,
    their columns known to :meth:`Session.has`, but not validated, and no view holds them; the
    partition count is still chosen from the order lines' count, and ``cfg.as_of`` must be set when
    they include the orders.

    Raises
    ------
    InputError
        A file cannot be read or a required column is missing.
    ValidationError
        ``cfg.strict`` is set and some rows break the data contract.
    """
    if "orders" not in cfg.tables:
        raise ConfigError("no orders table: every stage but a contact plan from [steering] proposals reads "
                          "orders; put orders.parquet, orders/ or orders.csv in the data folder, set "
                          "[tables.orders] path, or run `centile steer` alone")
    con = connect(cfg, spill=spill)
    try:
        paths = [p for spec in cfg.tables.values() for p in spec.paths]
        remote = urls.register(con, paths)  # inputs named by fsspec URLs: read through their filesystems
        # rows are counted only where this process needs the count: the tables it validates itself
        # (their summary) and the order lines that choose the partition count; the customer tables
        # that the chunk tasks validate are counted by them, and a worker's session over one
        # partition counts nothing (its partitions are the client's)
        tables, id_types = register_tables(con, cfg, progress, count=False)
        away = {n: r for n, r in tables.items() if n in elsewhere}
        unread = [t for t in tables if only is not None and t not in only and t not in away]
        tables = {n: r for n, r in tables.items() if n not in unread and n not in away}
        # on a cluster the customer tables go to the chunk tasks whenever there is more than one piece
        # (bucketing: "all"), which is known before the partition count when at least bucket_min > 1
        chunking = (chunked is not None and bucket is not None and buckets is None and cfg.backend.buckets != "off"
                    and (cfg.partitions or bucket_min) > 1)
        if buckets is None:
            tables = {n: r if chunking and "customer_id" in r.columns else count_rows(con, r)
                      for n, r in tables.items()}
        orders = tables.get("orders") or away.get("orders")
        estimated = None
        if orders is None or buckets is not None or cfg.partitions:
            lines = 0  # no order lines, a worker's partition, or a configured count: not needed
        elif orders.rows_after_filter is None and orders.spec.name in tables:
            # the chunk tasks count them: the partition count comes from an estimate (outputs are the
            # same bytes for any count), said so in the summary, never reported as the count
            lines = estimated = estimate_rows(con, orders)
            log.info("orders: about %d order lines (estimated from the files' sizes and first rows)", lines)
        else:
            if orders.rows_after_filter is None:
                away["orders"] = orders = count_rows(con, orders)
            lines = orders.rows_after_filter or 0
        parts = Partitioning(choose_partitions(cfg.partitions, cfg.memory_limit, lines))
        given = {n: p for n, p in (pieces or {}).items() if n in tables} if buckets is not None else {}
        if given:
            _stage_pieces(con, tables, given, buckets, Path(cache) if cache is not None else None)  # type: ignore[arg-type]
        count = parts.count if cfg.partitions else max(parts.count, bucket_min)
        which = bucketing(cfg, count, bucket_min > 0) if bucket is not None and buckets is None else None
        elsewhere = {n: r for n, r in tables.items() if "customer_id" in r.columns} \
            if chunked is not None and which == "all" else {}
        if chunking != bool(elsewhere):  # pragma: no cover - bucketing and chunking disagree
            raise RuntimeError("the tables the chunk tasks validate were not known before the partition count")
        rest = {n: r for n, r in tables.items() if n not in given and n not in elsewhere}
        if buckets is not None and cache is not None:
            duplicates = _stage_cached(con, rest, progress, buckets, Path(cache))
        else:
            stage_tables(con, rest, progress, buckets, budget=partitions.duckdb_memory(cfg.memory_limit))
            duplicates = set_aside_duplicates(con, rest["orders"]) if "orders" in rest else 0
        written: dict[str, Pieces] = {}
        known: dict[str, Any] = {}
        if elsewhere:
            for reg in elsewhere.values():
                staged_view(con, reg)  # the schema of the pieces; no row is read here
            written, known, more = chunked(con, elsewhere, Path(bucket), count, progress)  # type: ignore[arg-type,misc]
            duplicates += more
            for name, st in known.items():  # the rows the chunk tasks read and kept, exact
                tables[name] = replace(tables[name], rows_in_files=st.read, rows_after_filter=st.rows)
            for name, p in written.items():
                con.execute(f"CREATE OR REPLACE TEMP VIEW {ident(name + '_staged')} AS {p.select(rejects=None)}")
                con.execute(f"CREATE OR REPLACE TEMP VIEW {ident(name + '_rejects')} AS "
                            f"{_rejects_select(tables[name], name + '_staged')}")
                con.execute(f"CREATE OR REPLACE TEMP VIEW {ident(name + '_valid')} AS {p.select()}")
        elif which is not None:
            written = _write_pieces(con, tables, Path(bucket), count, progress, views_only=which == "views")
        session = _finish(con, cfg, tables, id_types, unread, partial=buckets is not None, known=known,
                          elsewhere=away)
        session.parts = parts
        session.pieces = written
        session.lines_estimate = estimated
        if duplicates and tables["orders"].spec.duplicates == "keep":
            session.notes.append(f"orders: {duplicates} exact duplicate lines kept and counted "
                                 "([tables.orders] duplicates = \"keep\")")
        if restrict:
            inputs = [Path(p) for p in paths if not urls.is_url(p)]
            folders = [Path(p.folder) for p in (*written.values(), *given.values())]
            restrict_files(con, input_folders(inputs) + list(readable) + folders,
                           prefixes=remote)
        return session
    except BaseException:
        con.close()
        raise


def bucketing(cfg: Config, count: int, distributed: bool) -> str | None:
    """Which customer tables are written into ``count`` customer-hash pieces once validated: None (no
    pieces: every partition filters the whole tables by the hash), ``"all"``, or ``"views"`` (only
    the tables that stay views over the input files, which each partition would decode and validate
    again). ``[backend] buckets``: ``off`` never; ``on`` all whenever ``count > 1``; ``auto``
    (measured at 1M customers, see the README's "Partitioned execution"): all on a cluster (each
    partition's first task would read every input file), the views in this process (filtering a
    table held in memory by the hash costs no more than reading pieces of it)."""
    mode = cfg.backend.buckets
    if mode == "off" or count <= 1:
        return None
    return "all" if mode == "on" or distributed else "views"


def _write_pieces(con: duckdb.DuckDBPyConnection, tables: dict[str, Registered], scratch: Path, count: int,
                  progress: Progress | None, *, views_only: bool = False) -> dict[str, Pieces]:
    """Write every validated customer table into ``count`` pieces under ``scratch`` (one pass over its
    rows), then point its ``<t>_valid`` (and, for a view over the input files, ``<t>_staged`` and
    ``<t>_rejects`` too) at the pieces. A temporary table is dropped once written (its rejects stay);
    a view over the input files is written with its rejected rows, so the summary and the rejects are
    read from the pieces and the input files are decoded once."""
    out: dict[str, Pieces] = {}
    for name, reg in tables.items():
        table = is_table(con, name + "_valid")
        if "customer_id" not in reg.columns or (views_only and table):
            continue
        if progress:
            progress(f"writing {name} into {count} customer-hash pieces")
        p = pieces_mod.write_pieces(con, name, list(reg.columns), pieces_mod.pieces_folder(scratch, name),
                                    count, with_rejects=not table)
        if table:
            con.execute(f"DROP TABLE {ident(name + '_valid')}")
        else:
            con.execute(f"CREATE OR REPLACE TEMP VIEW {ident(name + '_staged')} AS {p.select(rejects=None)}")
            con.execute(f"CREATE OR REPLACE TEMP VIEW {ident(name + '_rejects')} AS "
                        f"{_rejects_select(reg, name + '_staged')}")
        con.execute(f"CREATE OR REPLACE TEMP VIEW {ident(name + '_valid')} AS {p.select()}")
        out[name] = p
    return out


def _rejects_select(reg: Registered, staged: str) -> str:
    """``<t>_rejects`` over the rows of ``staged`` (as :func:`centile.backend.sources.stage_tables`)."""
    key = reject_key(reg)
    return (f"SELECT reject_reason, __centile_file, __record, {ident(key)} AS __key "  # type: ignore[arg-type]
            f"FROM {ident(staged)} WHERE reject_reason IS NOT NULL")


def _stage_pieces(con: duckdb.DuckDBPyConnection, tables: dict[str, Registered], given: Mapping[str, Pieces],
                  buckets: tuple[int, int], cache: Path | None = None) -> None:
    """``<t>_staged``, ``<t>_valid`` and ``<t>_rejects`` of one partition for the tables in ``given``,
    read from the partition's pieces only (validated, duplicates set aside by the client): temporary
    tables where :func:`materialised` says so, else views over the piece files. With a ``cache``
    folder (a worker's tasks), the first task over the partition copies them from the pieces into a
    DuckDB file there and every task reads that file in place (:func:`_copy_cached`): the pieces are
    decoded once per partition, not once per task of every step."""
    for name, p in given.items():
        reg = tables[name]
        con.execute(f"CREATE OR REPLACE TEMP VIEW {ident(name + '_staged')} AS {p.select(buckets, rejects=None)}")
        f = cache / f"{name}-{buckets[0]}-{buckets[1]}.duckdb" if cache is not None else None
        kind = "VIEW" if f is not None or not materialised(reg) else "TABLE"
        if f is None or not f.exists():
            con.execute(f"CREATE OR REPLACE TEMP {kind} {ident(name + '_valid')} AS {p.select(buckets)}")
            con.execute(f"CREATE OR REPLACE TEMP {kind} {ident(name + '_rejects')} AS "
                        f"{_rejects_select(reg, name + '_staged')}")
        if f is None:
            continue
        if not f.exists():
            cache.mkdir(exist_ok=True)  # type: ignore[union-attr]
            tmp = f.with_name(f"{f.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
            _copy_cached(con, tmp, name, save=True)
            place_once(tmp, f)  # whole or absent (a retried task, or another step's, writes the same rows)
            for t in (name + "_valid", name + "_rejects"):
                con.execute(f"DROP VIEW IF EXISTS {ident(t)}")
        _copy_cached(con, f, name, save=False)


def place_once(tmp: Path, f: Path) -> None:
    """Give the finished file ``tmp`` the name ``f`` unless ``f`` exists: then another task over the
    same partition (a retry, or another step's task at the same time) placed the same rows first,
    and its file stays, since readers may hold it open (a file replaced under an open handle reads
    on as the old one on a local disk, but an NFS client may answer "stale file handle"). A hard
    link creates the name only if it is free; a file system without hard links gets a rename."""
    try:
        os.link(tmp, f)
    except FileExistsError:
        pass
    except OSError:  # no hard links on this file system
        os.replace(tmp, f)
        return
    with contextlib.suppress(OSError):
        os.unlink(tmp)


def _stage_cached(con: duckdb.DuckDBPyConnection, tables: dict[str, Registered], progress: Progress | None,
                  buckets: tuple[int, int], cache: Path) -> int:
    """``<t>_valid`` and ``<t>_rejects`` of one partition for every table: copied from ``cache`` when
    an earlier session over the same buckets left them there (a DuckDB file: every type kept
    exactly), else validated from the input files and then left there. Returns the duplicate lines
    set aside. The folder's parent must exist: a task still running after its run failed and
    removed its scratch folder must not create it again beside the output."""
    cache.mkdir(exist_ok=True)
    todo = {}
    for name, reg in tables.items():
        f = cache / f"{name}-{buckets[0]}-{buckets[1]}.duckdb"
        if f.exists():
            _copy_cached(con, f, name, save=False)
        else:
            todo[name] = reg
    stage_tables(con, todo, progress, buckets)
    duplicates = set_aside_duplicates(con, todo["orders"]) if "orders" in todo else 0
    for name in todo:
        f = cache / f"{name}-{buckets[0]}-{buckets[1]}.duckdb"
        tmp = f.with_name(f"{f.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
        _copy_cached(con, tmp, name, save=True)
        place_once(tmp, f)  # whole or absent: a task that dies while writing leaves no half file
        if not materialised(todo[name]):  # a view over the files: from now on the copy just made
            for t in (name + "_valid", name + "_rejects"):
                con.execute(f"DROP VIEW IF EXISTS {ident(t)}")
            _copy_cached(con, f, name, save=False)
    return duplicates


def input_folders(paths: list[Path]) -> list[Path]:
    """The folders a connection must be allowed to read for the local input ``paths`` (files or
    folders): each folder (a file's own), and where a file is a symbolic link, or a folder holds
    some, the folders they point into (DuckDB checks the link's target against
    ``allowed_directories``)."""
    out: list[Path] = []
    for p in paths:
        out.append(p if p.is_dir() else p.parent)
        links = [f for f in p.rglob("*") if f.is_symlink()] if p.is_dir() else [p] if p.is_symlink() else []
        out.extend(t if t.is_dir() else t.parent for t in (f.resolve() for f in links))
    return out


def restrict_files(con: duckdb.DuckDBPyConnection, readable: list[str | Path],
                   prefixes: list[str] | tuple[str, ...] = ()) -> None:
    """Limit the connection's file access to ``readable`` folders, the URL ``prefixes`` (of
    registered fsspec filesystems) and DuckDB's temporary folder, for the rest of its life
    (``lock_configuration``)."""
    temp = Path(str(con.execute("SELECT current_setting('temp_directory')").fetchone()[0] or ".tmp"))
    dirs = sorted({str(Path(d).resolve()) for d in [*readable, temp]} | set(prefixes))
    con.execute(f"SET allowed_directories = [{', '.join(literal(d) for d in dirs)}]")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


#: the time column of the tables whose summary has dates and customers (orders have their own)
TIME_COLUMN = {"email_events": "ts", "contacts": "sent_ts", "touchpoints": "ts"}


def _copy_cached(con: duckdb.DuckDBPyConnection, f: Path, name: str, *, save: bool) -> None:
    """``<name>_valid`` and ``<name>_rejects`` into the cache file ``f`` (``save``), or read from it:
    the file stays attached (read-only) for the session's life and the two are views of its tables,
    which are DuckDB tables already (copying them into temp tables cost each task of a partition
    about 0.1 s per table at 75k customers; :func:`~centile.backend.sources.is_table` counts them
    as tables, so they are read as materialised ones)."""
    if not save:
        alias = ident(f"__centile_cache_{name}")
        con.execute(f"ATTACH {literal(str(f))} AS {alias} (READ_ONLY)")
        for t in (ident(name + "_valid"), ident(name + "_rejects")):
            con.execute(f"CREATE OR REPLACE TEMP VIEW {t} AS SELECT * FROM {alias}.{t}")
        return
    con.execute(f"ATTACH {literal(str(f))} AS __centile_cache")
    try:
        for t in (ident(name + "_valid"), ident(name + "_rejects")):
            con.execute(f"CREATE TABLE __centile_cache.{t} AS SELECT * FROM {t}")
    finally:
        con.execute("DETACH __centile_cache")


def _finish(con: duckdb.DuckDBPyConnection, cfg: Config, tables: dict[str, Registered],
            id_types: dict[str, str], unread: list[str], partial: bool = False,
            known: Mapping[str, Any] | None = None, elsewhere: Mapping[str, Registered] | None = None) -> Session:
    """The summary, the ``rejects`` view, as_of and the contract's views. ``known``: per table, its
    summary state counted elsewhere (a :class:`centile.backend.chunks.TableState`: rejects by
    reason, the valid rows' first and last time, customers, late order lines), not scanned here."""
    known = known or {}
    rejects_sql = []
    summaries: dict[str, TableSummary] = {}
    valid_stats: dict[str, tuple[Any, ...]] = {}
    # the order lines' dates, customers and lines on or after a configured as_of (the default as_of,
    # the day after the newest line, leaves none): with the reject counts when the lines are a view
    after = "CAST($a AS TIMESTAMP)" if cfg.as_of else "NULL"
    late_sql = f"count(*) FILTER (WHERE order_ts >= {after})"
    late_params = {"a": cfg.as_of} if cfg.as_of else None
    orders_stats: tuple[Any, ...] | None = None
    for name, reg in tables.items():
        tcol = TIME_COLUMN.get(name)
        if name in known:
            st = known[name]
            counts = dict(sorted(st.counts.items(), key=lambda kv: (-kv[1], kv[0])))
            if name == "orders":
                orders_stats = (st.first, st.last, st.customers, st.late)
            elif tcol is not None:
                valid_stats[name] = (st.first, st.last, st.customers)
        elif name == "orders" and not is_table(con, "orders_rejects"):
            # a view over the files (too large to materialise): one scan for the reject counts and the
            # valid lines' summary; no duplicates were set aside (they would have made it a table)
            try:
                rows = con.execute(
                    f"SELECT reject_reason, count(*), min(order_ts), max(order_ts), count(DISTINCT customer_id), "
                    f"{late_sql} FROM orders_staged GROUP BY 1 ORDER BY 2 DESC", late_params).fetchall()
            except duckdb.InvalidInputException as exc:
                raise read_error(reg.spec, exc) from None
            counts = {r[0]: r[1] for r in rows if r[0] is not None}
            orders_stats = next((r[2:] for r in rows if r[0] is None), (None, None, 0, 0))
        elif tcol is None or is_table(con, name + "_rejects"):  # materialised, or from a worker's cache
            counts = dict(con.execute(
                f"SELECT reject_reason, count(*) FROM {ident(name + '_rejects')} GROUP BY 1 ORDER BY 2 DESC").fetchall())
            if tcol is not None:
                valid_stats[name] = con.execute(
                    f"SELECT min({tcol}), max({tcol}), count(DISTINCT customer_id) "
                    f"FROM {ident(name + '_valid')}").fetchall()[0]
        else:
            # one scan for the reject counts and the valid rows' dates and customers
            # (e-mail events are a view over the files: each scan decodes them again)
            try:
                rows = con.execute(
                    f"SELECT reject_reason, count(*), min({tcol}), max({tcol}), count(DISTINCT customer_id) "
                    f"FROM {ident(name + '_staged')} GROUP BY 1 ORDER BY 2 DESC").fetchall()
            except duckdb.InvalidInputException as exc:
                raise read_error(reg.spec, exc) from None
            counts = {r[0]: r[1] for r in rows if r[0] is not None}
            valid_stats[name] = next((r[2:] for r in rows if r[0] is None), (None, None, 0))
        if reg.rows_after_filter is None or reg.rows_in_files is None:  # a worker's partition: not counted
            read = filtered = valid = None
        else:
            read, filtered = reg.rows_in_files, reg.rows_in_files - reg.rows_after_filter
            valid = reg.rows_after_filter - sum(counts.values())
        summaries[name] = TableSummary(
            name, list(reg.spec.paths), read, filtered, valid, {k: int(v) for k, v in counts.items()},
            {c: col.source for c, col in reg.columns.items()})
        if counts:  # a table without rejects is not scanned again for them
            rejects_sql.append(
                f"SELECT '{name}' AS \"table\", reject_reason AS reason, __centile_file AS file, "
                f"CAST(__key AS VARCHAR) AS key, __record AS record FROM {ident(name + '_rejects')}")
    rejects_sql = rejects_sql or ["SELECT NULL::VARCHAR AS \"table\", NULL::VARCHAR AS reason, NULL::VARCHAR AS file, "
                                  "NULL::VARCHAR AS key, NULL::VARCHAR AS record WHERE false"]
    con.execute("CREATE OR REPLACE TEMP VIEW rejects AS " + " UNION ALL ".join(rejects_sql))

    if cfg.strict:
        bad = {n: s for n, s in summaries.items() if s.rejects}
        if bad:
            parts = []
            for n, s in bad.items():
                reasons = ", ".join(f"{v} × {k}" for k, v in s.rejects.items())
                parts.append(f"{n}: {sum(s.rejects.values())} invalid rows ({reasons}); {_first_reject(con, n)}")
            raise ValidationError("--strict: input rows break the data contract:\n  " + "\n  ".join(parts)
                                  + "\nFix the data, map the columns differently, or run without --strict "
                                  "to set these rows aside into rejects.parquet.")

    if (partial or "orders" not in tables) and cfg.as_of is None:
        raise ValueError("a session over one partition, or without the order lines, needs the whole data's "
                         "as_of in cfg.as_of")
    # one scan for the dates, the customers and the lines on or after a configured as_of
    first, newest, customers, late = orders_stats or ((None, None, 0, 0) if "orders" not in tables else con.execute(
        f"SELECT min(order_ts), max(order_ts), count(DISTINCT customer_id), {late_sql} FROM orders_valid",
        late_params).fetchall()[0])
    if newest is None and not partial and "orders" in tables:
        raise InputError(f"orders: no valid order lines in {tables['orders'].files} "
                         f"({summaries['orders'].rows_read} rows read, "
                         f"{sum(summaries['orders'].rejects.values())} rejected"
                         f"{'; ' + _first_reject(con, 'orders') if summaries['orders'].rejects else ''})")
    as_of = cfg.as_of or (newest.date() + dt.timedelta(days=1))  # type: ignore[union-attr]

    # the valid rows under the contract's table names, empty typed views for absent tables
    s = Session(con, cfg, tables, as_of, summaries, unread=unread, elsewhere=dict(elsewhere or {}))
    for name in CONTRACT:
        if name not in tables and name not in s.unread and name not in s.elsewhere:
            _empty_view(con, name, id_types)
    _contract_views(con, s)

    if "orders" in summaries:
        o = summaries["orders"]
        o.date_min, o.date_max, o.customers, s.lines_after_as_of = first, newest, int(customers), int(late)
    if s.lines_after_as_of:
        s.notes.append(f"orders: {s.lines_after_as_of} valid lines on or after as_of {as_of} are outside "
                       "every window and not used")
    for name, r in valid_stats.items():
        summaries[name].date_min, summaries[name].date_max, summaries[name].customers = r[0], r[1], int(r[2])
    if "customers" in summaries:
        summaries["customers"].customers = summaries["customers"].rows_valid
    for name, summ in summaries.items():
        if summ.rejects:
            log.warning("%s: %d rows set aside into rejects (%s)", name, sum(summ.rejects.values()),
                        ", ".join(f"{v} × {k}" for k, v in summ.rejects.items()))
    return s
