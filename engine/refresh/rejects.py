"""The rejected rows and the validation counts of a refresh state's batches.

An ingest validates each batch by the session's rules; what it sets aside is kept in the state
(``rejects/<gen>.parquet``: table, reason, file, key, record, as ``rejects.parquet`` has them, plus
the customer's hash bucket), and the counts a run's validation summary reports (rows read, rows
left out by a ``filter``, the valid rows' first and last time) are kept in the manifest
(``inputs``). So ``centile run --state`` writes the orders' and e-mail events' part of
``rejects.parquet`` and of the validation summary from the state, equal to what a session over
every batch file finds:

* a rejected row is rejected by its own values: the batch's session finds it as every session does;
* a duplicate line is an exact copy of a line applied before. Within a batch the batch's session
  sets it aside; a copy of a line of an earlier batch is set aside by the line hashes
  (:func:`centile.refresh.ingest._delta`), and its record is read back from the batch's valid
  lines. A full read names every file of the table as a duplicate's file: the state keeps no file
  for them and the reader names the ledger's (:func:`files_label`);
* late rows rebuild their partitions from every batch file: the duplicates of those partitions'
  customers are replaced by the ones the rebuild's session finds over all the files.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import duckdb

from centile.backend.partitions import bucket_sql
from centile.backend.session import TIME_COLUMN, TableSummary
from centile.backend.sources import Registered, duplicate_record, files_label
from centile.io.sqlfiles import ident, literal

#: the folder of the state's reject files
FOLDER = "rejects"

DUPLICATE = "duplicate line"

#: the columns of a reject file (``bucket``: the customer's hash bucket, for a rebuild)
COLUMNS = ('"table"', "reason", "file", "key", "record", "bucket")

_EMPTY = ('SELECT NULL::VARCHAR AS "table", NULL::VARCHAR AS reason, NULL::VARCHAR AS file, NULL::VARCHAR AS key, '
          "NULL::VARCHAR AS record, NULL::INTEGER AS bucket WHERE false")


def has_rejects(doc: dict[str, Any]) -> bool:
    """Whether state ``doc`` keeps its batches' rejects (a state built before it does not)."""
    return "rejects" in doc


def collect_batch(con: duckdb.DuckDBPyConnection, tables: dict[str, Registered], batch_tables: Iterable[str]) -> None:
    """The batch's rejected rows of ``batch_tables`` into the temp table ``batch_rejects``
    (a duplicate's file left NULL), and an empty ``batch_dropped`` for the lines the hashes set aside."""
    selects = [
        f"SELECT '{name}' AS \"table\", reject_reason AS reason, "
        f"CASE WHEN reject_reason = '{DUPLICATE}' THEN NULL ELSE __centile_file END AS file, "
        f"CAST(__key AS VARCHAR) AS key, __record AS record, {bucket_sql('__key')} AS bucket "
        f"FROM {ident(name + '_rejects')}" for name in batch_tables if name in tables]
    con.execute("CREATE OR REPLACE TEMP TABLE batch_rejects AS " + (" UNION ALL ".join(selects) or _EMPTY))
    con.execute("CREATE OR REPLACE TEMP TABLE batch_dropped (customer_id VARCHAR, h UBIGINT)")


def batch_stats(con: duckdb.DuckDBPyConnection, tables: dict[str, Registered],
                batch_tables: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Per batch table: rows read, rows a ``filter`` left out, the mapped columns' sources, and the
    valid rows' first and last time (before any line is set aside as a copy of an earlier batch's:
    a copy has the same time)."""
    out = {}
    for name in batch_tables:
        reg = tables.get(name)
        if reg is None:
            continue
        tcol = "order_ts" if name == "orders" else TIME_COLUMN[name]
        first, last = con.execute(f"SELECT min({tcol}), max({tcol}) FROM {ident(name + '_valid')}").fetchall()[0]
        out[name] = {"rows_read": reg.rows_in_files, "rows_filtered": reg.rows_in_files - reg.rows_after_filter,
                     "first": first.isoformat() if first else None, "last": last.isoformat() if last else None,
                     "columns": {c: col.source for c, col in reg.columns.items()}}
    return out


def note_dropped(con: duckdb.DuckDBPyConnection, relation: str) -> None:
    """Remember the lines of ``relation`` (columns customer_id, __h) set aside as copies of earlier
    batches' lines."""
    con.execute(f"INSERT INTO batch_dropped SELECT CAST(customer_id AS VARCHAR), __h FROM {relation}")


