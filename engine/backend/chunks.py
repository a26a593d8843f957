"""Validation and the customer-hash pieces as tasks over chunks of the input files (on a cluster).

On a cluster the customer tables' rows are validated and written into customer-hash pieces
(:mod:`centile.backend.buckets`) by the workers, not by the client, in two passes:

1. :func:`write_chunk`, one task per chunk of a table's input files (a CSV file; a Parquet file,
   or a run of its row groups when it is large, :func:`plan`): the chunk is read as the whole
   table reads it (each source column cast to the type the client's read over every file gave
   it), validated by the same rules (``sql/stage_<t>.sql``) and written with its rejected rows
   into the pieces, under file names of its own. Its rows are written into a folder of the task
   and then renamed into place, so a task that dies leaves no half file and a task run again
   replaces its files instead of adding a second copy.
2. :func:`settle_piece`, one task per piece: exact duplicate order lines cannot be found within a
   chunk when their copies are in different files, but copies have the same customer id and so
   lie in the same piece. The task sets them aside as the client's session does
   (:func:`centile.backend.sources.set_aside_duplicates`: the same groups, the same ``duplicate
   line`` rows) by writing the piece again, and counts what the summary needs: rejects by reason,
   the valid rows' dates, their customers (disjoint across pieces, so the counts add up) and the
   order lines on or after a configured as_of.

The client merges these small states (:func:`merge`); no input row passes through it. Nothing
here imports dask.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import duckdb

from centile import urls
from centile.backend.buckets import (
    REJECT_COLUMNS,
    Pieces,
    piece_sql,
    pieces_folder,
    scratch_error,
    write_schema,
)
from centile.backend.partitions import Partitioning
from centile.backend.session import TIME_COLUMN, connect, input_folders, restrict_files
from centile.backend.sources import (
    Registered,
    _describe,
    _reader,
    count_raw,
    duplicate_record,
    files_label,
    find_duplicates,
    input_files,
    is_table,
    read_error,
    staged_view,
    typed_view,
)
from centile.config import Config
from centile.io.sqlfiles import ident, literal

#: rows per chunk of a large Parquet file (whole row groups; a file with fewer rows is one chunk):
#: about 1 s of a worker thread's validation and writing (measured at 1M customers, about 1 µs a line)
CHUNK_ROWS = 2_000_000

#: a hook the tests use to act while a chunk is written: ``observe(table, index)``, called on the
#: worker once the chunk's rows are in its own folder and before they are renamed into the pieces
observe: Callable[[str, int], None] | None = None


@dataclass(frozen=True)
class Chunk:
    """The rows of one table that one task validates: ``files`` whole, or the row range ``rows``
    (``[lo, hi)`` of ``file_row_number``, whole row groups) of one Parquet file."""

    table: str
    index: int
    files: tuple[str, ...]
    rows: tuple[int, int] | None = None

    def describe(self) -> str:
        where = files_label(self.files)
        return where + (f", rows {self.rows[0]}-{self.rows[1] - 1}" if self.rows else "")


@dataclass(frozen=True)
class ChunkJob:
    """What every task of one validation needs: the config (threads for one task), the client's
    registered tables, and per table the pieces' template (folder, columns, casts; no files)."""

    cfg: Config
    tables: Mapping[str, Registered]
    pieces: Mapping[str, Pieces]
    #: a shared folder under which each task's DuckDB spills (``spill-chunk-<i>``, ``spill-piece-<k>``)
    spill: str | None = None

    def connect(self, name: str) -> duckdb.DuckDBPyConnection:
        return connect(self.cfg, spill=Path(self.spill) / f"spill-{name}" if self.spill else None)


@dataclass(frozen=True)
class Written:
    """The files one chunk's task wrote: ``(piece, path)`` pairs."""

    table: str
    index: int
    files: tuple[tuple[int, str], ...]
    #: the chunk's rows before the config's filter (None without a filter: the pieces' rows)
    read: int | None = None


@dataclass(frozen=True)
class TableState:
    """One table's mergeable summary state: rows set aside by reason, and over the valid rows the
    oldest and newest time (None without a time column), the customers and the order lines on or
    after the configured as_of."""

    counts: Mapping[str, int]
    first: Any = None
    last: Any = None
    customers: int = 0
    late: int = 0
    #: the rows the config's filter kept (valid and set aside), and the rows read before it
    rows: int = 0
    read: int = 0


@dataclass(frozen=True)
class Settled:
    """A piece after its duplicates were set aside: its files and summary state per table, the
    duplicate lines found, and the files it no longer uses (written again without them)."""

    piece: int
    files: Mapping[str, tuple[str, ...]]
    states: Mapping[str, TableState]
    duplicates: int
    superseded: tuple[str, ...] = ()