def add_dropped(con: duckdb.DuckDBPyConnection, reg: Registered, key: str) -> None:
    """The duplicate-line rejects of the lines in ``batch_dropped``: one per line set aside, with the
    record of its valid line (``key``: the SQL of the line hash the ingest compared)."""
    con.execute(f"""
        INSERT INTO batch_rejects
        SELECT 'orders', '{DUPLICATE}', NULL, CAST(v.customer_id AS VARCHAR), v.record, v.bucket
        FROM batch_dropped AS d
        JOIN (SELECT DISTINCT customer_id, hash({key}) AS h, {duplicate_record(reg)} AS record,
                     {bucket_sql()} AS bucket
              FROM orders_valid
              WHERE hash({key}) IN (SELECT h FROM batch_dropped)) AS v
          ON CAST(v.customer_id AS VARCHAR) = d.customer_id AND v.h = d.h""")


def merge_stats(doc: dict[str, Any], stats: dict[str, dict[str, Any]]) -> None:
    """Add a batch's counts to the manifest's ``inputs`` (sums, first and last)."""
    inputs = doc.setdefault("inputs", {})
    for name, new in stats.items():
        have = inputs.get(name)
        if have is None:
            inputs[name] = dict(new)
            continue
        have["rows_read"] += new["rows_read"]
        have["rows_filtered"] += new["rows_filtered"]
        for k, pick in (("first", min), ("last", max)):
            vals = [v for v in (have[k], new[k]) if v is not None]
            have[k] = pick(vals) if vals else None


def _write(con: duckdb.DuckDBPyConnection, root: Path, name: str, sql: str) -> dict[str, Any]:
    (root / FOLDER).mkdir(exist_ok=True)
    path = root / FOLDER / name
    tmp = path.with_name(name + ".tmp")
    con.execute(f"COPY ({sql}) TO {literal(str(tmp))} (FORMAT parquet, COMPRESSION zstd)")
    rows = con.execute(f"SELECT count(*) FROM read_parquet({literal(str(tmp))})").fetchone()[0]
    os.replace(tmp, path)
    return {"file": f"{FOLDER}/{name}", "rows": int(rows)}


def commit_batch(con: duckdb.DuckDBPyConnection, root: Path, doc: dict[str, Any], gen: int) -> None:
    """Write ``batch_rejects`` as the state's reject file of generation ``gen`` (none when empty);
    the manifest, written later, points at it."""
    files = doc.setdefault("rejects", [])
    if con.execute("SELECT count(*) FROM batch_rejects").fetchone()[0]:
        files.append({"gen": gen, **_write(con, root, f"{gen:06d}.parquet", "SELECT * FROM batch_rejects")})


def replace_duplicates(con: duckdb.DuckDBPyConnection, root: Path, doc: dict[str, Any], gen: int,
                       ranges: list[tuple[int, int]]) -> None:
    """After a rebuild of the bucket ``ranges`` from every batch file (``batch_rejects`` holds that
    read's rejects): their customers' duplicate lines are the rebuild's, everything else stays. The
    state's reject files become one file."""
    if not has_rejects(doc):
        return
    inside = " OR ".join(f"(bucket >= {lo} AND bucket < {hi})" for lo, hi in ranges) or "false"
    old = [root / f["file"] for f in doc["rejects"]]
    kept = (f"SELECT * FROM read_parquet([{', '.join(literal(str(p)) for p in old)}]) "
            f"WHERE NOT (reason = '{DUPLICATE}' AND \"table\" = 'orders' AND ({inside}))" if old else _EMPTY)
    new = f"SELECT * FROM batch_rejects WHERE reason = '{DUPLICATE}' AND \"table\" = 'orders' AND ({inside})"
    sql = f"SELECT * FROM ({kept}) UNION ALL {new}"
    doc["rejects"] = [{"gen": gen, **_write(con, root, f"{gen:06d}-rebuilt.parquet", sql)}]
    if not doc["rejects"][0]["rows"]:
        (root / doc["rejects"][0]["file"]).unlink()
        doc["rejects"] = []