def prepare(con: duckdb.DuckDBPyConnection, cfg: Config, tables: Mapping[str, Registered], scratch: Path,
            count: int, spill: Path | None = None) -> tuple[ChunkJob, list[Chunk]]:
    """On the client: each table's pieces folder with its ``schema.parquet`` (from ``<t>_staged``,
    which must be defined; no row is read), the job every task gets and the chunks to validate."""
    templates = {}
    for name, reg in tables.items():
        folder = pieces_folder(scratch, name)
        casts = write_schema(con, name, list(reg.columns), folder, with_rejects=True)
        templates[name] = Pieces(name, str(folder), count, tuple(reg.columns), True, (), casts)
    return (ChunkJob(cfg if cfg.threads else cfg.with_(threads=1), tables, templates, str(spill) if spill else None),
            plan(con, tables))


def plan(con: duckdb.DuckDBPyConnection, tables: Mapping[str, Registered], rows: int | None = None) -> list[Chunk]:
    """The chunks of every table: one per CSV file, one per Parquet file of at most ``rows`` rows
    (default :data:`CHUNK_ROWS`), else one per run of whole row groups of about ``rows`` rows (read
    from the file's footer)."""
    rows = rows or CHUNK_ROWS
    out: list[Chunk] = []
    for name, reg in tables.items():
        for f in input_files(con, reg.spec):
            if reg.spec.format != "parquet":
                out.append(Chunk(name, len(out), (f,)))
                continue
            try:
                groups = [int(n) for _g, n in con.execute(
                    "SELECT row_group_id, any_value(row_group_num_rows) FROM parquet_metadata($f) "
                    "GROUP BY ALL ORDER BY 1", {"f": f}).fetchall()]
            except duckdb.Error as exc:
                raise read_error(replace(reg.spec, paths=(f,)), exc) from None
            if sum(groups) <= rows:
                out.append(Chunk(name, len(out), (f,)))
                continue
            lo = n = 0
            for size in groups:
                if n and n + size > rows:
                    out.append(Chunk(name, len(out), (f,), (lo, lo + n)))
                    lo, n = lo + n, 0
                n += size
            if n:
                out.append(Chunk(name, len(out), (f,), (lo, lo + n)))
    return out


def _chunk_views(con: duckdb.DuckDBPyConnection, reg: Registered, chunk: Chunk) -> None:
    """``raw_<t>``, ``src_<t>``, ``<t>_typed`` and ``<t>_staged`` over the chunk: its source columns
    cast to the types of the client's read over every file (``union_by_name`` gives a column missing
    in a file as NULL, and a file's own type cast to the common one), then the config's filter."""
    spec = replace(reg.spec, paths=chunk.files)
    reader = _reader(spec, reg.as_text, row_numbers=chunk.rows is not None)
    name = reg.spec.name
    try:
        have = {c for c, _t in _describe(con, f"SELECT * FROM {reader}")}
    except duckdb.Error as exc:
        raise read_error(spec, exc) from None
    cols = [(f"CAST({ident(c)} AS {t})" if c in have else f"CAST(NULL AS {t})") + f" AS {ident(c)}"
            for c, t in reg.source_types if c != "__centile_file"]
    where = f" WHERE file_row_number >= {int(chunk.rows[0])} AND file_row_number < {int(chunk.rows[1])}" \
        if chunk.rows else ""
    con.execute(f"CREATE OR REPLACE TEMP VIEW {ident('raw_' + name)} AS "
                f"SELECT {', '.join(cols)}, __centile_file FROM {reader}{where}")
    con.execute(f"CREATE OR REPLACE TEMP VIEW {ident('src_' + name)} AS SELECT * FROM {ident('raw_' + name)}"
                + (f" WHERE ({reg.spec.filter})" if reg.spec.filter else ""))
    typed_view(con, reg)
    staged_view(con, reg)


def write_chunk(job: ChunkJob, chunk: Chunk) -> Written:
    """Validate one chunk and write its rows, rejected ones with their reason, file and record, into
    the pieces of its table (on a worker). Files are named after the chunk
    (``__piece=<k>/c<index>-<n>.parquet``) and renamed into place once whole."""
    reg, template = job.tables[chunk.table], job.pieces[chunk.table]
    folder = Path(template.folder)
    con = job.connect(f"chunk-{chunk.index}")
    tmp = folder / f".chunk-{chunk.index:05d}-{uuid.uuid4().hex[:8]}"
    try:
        remote = urls.register(con, list(chunk.files))
        _chunk_views(con, reg, chunk)
        # the config's filter and mapped expressions are SQL: they may read the chunk's files, and
        # the task writes into the table's pieces folder, nothing else
        restrict_files(con, input_folders([Path(f) for f in chunk.files if not urls.is_url(f)]) + [folder],
                       prefixes=remote)
        cols = [ident(c) for c in (*template.columns, *REJECT_COLUMNS)]
        try:
            con.execute(f"COPY (SELECT {', '.join(cols)}, {piece_sql(template.count)} AS __piece "
                        f"FROM {ident(chunk.table + '_staged')}) TO {literal(str(tmp))} "
                        f"(FORMAT parquet, PARTITION_BY (__piece), FILENAME_PATTERN 'data_{{i}}')")
        except duckdb.InvalidInputException as exc:
            raise read_error(replace(reg.spec, paths=chunk.files), exc) from None
        except (duckdb.IOException, OSError) as exc:
            raise scratch_error(folder, exc) from None
        read = None
        if reg.spec.filter:  # the rows before the filter, for the summary (a Parquet footer, a CSV parsed again)
            read = chunk.rows[1] - chunk.rows[0] if chunk.rows else count_raw(con, replace(reg.spec, paths=chunk.files))
        if observe is not None:
            observe(chunk.table, chunk.index)
        written = []
        for f in sorted(tmp.glob("__piece=*/*.parquet")):
            k = int(f.parent.name.split("=", 1)[1])
            there = folder / f.parent.name
            there.mkdir(exist_ok=True)  # inside the table's folder, which the client made
            n = sum(1 for _k, _f in written if _k == k)
            dest = there / f"c{chunk.index:05d}-{n}.parquet"
            os.replace(f, dest)  # a task run again replaces the file: one copy of its rows
            written.append((k, str(dest)))
        return Written(chunk.table, chunk.index, tuple(written), read)
    finally:
        con.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _state(con: duckdb.DuckDBPyConnection, name: str, source: str, cfg: Config) -> TableState:
    """One scan of ``source`` (staged rows of one piece) for the summary's state."""
    tcol = "order_ts" if name == "orders" else TIME_COLUMN.get(name)
    span = f"min({ident(tcol)}), max({ident(tcol)})" if tcol else "NULL, NULL"
    late = "count(*) FILTER (WHERE order_ts >= CAST($a AS TIMESTAMP))" if name == "orders" and cfg.as_of else "0"
    rows = con.execute(f"SELECT reject_reason, count(*), {span}, count(DISTINCT customer_id), {late} "
                       f"FROM ({source}) GROUP BY 1", {"a": cfg.as_of} if "$a" in late else None).fetchall()
    valid = next((r for r in rows if r[0] is None), (None, 0, None, None, 0, 0))
    total = sum(int(r[1]) for r in rows)
    return TableState({r[0]: int(r[1]) for r in rows if r[0] is not None}, valid[2], valid[3], int(valid[4]),
                      int(valid[5]), total, total)


def settle_piece(job: ChunkJob, piece: int, files: Mapping[str, tuple[str, ...]]) -> Settled:
    """Set aside the exact duplicate order lines of one piece (as
    :func:`~centile.backend.sources.set_aside_duplicates` over every line: copies share a customer,
    so they share a piece), writing the piece again as one file when there are any, and count the
    piece's summary state of every table (on a worker)."""
    bounds = Partitioning(next(iter(job.pieces.values())).count).bounds(piece)
    con = job.connect(f"piece-{piece}")
    out, states, superseded, duplicates = dict(files), {}, [], 0
    try:
        for name, fs in files.items():
            reg = job.tables[name]
            p = replace(job.pieces[name], files=((piece, fs),))
            if name == "orders" and reg.has("order_id"):
                # hashes from the piece's files; lines are compared by rowid only where hashes repeat
                con.execute(f"CREATE OR REPLACE TEMP VIEW orders_valid AS {p.select(bounds)}")
                duplicates = find_duplicates(con, reg, before=lambda: _materialise(con, "orders_valid"))
                if duplicates and reg.spec.duplicates != "keep":
                    out[name] = (_rewrite(con, reg, p, piece, bounds),)
                    superseded.extend(fs)
                    p = replace(p, files=((piece, out[name]),))
                con.execute("DROP TABLE IF EXISTS __centile_dup_rows")
                con.execute(f"DROP {'TABLE' if is_table(con, 'orders_valid') else 'VIEW'} orders_valid")
            states[name] = _state(con, name, p.select(bounds, rejects=None), job.cfg)
    finally:
        con.close()
    return Settled(piece, out, states, duplicates, tuple(superseded))