def files_of(doc: dict[str, Any]) -> set[str]:
    """The reject files the manifest points at (relative paths)."""
    return {f["file"] for f in doc.get("rejects", [])}


def rejects_sql(doc: dict[str, Any], root: Path, ledger: dict[str, list[Path]]) -> str:
    """The state's rejected rows with the columns of the ``rejects`` view; a duplicate line names the
    files of its table as a read of the ledger's files does."""
    files = [root / f["file"] for f in doc.get("rejects", [])]
    if not files:
        return 'SELECT "table", reason, file, key, record FROM (' + _EMPTY + ")"
    label = {t: files_label(tuple(str(p) for p in paths)) for t, paths in ledger.items() if paths}
    named = " ".join(f"WHEN '{t}' THEN {literal(v)}" for t, v in label.items())
    return (f"SELECT \"table\", reason, CASE WHEN reason = '{DUPLICATE}' THEN CASE \"table\" {named} END "
            f"ELSE file END AS file, key, record "
            f"FROM read_parquet([{', '.join(literal(str(p)) for p in files)}])")


def _customers(con: duckdb.DuckDBPyConnection, doc: dict[str, Any], root: Path) -> dict[str, int]:
    """Per batch table, the customers with a valid row: from the state's all-time totals (each run
    file holds a batch's rows per customer; a customer counts once over them)."""
    runs = [root / r["file"] for part in doc["parts"] for r in part["runs"].get("totals", []) if r["rows"]]
    if not runs:
        return {"orders": 0, "email_events": 0}
    lines, events = con.execute(
        "SELECT count(DISTINCT customer_id) FILTER (WHERE lines > 0), count(DISTINCT customer_id) FILTER (WHERE "
        f"events > 0) FROM read_parquet([{', '.join(literal(str(p)) for p in runs)}])").fetchall()[0]
    return {"orders": int(lines), "email_events": int(events)}


def summaries(con: duckdb.DuckDBPyConnection, doc: dict[str, Any], root: Path,
              ledger: dict[str, list[Path]]) -> dict[str, TableSummary]:
    """The validation summary of the batch tables, as a session over the ledger's files reports it."""
    customers = _customers(con, doc, root)
    counts: dict[str, dict[str, int]] = {}
    files = [root / f["file"] for f in doc.get("rejects", [])]
    if files:
        for table, reason, n in con.execute(
                f"SELECT \"table\", reason, count(*) FROM read_parquet([{', '.join(literal(str(p)) for p in files)}]) "
                "GROUP BY ALL").fetchall():
            counts.setdefault(table, {})[reason] = int(n)
    out = {}
    for name, inp in doc.get("inputs", {}).items():
        rej = dict(sorted(counts.get(name, {}).items(), key=lambda kv: (-kv[1], kv[0])))
        after = inp["rows_read"] - inp["rows_filtered"]
        out[name] = TableSummary(
            name, [str(p) for p in ledger.get(name, [])], inp["rows_read"], inp["rows_filtered"],
            after - sum(rej.values()), rej, dict(inp["columns"]),
            dt.datetime.fromisoformat(inp["first"]) if inp["first"] else None,
            dt.datetime.fromisoformat(inp["last"]) if inp["last"] else None, customers.get(name))
    return out


__all__ = ["add_dropped", "batch_stats", "collect_batch", "commit_batch", "files_of", "has_rejects",
           "merge_stats", "note_dropped", "rejects_sql", "replace_duplicates", "summaries"]