def _materialise(con: duckdb.DuckDBPyConnection, view: str) -> None:
    """The view ``view`` as a temporary table of the same name."""
    con.execute(f"CREATE TEMP TABLE {ident(view + '__m')} AS SELECT * FROM {ident(view)}")
    con.execute(f"DROP VIEW {ident(view)}")
    con.execute(f"ALTER TABLE {ident(view + '__m')} RENAME TO {ident(view)}")


def _rewrite(con: duckdb.DuckDBPyConnection, reg: Registered, p: Pieces, piece: int, bounds: tuple[int, int]) -> str:
    """Piece ``piece`` of the order lines again as one file: the valid lines but the duplicates'
    extra copies (``__centile_dup_rows``), those copies as ``duplicate line`` with the table's file
    description and their typed record (as the client's session rejects them), and the rows rejected
    before. Written under a task-unique name, then renamed onto ``settled.parquet``."""
    folder = Path(p.folder) / f"__piece={piece}"
    typed = ", ".join(ident(c) for c in p.columns)
    extra = "SELECT r FROM __centile_dup_rows"
    tmp = folder / f".settled-{uuid.uuid4().hex[:8]}.parquet"
    dest = folder / "settled.parquet"
    try:
        con.execute(
            f"COPY (SELECT {typed}, NULL::VARCHAR AS reject_reason, NULL::VARCHAR AS __centile_file, "
            f"NULL::VARCHAR AS __record FROM orders_valid WHERE rowid NOT IN ({extra}) "
            f"UNION ALL SELECT {typed}, 'duplicate line', {literal(reg.files)}, {duplicate_record(reg)} "
            f"FROM orders_valid WHERE rowid IN ({extra}) "
            f"UNION ALL SELECT {typed}, {', '.join(ident(c) for c in REJECT_COLUMNS)} "
            f"FROM ({p.select(bounds, rejects=True)})) TO {literal(str(tmp))} (FORMAT parquet)")
        os.replace(tmp, dest)
    except (duckdb.IOException, OSError) as exc:
        raise scratch_error(Path(p.folder), exc) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return str(dest)


def by_piece(written: Iterable[Written]) -> dict[int, dict[str, tuple[str, ...]]]:
    """Piece -> table -> its files, in chunk order."""
    out: dict[int, dict[str, list[str]]] = {}
    for w in sorted(written, key=lambda w: w.index):
        for k, f in w.files:
            out.setdefault(k, {}).setdefault(w.table, []).append(f)
    return {k: {t: tuple(fs) for t, fs in v.items()} for k, v in sorted(out.items())}


def merge(job: ChunkJob, settled: Iterable[Settled], written: Iterable[Written] = ()
          ) -> tuple[dict[str, Pieces], dict[str, TableState], int]:
    """The pieces of every table with their files, every table's summary state and the duplicate
    lines, from the pieces' states (rejects, rows and customers add up; dates take the extremes) and,
    for a table with a filter, the rows its chunks read before it (``written``, every chunk)."""
    files: dict[str, dict[int, tuple[str, ...]]] = {t: {} for t in job.tables}
    states: dict[str, TableState] = {}
    duplicates = 0
    for s in sorted(settled, key=lambda s: s.piece):
        duplicates += s.duplicates
        for t, fs in s.files.items():
            files[t][s.piece] = fs
        for t, st in s.states.items():
            states[t] = st if t not in states else _add(states[t], st)
    pieces = {t: replace(job.pieces[t], files=tuple(sorted(fs.items()))) for t, fs in files.items()}
    for t in job.tables:
        states.setdefault(t, TableState({}))
    read: dict[str, int] = {}
    for w in written:
        if w.read is not None:
            read[w.table] = read.get(w.table, 0) + w.read
    for t, reg in job.tables.items():
        if reg.spec.filter:
            if t not in read:
                raise ValueError(f"{t}: the rows its chunks read before the filter are missing (written)")
            states[t] = replace(states[t], read=read[t])
    return pieces, states, duplicates


def _add(a: TableState, b: TableState) -> TableState:
    counts = dict(a.counts)
    for k, v in b.counts.items():
        counts[k] = counts.get(k, 0) + v
    first = min((x for x in (a.first, b.first) if x is not None), default=None)
    last = max((x for x in (a.last, b.last) if x is not None), default=None)
    return TableState(counts, first, last, a.customers + b.customers, a.late + b.late, a.rows + b.rows,
                      a.read + b.read)


def timed(fn: Callable[..., Any], *args: Any) -> tuple[Any, float, float]:
    """``fn(*args)`` with its wall and thread CPU seconds (a task's own accounting)."""
    t0, c0 = time.perf_counter(), time.thread_time()
    value = fn(*args)
    return value, time.perf_counter() - t0, time.thread_time() - c0
