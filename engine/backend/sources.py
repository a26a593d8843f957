"""Input tables → DuckDB views with the canonical columns, typed and validated.

For each configured table this module registers, in one DuckDB connection:

``src_<t>``     the raw file(s), after the config's row filter;
``<t>_typed``   canonical column names and types (``TRY_CAST`` where the
                source is text, so bad values become NULL instead of errors),
                plus the raw values as ``__raw_<col>``;
``<t>_staged``  a view: typed columns plus ``reject_reason`` computed by
                ``sql/stage_<t>.sql`` (NULL = valid);
``<t>_valid``   the valid typed rows, a temporary table (a view for the
                tables of ``READ_ONCE`` read from Parquet); in the table, the
                texts of ``CODED`` (order lines' category and channel) are
                ``ENUM`` codes in the texts' order;
``<t>_rejects`` the rejected rows (reason, file, raw record, key);
``<t>``         the valid rows (for orders: only lines before ``as_of``).

and ``rejects`` (table, reason, file, key, record) over all tables.
"""

from __future__ import annotations

import csv
import difflib
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from centile import urls
from centile.backend.partitions import bucket_sql
from centile.config import Config, TableSpec, check_expression
from centile.contract import CONTRACT
from centile.errors import ConfigError, InputError
from centile.io.outputs import fingerprint
from centile.io.sqlfiles import ident, literal, read_sql
from centile.runtime import duckdb_connect

log = logging.getLogger(__name__)

_INT_TYPES = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
              "UINTEGER", "UBIGINT", "UHUGEINT"}
_FLOAT_TYPES = {"FLOAT", "DOUBLE", "REAL"}
_CSV_OPTIONS = {"delim", "sep", "header", "quote", "escape", "dateformat", "timestampformat",
                "decimal_separator", "skip", "all_varchar", "null_padding", "nullstr", "encoding",
                "compression", "comment", "new_line"}


def _is_numeric(t: str) -> bool:
    return t in _INT_TYPES or t in _FLOAT_TYPES or t.startswith("DECIMAL")


def _is_text(t: str) -> bool:
    return t == "VARCHAR" or t.startswith("VARCHAR")


def _is_zoned(t: str) -> bool:
    """A zone-aware timestamp type (``TIMESTAMP WITH TIME ZONE``, ``TIMESTAMPTZ_NS``, ...)."""
    return t == "TIMESTAMP WITH TIME ZONE" or t.startswith("TIMESTAMPTZ")


#: a time of day followed by something other than digits: an offset (``+05:00``, ``Z``) or a
#: zone name (``Europe/Berlin``, ``EST``); DuckDB's cast to TIMESTAMP would silently drop it
_ZONE_SUFFIX = r"[0-9]:[0-9]{2}(:[0-9]{2}(\.[0-9]*)?)?\s*[^0-9\s.:]"


@dataclass(frozen=True)
class Column:
    """How one canonical column is computed from the source."""

    name: str
    source: str | None  # source column name or expression text; None = absent
    raw_sql: str        # SQL of the raw value (NULL when absent)
    typed_sql: str      # SQL of the canonical typed value
    source_type: str | None
    checked: bool       # a cast that can fail row by row (raw non-null, typed null)


@dataclass(frozen=True)
class Registered:
    """A table registered in the connection."""

    spec: TableSpec
    columns: dict[str, Column]
    source_columns: tuple[str, ...]
    #: the rows of the files, and of them the rows the config's filter keeps; None: not counted in
    #: this process (:func:`count_rows` counts them; on a cluster the chunk tasks count the customer
    #: tables' rows as they validate them, and a worker's session over one partition counts none)
    rows_in_files: int | None
    rows_after_filter: int | None
    #: the source columns' types as the whole table reads them (``union_by_name`` over every file),
    #: with ``__centile_file``: a task reading one chunk of the files casts its columns to these
    source_types: tuple[tuple[str, str], ...] = ()
    #: CSV columns read as text (zoned timestamps, see :func:`register_source`)
    as_text: tuple[str, ...] = ()

    def has(self, col: str) -> bool:
        return self.columns[col].source is not None

    @property
    def files(self) -> str:
        return files_label(self.spec.paths)


def files_label(paths: tuple[str, ...] | list[str]) -> str:
    """How a table's files are named in a message or a duplicate line's ``rejects`` row: the first
    path, and how many more."""
    return paths[0] if len(paths) == 1 else f"{paths[0]} (+{len(paths) - 1} more)"


def _patterns(spec: TableSpec) -> list[str]:
    """The file paths or globs a spec reads (a folder means every file of its format below it)."""
    ext = "csv" if spec.format == "csv" else "parquet"
    return [(urls.join(p, "**", f"*.{ext}") if urls.isdir(p) else p) if urls.is_url(p)
            else str(Path(p) / "**" / f"*.{ext}") if os.path.isdir(p) else p for p in spec.paths]


def _reader(spec: TableSpec, as_text: tuple[str, ...] = (), row_numbers: bool = False) -> str:
    """SQL table function reading the spec's files (paths quoted as literals); CSV columns named
    in ``as_text`` are read as text; ``row_numbers``: a Parquet read also gives ``file_row_number``."""
    file_list = "[" + ", ".join(literal(f) for f in _patterns(spec)) + "]"
    if spec.format == "parquet":
        return (f"read_parquet({file_list}, hive_partitioning = true, union_by_name = true, "
                f"filename = '__centile_file'{', file_row_number = true' if row_numbers else ''})")
    opts = []
    for k, v in spec.options.items():
        if k not in _CSV_OPTIONS:
            raise ConfigError(f"[tables.{spec.name}.csv]: option {k!r} is not supported; "
                              f"use one of {sorted(_CSV_OPTIONS)}")
        if isinstance(v, bool):
            opts.append(f"{k} = {'true' if v else 'false'}")
        elif isinstance(v, int | float):
            opts.append(f"{k} = {v}")
        else:
            opts.append(f"{k} = {literal(str(v))}")
    if "nullstr" not in spec.options and spec.null_strings:
        # read as NULL before types are sniffed: a literal NULL must not make an integer id column text
        opts.append("nullstr = [" + ", ".join(literal(v) for v in spec.null_strings) + "]")
    if as_text:
        opts.append("types = {" + ", ".join(f"{literal(c)}: 'VARCHAR'" for c in as_text) + "}")
    extra = "".join(", " + o for o in opts)
    return f"read_csv({file_list}, filename = '__centile_file', union_by_name = true{extra})"


def _describe(con: duckdb.DuckDBPyConnection, sql: str) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in con.execute(f"DESCRIBE {sql}").fetchall()]


def _suggest(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=3, cutoff=0.5)
    lowered = [o for o in options if o.lower().replace(" ", "_") == name]
    hits = lowered or close
    return f"; did you mean {', '.join(repr(h) for h in hits)}?" if hits else ""


def register_source(con: duckdb.DuckDBPyConnection, spec: TableSpec) -> tuple[list[tuple[str, str]], int, int]:
    """Create ``src_<table>`` and return its (column, type) list and row counts before/after filter."""
    cols, total, kept, _text = _register_source(con, spec)
    return cols, total, kept  # type: ignore[return-value]


def _register_source(con: duckdb.DuckDBPyConnection, spec: TableSpec, count: bool = True
                     ) -> tuple[list[tuple[str, str]], int | None, int | None, tuple[str, ...]]:
    """:func:`register_source`, also returning the CSV columns read as text; ``count=False``: the
    rows are not counted (None; no row past the sniffer's sample is read)."""
    zoned: tuple[str, ...] = ()
    if spec.format == "csv":
        _check_not_empty(con, spec)
    try:
        con.execute(f"CREATE OR REPLACE TEMP VIEW {ident('raw_' + spec.name)} AS SELECT * FROM {_reader(spec)}")
        cols = _describe(con, f"SELECT * FROM {ident('raw_' + spec.name)}")
        zoned = tuple(c for c, t in cols if _is_zoned(t))
        if spec.format == "csv" and zoned:
            # the sniffer reads a column with offsets as TIMESTAMPTZ, and its naive values (if any)
            # in the session's zone: read it as text, so each value is typed by what it carries
            con.execute(f"CREATE OR REPLACE TEMP VIEW {ident('raw_' + spec.name)} AS "
                        f"SELECT * FROM {_reader(spec, zoned)}")
            cols = _describe(con, f"SELECT * FROM {ident('raw_' + spec.name)}")
    except duckdb.Error as exc:
        raise read_error(spec, exc) from None
    if spec.format == "csv":
        _check_split(con, spec, [c for c, _ in cols if c != "__centile_file"])
    where = ""
    if spec.filter:
        where = f" WHERE ({spec.filter})"
        try:
            _describe(con, f"SELECT * FROM {ident('raw_' + spec.name)}{where}")
        except duckdb.Error as exc:
            raise ConfigError(f"[tables.{spec.name}].filter {spec.filter!r} is not a valid SQL predicate over "
                              f"the source columns ({', '.join(c for c, _ in cols if c != '__centile_file')}): "
                              f"{str(exc).splitlines()[0]}") from None
    con.execute(f"CREATE OR REPLACE TEMP VIEW {ident('src_' + spec.name)} AS "
                f"SELECT * FROM {ident('raw_' + spec.name)}{where}")
    total, kept = _count_source(con, spec) if count else (None, None)
    return cols, total, kept, zoned if spec.format == "csv" else ()


def count_raw(con: duckdb.DuckDBPyConnection, spec: TableSpec) -> int:
    """The rows of ``raw_<t>`` (before the filter): Parquet footers, but a full parse of every CSV
    file. A bad row past the sniffer's sample (a ragged row, a non-UTF-8 byte) fails here, said
    as :func:`read_error` of ``spec`` (whose paths name the files read)."""
    try:
        return int(con.execute(f"SELECT count(*) FROM {ident('raw_' + spec.name)}").fetchall()[0][0])
    except duckdb.InvalidInputException as exc:
        raise read_error(spec, exc) from None


def _count_source(con: duckdb.DuckDBPyConnection, spec: TableSpec) -> tuple[int, int]:
    """The rows of ``raw_<t>`` and of ``src_<t>`` (after the filter, a scan): see :func:`count_raw`."""
    total = count_raw(con, spec)
    if not spec.filter:
        return total, total
    try:
        kept = con.execute(f"SELECT count(*) FROM {ident('src_' + spec.name)}").fetchall()[0][0]
    except duckdb.InvalidInputException as exc:
        raise read_error(spec, exc) from None
    return total, int(kept)


def count_rows(con: duckdb.DuckDBPyConnection, reg: Registered) -> Registered:
    """``reg`` with its rows counted (itself when they are): see :func:`_count_source`."""
    if reg.rows_after_filter is not None:
        return reg
    total, kept = _count_source(con, reg.spec)
    return replace(reg, rows_in_files=total, rows_after_filter=kept)


#: bytes of a CSV file read to estimate its lines (:func:`estimate_rows`)
SAMPLE_BYTES = 1 << 20

#: rows of a table read to estimate the share its filter keeps (:func:`estimate_rows`)
SAMPLE_ROWS = 10_000


def estimate_rows(con: duckdb.DuckDBPyConnection, reg: Registered) -> int:
    """An estimate of the rows the table's filter keeps, reading no row beyond the first ones: for
    Parquet the rows in the footers, for CSV the files' sizes times the lines per byte of the first
    :data:`SAMPLE_BYTES` of the first file (of its compressed bytes for gzip); with a filter, times
    the share of the first :data:`SAMPLE_ROWS` rows it keeps. Good enough to choose a partition
    count (which never changes an output), never a figure to report as a count."""
    spec = reg.spec
    files = input_files(con, spec)
    if not files:
        return 0
    if spec.format == "parquet":
        try:
            rows = int(con.execute("SELECT coalesce(sum(num_rows), 0) FROM parquet_file_metadata($f)",
                                   {"f": files}).fetchall()[0][0])
        except duckdb.Error as exc:
            raise read_error(spec, exc) from None
    else:
        sizes = [urls.size(f) if urls.is_url(f) else os.path.getsize(f) for f in files]
        head = _head(files[0])
        rows = max(0, round(sum(sizes) * _lines_per_byte(head)) - len(files))  # less a header per file
    if spec.filter and rows:
        try:
            n, kept = con.execute(f"SELECT count(*), count(*) FILTER (WHERE {spec.filter}) FROM "
                                  f"(SELECT * FROM {ident('raw_' + spec.name)} LIMIT {SAMPLE_ROWS})").fetchall()[0]
        except duckdb.Error as exc:
            raise read_error(spec, exc) from None
        rows = round(rows * kept / n) if n else rows
    return rows


def _head(f: str) -> bytes:
    """The first :data:`SAMPLE_BYTES` of a file (local or URL)."""
    if urls.is_url(f):
        fs, path = urls.filesystem(f)
        with fs.open(path, "rb") as fh:
            return bytes(fh.read(SAMPLE_BYTES))
    with open(f, "rb") as fh:
        return fh.read(SAMPLE_BYTES)


def _lines_per_byte(head: bytes) -> float:
    """Lines per byte of a file from its first bytes ``head``: of the compressed bytes for gzip."""
    if not head:
        return 0.0
    if head[:2] == b"\x1f\x8b":
        import zlib

        d = zlib.decompressobj(zlib.MAX_WBITS | 16)
        text = d.decompress(head)
        used = len(head) - len(d.unused_data)
        return text.count(b"\n") / max(used, 1)
    # a file shorter than the sample may lack its last newline: count its last line too
    return (head.count(b"\n") + (not head.endswith(b"\n") and len(head) < SAMPLE_BYTES)) / len(head)


_DELIMITERS = (",", ";", "\t", "|")


def read_error(spec: TableSpec, exc: duckdb.Error) -> InputError:
    """An ``InputError`` naming the real cause of a failed read, and the fix, from DuckDB's message."""
    text = str(exc)
    where = f"{spec.paths[0]}{' (+more)' if len(spec.paths) > 1 else ''}"
    m = re.search(r"^\s*file = (.+)$", text, re.MULTILINE)
    if m:
        where = m.group(1).strip()
    line = re.search(r"on Line: (\d+)", text)
    at = f" (line {line.group(1)})" if line else ""
    if spec.format == "csv" and ("not utf-8 encoded" in text or "Invalid unicode" in text):
        enc = spec.options.get("encoding")
        now = f"it is read as {enc!r}, which does not fit" if enc else "it is read as UTF-8"
        return InputError(
            f"{spec.name}: {where} is not UTF-8 text{at}: {now}. Say which encoding the file uses: "
            f"[tables.{spec.name}.csv] encoding = \"latin-1\" (or \"utf-16\"), or convert the file to UTF-8")
    expected = re.search(r"Expected Number of Columns: (\d+) Found: (\d+)", text)
    if spec.format == "csv" and expected:
        return InputError(
            f"{spec.name}: {where}{at} has {expected.group(2)} fields where the header has "
            f"{expected.group(1)} (a ragged row); fix or remove that row (a field holding the delimiter "
            f"must be quoted), or pad short rows with [tables.{spec.name}.csv] null_padding = true")
    return InputError(f"{spec.name}: cannot read {where} as {spec.format}: {text.splitlines()[0]}{at}")


def _check_not_empty(con: duckdb.DuckDBPyConnection, spec: TableSpec) -> None:
    """An empty CSV file has no header: say so instead of reporting a column named ``column0``."""
    for f in input_files(con, spec):
        try:
            empty = (urls.size(f) if urls.is_url(f) else os.path.getsize(f)) == 0
        except OSError:
            continue  # reported when the file is read
        if empty:
            raise InputError(f"{spec.name}: {f} is empty (0 bytes, not even a header line); remove it or "
                             f"export the table again (the first line names the columns: "
                             f"{', '.join(c for c, (_f, req) in CONTRACT[spec.name].items() if req)}, ...)")


def _check_split(con: duckdb.DuckDBPyConnection, spec: TableSpec, names: list[str]) -> None:
    """DuckDB's sniffer gives up on a ragged row: it reads the file as one column (named after the
    whole header line) or without a header (columns ``column0``, ``column1``, ...). Find the first
    row whose field count differs from the header and name it."""
    one = len(names) == 1 and any(d in names[0] for d in _DELIMITERS)
    generated = all(re.fullmatch(r"column\d+", n) for n in names)
    if not (one or generated) or {"delim", "sep", "header"} & set(spec.options):
        return
    files = input_files(con, spec)
    encoding = str(spec.options.get("encoding") or "utf-8")
    delim = ","
    for f in files:
        try:
            with open(f, newline="", encoding=encoding, errors="replace") as fh:
                first = fh.readline()
                delim = max(_DELIMITERS, key=first.count)
                fh.seek(0)
                rows = csv.reader(fh, delimiter=delim)
                header = next(rows, [])
                for i, row in enumerate(rows, start=2):
                    if row and len(row) != len(header):
                        raise InputError(
                            f"{spec.name}: {f} line {i} has {len(row)} fields where the header has "
                            f"{len(header)} (a ragged row), so the file could not be split into columns; fix "
                            f"or remove that row (a field holding {delim!r} must be quoted), or pad short rows "
                            f"with [tables.{spec.name}.csv] null_padding = true")
        except (OSError, csv.Error):
            continue
    if one:
        raise InputError(
            f"{spec.name}: {spec.paths[0]} was read as one column named {names[0][:80]!r}: its rows could not "
            f"be split on {delim!r}; set the delimiter: [tables.{spec.name}.csv] delim = {delim!r}")


def _check_same_columns(con: duckdb.DuckDBPyConnection, spec: TableSpec,
                        mapping: dict[str, tuple[str | None, str | None, str | None]]) -> None:
    """Files of one table must agree on the source columns it uses.

    The files are read with ``union_by_name``, so a column present in some files only
    would silently be NULL in the others (e.g. ``price`` in one file, ``unit_price`` in
    another: half the order lines rejected as "unit_price is null"). Raise instead,
    naming the files and the fix; a mapping to an expression (``coalesce(unit_price,
    price)``) covers both names.
    """
    files = input_files(con, spec)
    if len(files) < 2:
        return
    used = {src for src, raw, _t in mapping.values() if src is not None and raw is not None and raw != f"({src})"}
    if not used:
        return
    missing: dict[str, list[str]] = {}
    for f in files:
        one = replace(spec, paths=(f,))
        try:
            names = {c for c, _ in _describe(con, f"SELECT * FROM {_reader(one)}")}
        except duckdb.Error:
            continue  # unreadable files are reported when the rows are read
        for col in used - names:
            missing.setdefault(col, []).append(f)
    if missing:
        col, where = sorted(missing.items())[0]
        canonical = next(c for c, (src, _r, _t) in mapping.items() if src == col)
        raise InputError(
            f"{spec.name}: column `{col}` (used for {canonical}) is missing in {len(where)} of {len(files)} files "
            f"(first: {where[0]}); the files' columns differ. Give them the same column names, or map both: "
            f"[tables.{spec.name}.columns] {canonical} = \"coalesce({col}, <the other file's column>)\"")


def _resolve_columns(con: duckdb.DuckDBPyConnection, spec: TableSpec,
                     cols: list[tuple[str, str]]) -> dict[str, tuple[str | None, str | None, str | None]]:
    """canonical -> (source text, raw SQL, source type) for every contract column."""
    src = ident("src_" + spec.name)
    names = [c for c, _ in cols if c != "__centile_file"]
    types = dict(cols)
    by_lower = {c.lower(): c for c in names}
    out: dict[str, tuple[str | None, str | None, str | None]] = {}
    for col, (_family, required) in CONTRACT[spec.name].items():
        mapped = spec.columns.get(col)
        if mapped is None:
            hit = by_lower.get(col)
            if hit is None:
                if required:
                    raise InputError(
                        f"{spec.name}: required column `{col}` not found in {spec.paths[0]} "
                        f"(columns: {', '.join(names)}){_suggest(col, names)}; map it in the config: "
                        f"[tables.{spec.name}.columns] {col} = \"<your column or SQL expression>\"")
                out[col] = (None, None, None)
                continue
            out[col] = (hit, ident(hit), types[hit])
            continue
        if mapped in types:
            out[col] = (mapped, ident(mapped), types[mapped])
            continue
        if mapped.lower() in by_lower:
            hit = by_lower[mapped.lower()]
            out[col] = (hit, ident(hit), types[hit])
            continue
        check_expression(mapped, f"[tables.{spec.name}.columns] {col}")
        try:
            t = _describe(con, f"SELECT ({mapped}) AS x FROM {src}")[0][1]
        except duckdb.Error as exc:
            raise ConfigError(
                f"[tables.{spec.name}.columns].{col} = {mapped!r}: neither a column of {spec.paths[0]} "
                f"(columns: {', '.join(names)}){_suggest(mapped, names)} nor a valid SQL expression over "
                f"them: {str(exc).splitlines()[0]}") from None
        out[col] = (mapped, f"({mapped})", t)
    return out


def _id_sql(raw: str, t: str, as_text: bool) -> tuple[str, bool]:
    """Typed SQL for an identifier column; returns (sql, can_fail_per_row)."""
    if t in _INT_TYPES:
        return (f"CAST({raw} AS VARCHAR)" if as_text else f"TRY_CAST({raw} AS BIGINT)"), not as_text
    if t in _FLOAT_TYPES or t.startswith("DECIMAL"):
        # exported files often carry integer ids as floats (17850.0)
        integral = f"CASE WHEN {raw} = floor({raw}) THEN TRY_CAST({raw} AS BIGINT) END"
        return (f"CAST({integral} AS VARCHAR)" if as_text else integral), True
    text = f"nullif(regexp_replace(trim(CAST({raw} AS VARCHAR)), '^([0-9]+)\\.0+$', '\\1'), '')"
    return text, True


def _null_text(spec: TableSpec, raw: str) -> str:
    """``raw`` with the spec's ``null_strings`` (compared after trimming) read as NULL."""
    if not spec.null_strings:
        return raw
    texts = ", ".join(literal(v) for v in spec.null_strings)
    return f"CASE WHEN trim(CAST({raw} AS VARCHAR)) IN ({texts}) THEN NULL ELSE {raw} END"


def _typed(spec: TableSpec, col: str, family: str, raw: str, t: str, id_text: dict[str, bool]) -> tuple[str, bool]:
    where = f"{spec.name}: column `{col}`"
    if family in ("id", "product"):
        return _id_sql(raw, t, id_text[family])
    if family == "key":
        if t in _FLOAT_TYPES or t.startswith("DECIMAL"):
            return f"CASE WHEN {raw} = floor({raw}) THEN TRY_CAST({raw} AS BIGINT) END", True
        return raw, False
    if family == "timestamp":
        return _timestamp_sql(spec, col, raw, t)
    if family in ("double", "integer"):
        target = "DOUBLE" if family == "double" else "INTEGER"
        if _is_numeric(t):
            return f"CAST({raw} AS {target})", family == "integer"
        if _is_text(t):
            return f"TRY_CAST({raw} AS {target})", True
        raise InputError(f"{where} has type {t} in {spec.paths[0]}, expected a number; "
                         f"map it to a numeric column or expression in [tables.{spec.name}.columns]")
    return f"CAST({raw} AS VARCHAR)", False


def _timestamp_sql(spec: TableSpec, col: str, raw: str, t: str) -> tuple[str, bool]:
    """Typed SQL of a timestamp column: naive values as they are, zoned ones (an offset or zone
    in the text, a zone-aware type) as wall-clock times of the table's ``timezone``. Nothing here
    depends on the session's or the machine's zone."""
    zone = literal(spec.timezone)
    if _is_zoned(t):
        return f"CAST(timezone({zone}, {raw}) AS TIMESTAMP)", False
    if t.startswith("TIMESTAMP") or t == "DATE":
        return f"CAST({raw} AS TIMESTAMP)", False
    if _is_text(t):
        fmt = spec.timestamp_format
        if fmt and col in ("order_ts", "ts", "sent_ts", "signup_ts"):
            parsed = f"try_strptime({raw}, {literal(fmt)})"
            if "%z" in fmt or "%Z" in fmt:  # strptime gives TIMESTAMPTZ
                return f"CAST(timezone({zone}, {parsed}) AS TIMESTAMP)", True
            return parsed, True
        # DuckDB reads "+05:00" only without a space before it ("10:00:00 +0000" is common);
        # a text with a zone suffix it cannot read stays NULL (rejected as not a timestamp)
        text = f"regexp_replace({raw}, '\\s+([+-][0-9]{{2}}:?[0-9]{{2}})\\s*$', '\\1')"
        return (f"CASE WHEN regexp_matches({raw}, {literal(_ZONE_SUFFIX)}) "
                f"THEN CAST(timezone({zone}, TRY_CAST({text} AS TIMESTAMPTZ)) AS TIMESTAMP) "
                f"ELSE TRY_CAST({raw} AS TIMESTAMP) END"), True
    raise InputError(
        f"{spec.name}: column `{col}` has type {t} in {spec.paths[0]}, expected a timestamp, date or text; "
        f"map it to an expression, e.g. {col} = \"strptime(CAST(<column> AS VARCHAR), '%Y%m%d')\"")


def register_tables(con: duckdb.DuckDBPyConnection, cfg: Config,
                    progress: Callable[[str], None] | None = None, count: bool = True
                    ) -> tuple[dict[str, Registered], dict[str, str]]:
    """Register every configured table as ``src_<t>`` and ``<t>_typed`` views.

    Returns the registered tables and the SQL types chosen for customer and
    product identifiers (``{"id": ..., "product": ...}``). ``count=False``: their rows are not
    counted (``rows_in_files`` and ``rows_after_filter`` None; see :func:`count_rows`), so no CSV
    line past the sniffer's sample is read.
    """
    resolved: dict[str, Any] = {}
    texts: dict[str, tuple[str, ...]] = {}
    for name, spec in cfg.tables.items():
        if progress:
            progress(f"reading {name}")
        cols, total, kept, as_text = _register_source(con, spec, count)
        mapping = _resolve_columns(con, spec, cols)
        _check_same_columns(con, spec, mapping)
        resolved[name] = (spec, cols, total, kept, mapping)
        texts[name] = as_text

    # identifiers: integers when every table agrees, text as soon as one table has text ids
    id_text = {"id": False, "product": False}
    for _spec, _cols, _t, _k, mapping in resolved.values():
        for col, (srcname, _raw, t) in mapping.items():
            family = CONTRACT[_spec.name][col][0]
            if family in id_text and srcname is not None and not (_is_numeric(t)):
                id_text[family] = True
    id_type = {f: ("VARCHAR" if v else "BIGINT") for f, v in id_text.items()}

    out: dict[str, Registered] = {}
    for name, (spec, cols, total, kept, mapping) in resolved.items():
        columns: dict[str, Column] = {}
        for col, (family, _req) in CONTRACT[name].items():
            srcname, raw, t = mapping[col]
            if srcname is None:
                sql_type = {"id": id_type["id"], "product": id_type["product"], "key": "VARCHAR",
                            "timestamp": "TIMESTAMP", "double": "DOUBLE", "integer": "INTEGER"}.get(family, "VARCHAR")
                columns[col] = Column(col, None, "NULL", f"CAST(NULL AS {sql_type})", None, False)
                continue
            if family in ("id", "product", "key") and _is_text(t):
                raw = _null_text(spec, raw)  # the raw value too: a NULL id is a guest order, not an invalid id
            typed, checked = _typed(spec, col, family, raw, t, id_text)
            if family == "varchar" and _is_text(t):
                typed = _null_text(spec, typed)  # texts: the typed value only (no rule reads their raw value)
            columns[col] = Column(col, srcname, raw, typed, t, checked)
        out[name] = Registered(spec, columns, tuple(c for c, _ in cols if c != "__centile_file"), total, kept,
                               tuple(cols), texts[name])
        typed_view(con, out[name])
    return out, id_type


def typed_view(con: duckdb.DuckDBPyConnection, reg: Registered) -> None:
    """``<t>_typed`` over ``src_<t>``: the canonical typed columns, the raw values as ``__raw_<col>``
    and the file name."""
    select = ",\n  ".join(
        [f"{c.typed_sql} AS {ident(c.name)}" for c in reg.columns.values()]
        + [f"{c.raw_sql} AS {ident('__raw_' + c.name)}" for c in reg.columns.values()]
        + ["__centile_file"])
    con.execute(f"CREATE OR REPLACE TEMP VIEW {ident(reg.spec.name + '_typed')} AS SELECT\n  {select}\n"
                f"FROM {ident('src_' + reg.spec.name)}")


def input_files(con: duckdb.DuckDBPyConnection, spec: TableSpec) -> list[str]:
    """The files a table spec reads (folders and globs expanded)."""
    return [f for pattern in _patterns(spec)
            for f in (urls.glob(pattern) if urls.is_url(pattern) else
                      [r[0] for r in con.execute("SELECT file FROM glob($p) ORDER BY file", {"p": pattern}).fetchall()])]


def input_fingerprints(tables: Mapping[str, TableSpec],
                       con: duckdb.DuckDBPyConnection | None = None) -> dict[str, list[dict[str, Any]]]:
    """Sizes and fingerprints of every file of every table (for stage keys and the manifest).

    The files are hashed on a few threads (hashing releases the GIL): the same fingerprints, in
    the same order, in about half the time on two cores (1M customers: 23 files, 0.5 s of hashing).
    """
    from concurrent.futures import ThreadPoolExecutor

    own = con is None
    con = duckdb_connect() if own else con
    try:
        files = {name: input_files(con, spec) for name, spec in tables.items()}
    finally:
        if own:
            con.close()
    every = [f for fs in files.values() for f in fs]
    with ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1, len(every)))) as pool:
        prints = iter(list(pool.map(_fingerprint, every)))
    return {name: [next(prints) for _f in fs] for name, fs in files.items()}


def _fingerprint(f: str) -> dict[str, Any]:
    return urls.fingerprint(f) if urls.is_url(f) else fingerprint(Path(f))


#: tables one job scans only once or twice (e-mail events: the feature job's ``feat_email`` and the
#: summary): from Parquet they stay views, validated as they are read, since materialising millions
#: of rows costs more than decoding them twice (e-mail events at 200k customers, 3.9M rows, one
#: thread: 0.45 s to materialise against about 0.2 s per extra Parquet scan)
READ_ONCE = frozenset({"email_events"})


#: a Parquet table whose typed rows would take more than this share of DuckDB's memory stays a view
#: over its files (validated as it is read) instead of a temporary table: a temporary table beyond
#: DuckDB's memory is written to its spill files and read back by every later scan. Measured at 1M
#: customers (20.7M order lines, about 2 GB typed) with ``--memory-limit 2GB`` (DuckDB 1 GB), one
#: thread: a scan of the table took 4.2 CPU s (7.2 with the text columns) against 2.8 (3.2) for
#: the view, and materialising it 6.5 CPU s; in memory the table wins (scans of a few tenths)
VIEW_SHARE = 0.5

#: bytes per value of a typed column in a DuckDB temporary table (texts: the 16-byte string header;
#: longer strings add their bytes, so this is a floor)
_TYPE_BYTES = {"id": 8, "product": 8, "key": 16, "timestamp": 8, "double": 8, "integer": 4}


def typed_bytes(reg: Registered) -> int:
    """An estimate of the bytes of the table's typed rows (``<t>_valid``) in DuckDB."""
    per_row = sum(_TYPE_BYTES.get(CONTRACT[reg.spec.name][c][0], 16) for c in reg.columns if reg.has(c))
    if reg.rows_after_filter is None:
        raise ValueError(f"{reg.spec.name}: its rows were not counted (count_rows)")
    return reg.rows_after_filter * per_row


def materialised(reg: Registered, budget: int | None = None) -> bool:
    """Are ``<t>_valid`` and ``<t>_rejects`` of this table temporary tables (else views over the
    files)? CSV is always parsed once; Parquet tables of :data:`READ_ONCE` stay views, and so does a
    Parquet table whose typed rows need more than :data:`VIEW_SHARE` of ``budget`` (DuckDB's memory
    limit in bytes; None: no limit, every other table is materialised)."""
    if reg.spec.format != "parquet":
        return True
    if reg.spec.name in READ_ONCE:
        return False
    return budget is None or typed_bytes(reg) <= budget * VIEW_SHARE


def is_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    """Is ``name`` a table (a temporary one, or one of a worker's partition cache file, attached
    read-only, which the same-named view reads), not a view over the input files?"""
    return bool(con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = $n", {"n": name}).fetchall()[0][0])


def materialise(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """Turn the views ``<name>_valid`` and ``<name>_rejects`` into temporary tables (no-op for tables)."""
    for t in (name + "_valid", name + "_rejects"):
        if is_table(con, t):
            continue
        con.execute(f"CREATE TEMP TABLE {ident(t + '__m')} AS SELECT * FROM {ident(t)}")
        con.execute(f"DROP VIEW {ident(t)}")
        con.execute(f"ALTER TABLE {ident(t + '__m')} RENAME TO {ident(t)}")


#: text columns of a materialised table stored as codes: a DuckDB ``ENUM`` whose values are the
#: column's distinct texts in sorted order, so that comparisons, ``min`` and ``ORDER BY`` over the
#: codes give what they give over the texts, and a cast to VARCHAR gives the same strings back.
#: The codes are assigned as the table is written: ``TRY_CAST`` of the source text to the ``ENUM``
#: (a text the config reads as NULL, one of ``null_strings``, is not among its values, so it becomes
#: NULL as the typed text would), which is cheaper per row than the typed text's trim and
#: comparisons; the values come from one ``DISTINCT`` pass over the source column. At 1M
#: customers (20.7M lines), two threads, medians of 3 alternating runs in one process: the
#: distinct values 0.45 CPU s, the typed table 7.79 -> 6.58, and the queries that read the
#: columns cheaper (order_facts 5.47 -> 3.96, feat_channel 1.76 -> 1.45, feat_category 3.58 ->
#: 2.74): 18.6 -> 15.55 CPU s in all (``typed_codes_ab`` in ``benchmarks/results/feature_phases.json``).
#: Views over the files, a partition's pieces and a worker's partition keep the texts.
CODED = {"orders": ("category", "channel")}

#: a text column with more distinct values than this keeps its texts (an ``ENUM`` this long is
#: spelt out in the query, and its cast looks up every row in a larger map)
CODED_MAX = 4096


def coded_types(con: duckdb.DuckDBPyConnection, reg: Registered) -> dict[str, str]:
    """The columns of ``reg`` that :data:`CODED` stores as codes, each with its ``ENUM`` type (the
    sorted distinct typed texts of every row of ``<t>_typed``, valid or not: a superset of the
    valid rows' values changes no comparison). A column with more than :data:`CODED_MAX` distinct
    values, or none, is left out."""
    cols = [c for c in CODED.get(reg.spec.name, ()) if c in reg.columns and reg.has(c)]
    if not cols:
        return {}
    found = _distinct_texts(con, reg.spec.name + "_typed", cols)
    out = {}
    for c, texts in found.items():
        if not texts or len(texts) > CODED_MAX:
            continue
        col = reg.columns[c]
        # the typed value of each distinct text (the null strings read as NULL), in DuckDB's order
        typed = _null_text(reg.spec, "v") if col.source_type is not None and _is_text(col.source_type) else "v"
        values = con.execute(f"SELECT list(v ORDER BY v) FROM unnest($t) AS t(v) WHERE {typed} IS NOT NULL",
                             {"t": texts}).fetchall()[0][0]
        if values:
            out[c] = "ENUM(" + ", ".join(literal(v) for v in values) + ")"
    return out


def _distinct_texts(con: duckdb.DuckDBPyConnection, table: str, cols: list[str]) -> dict[str, list[str]]:
    """The distinct non-NULL source texts of each of ``cols`` (their ``__raw_`` columns) in
    ``table``, or more than :data:`CODED_MAX` of them where the column has more. One scan for every
    column: a hash aggregate over ``GROUPING SETS`` (it spills, unlike ``list(DISTINCT)``, which would
    hold a column of millions of texts whole; the same 0.98 CPU s at 1M customers), stopped by a
    ``LIMIT`` no column of at most ``CODED_MAX`` values reaches; when it is reached, the columns that
    may have been cut are read again, each by its own bounded ``DISTINCT``."""
    raw = {c: f"CAST({ident('__raw_' + c)} AS VARCHAR)" for c in cols}
    limit = len(cols) * (CODED_MAX + 1) + 1  # at most CODED_MAX values and a NULL group per column
    sets = ", ".join(f"({ident(c)})" for c in cols)
    rows = con.execute(
        f"SELECT {', '.join(ident(c) for c in cols)}, {', '.join(f'GROUPING({ident(c)})' for c in cols)} "
        f"FROM (SELECT {', '.join(f'{raw[c]} AS {ident(c)}' for c in cols)} FROM {ident(table)}) t "
        f"GROUP BY GROUPING SETS ({sets}) LIMIT {limit}").fetchall()
    found: dict[str, list[str]] = {c: [] for c in cols}
    for row in rows:
        i = list(row[len(cols):]).index(0)  # GROUPING(c) is 0 in the rows of c's own set
        if row[i] is not None:
            found[cols[i]].append(row[i])
    if len(rows) == limit:  # some column has more than CODED_MAX values: the others may be cut short
        for c in cols:
            if len(found[c]) <= CODED_MAX:
                found[c] = [r[0] for r in con.execute(
                    f"SELECT DISTINCT {raw[c]} FROM {ident(table)} WHERE {raw[c]} IS NOT NULL "
                    f"LIMIT {CODED_MAX + 1}").fetchall()]
    return found


def reject_key(reg: Registered) -> str | None:
    """The column that names a rejected row's customer or product in ``rejects``."""
    return next((c for c in ("customer_id", "product_id") if c in reg.columns), None)


def stage_tables(con: duckdb.DuckDBPyConnection, tables: dict[str, Registered],
                 progress: Callable[[str], None] | None = None, buckets: tuple[int, int] | None = None,
                 budget: int | None = None) -> None:
    """Validate every table: ``<t>_valid`` (the typed valid rows) and ``<t>_rejects``
    (``buckets``: only the rows of the customers in that hash-bucket range ``[lo, hi)``, filtered
    as the files are read: one partition on a worker).

    ``<t>_staged`` is a view: the typed rows plus ``reject_reason`` computed by the rules in
    ``sql/stage_<t>.sql``; rejected rows keep their file and raw values as JSON in
    ``__record`` so an error can quote them. ``<t>_valid`` is materialised from it in one
    pass with the typed columns only (the texts of :data:`CODED` as codes), and ``<t>_rejects``
    (reason, file, record, key) by a second pass only when rows are missing from ``<t>_valid``
    (clean inputs are read once). For
    the tables of :data:`READ_ONCE` read from Parquet, and Parquet tables too large for ``budget``
    (DuckDB's memory limit in bytes), both are views (see :func:`materialised`).

    A customer's partition is the hash bucket of its id (:func:`centile.backend.partitions.bucket_sql`),
    computed by a partition's predicate as the rows are read: storing it cost more than
    hashing an id again. (Storing the rows in bucket order, so that a partition skips the
    others' row groups, was measured at 1M customers: the sort cost more than the skipping saved.)
    """
    for name, reg in tables.items():
        if progress:
            progress(f"validating {name}")
        typed_cols = ", ".join(ident(c) for c in reg.columns)
        staged, valid, rejects = (ident(name + suffix) for suffix in ("_staged", "_valid", "_rejects"))
        key = reject_key(reg)
        staged_view(con, reg, buckets)
        select_rejects = (f"SELECT reject_reason, __centile_file, __record, {ident(key)} AS __key "
                          f"FROM {staged} WHERE reject_reason IS NOT NULL")
        if not materialised(reg, budget):
            con.execute(f"CREATE OR REPLACE TEMP VIEW {valid} AS "
                        f"SELECT {typed_cols} FROM {staged} WHERE reject_reason IS NULL")
            con.execute(f"CREATE OR REPLACE TEMP VIEW {rejects} AS {select_rejects}")
            continue
        try:
            codes = coded_types(con, reg) if buckets is None else {}
            if codes:  # the coded columns cast from the source text (see CODED), as the rows are validated
                typed = ", ".join(f"TRY_CAST(CAST({ident('__raw_' + c)} AS VARCHAR) AS {codes[c]}) AS {ident(c)}"
                                  if c in codes else ident(c) for c in reg.columns)
                con.execute(f"CREATE OR REPLACE TEMP TABLE {valid} AS SELECT {typed} "
                            f"FROM ({staged_rows(reg)}) staged WHERE reject_reason IS NULL")
            else:
                con.execute(f"CREATE OR REPLACE TEMP TABLE {valid} AS "
                            f"SELECT {typed_cols} FROM {staged} WHERE reject_reason IS NULL")
            kept = con.execute(f"SELECT count(*) FROM {valid}").fetchall()[0][0]
            con.execute(f"CREATE OR REPLACE TEMP TABLE {rejects} AS {select_rejects}"
                        + ("" if reg.rows_after_filter is None or kept < reg.rows_after_filter else " AND false"))
        except duckdb.Error as exc:
            # a bad row past the sniffer's sample (a ragged row, a non-UTF-8 byte) fails here
            if not isinstance(exc, duckdb.InvalidInputException):
                raise
            raise read_error(reg.spec, exc) from None


def staged_view(con: duckdb.DuckDBPyConnection, reg: Registered, buckets: tuple[int, int] | None = None) -> None:
    """``<t>_staged`` over ``<t>_typed``: the typed columns, ``reject_reason`` from ``sql/stage_<t>.sql``
    and, for rejected rows only, the file and the raw record as JSON (``buckets``: only the rows of
    the customers in that hash-bucket range)."""
    name = reg.spec.name
    cols = list(reg.columns)
    record = "to_json(struct_pack(" + ", ".join(
        f"{ident(c)} := {ident('__raw_' + c)}" for c in cols if reg.has(c)) + "))"
    # the file name and raw record are computed for rejected rows only
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW {ident(name + '_staged')} AS\n"
        f"SELECT {', '.join(ident(c) for c in cols)}, reject_reason,\n"
        f"  CASE WHEN reject_reason IS NOT NULL THEN __centile_file END AS __centile_file,\n"
        f"  CASE WHEN reject_reason IS NOT NULL THEN CAST({record} AS VARCHAR) END AS __record\n"
        f"FROM (\n{staged_rows(reg, buckets)}\n) staged")


def staged_rows(reg: Registered, buckets: tuple[int, int] | None = None) -> str:
    """SQL of the rows of ``<t>_typed`` (typed and raw columns) with their ``reject_reason`` from
    ``sql/stage_<t>.sql`` (``buckets``: only the rows of the customers in that hash-bucket range)."""
    only = ""
    if buckets is not None and "customer_id" in reg.columns:
        b = bucket_sql("customer_id")
        only = f"\nWHERE {b} >= {int(buckets[0])} AND {b} < {int(buckets[1])}"
    return f"SELECT * FROM (\n{read_sql('stage_' + reg.spec.name)}\n) rows{only}"


def set_aside_duplicates(con: duckdb.DuckDBPyConnection, reg: Registered) -> int:
    """Count the exact duplicate lines of a validated table and, unless its spec says ``duplicates =
    "keep"``, move all but one line of each group from ``<t>_valid`` to ``<t>_rejects`` as
    ``duplicate line``.

    Lines are equal when every mapped column has the same typed value (NULLs equal). Only lines
    that carry an ``order_id`` are compared: without one, two equal rows may be two purchases on
    the same day (CDNOW's history has such rows). A 64-bit hash of each line's columns other than
    texts (hashing category and channel cost three times the rest), sorted, finds the candidates
    (equal lines have equal hashes); the lines are then compared column by column among the
    candidates only. Which copy stays does not matter: the copies are equal.
    """
    if not reg.has("order_id"):
        return 0
    valid, rejects = ident(reg.spec.name + "_valid"), ident(reg.spec.name + "_rejects")
    # lines are compared, and moved, by rowid: a view over the files (see materialised) becomes a table
    n = find_duplicates(con, reg, before=lambda: materialise(con, reg.spec.name))
    try:
        if n and reg.spec.duplicates != "keep":
            con.execute(
                f"INSERT INTO {rejects} SELECT 'duplicate line', {literal(reg.files)}, {duplicate_record(reg)}, "
                f"{ident(reject_key(reg) or 'customer_id')} "
                f"FROM {valid} WHERE rowid IN (SELECT r FROM __centile_dup_rows)")
            con.execute(f"DELETE FROM {valid} WHERE rowid IN (SELECT r FROM __centile_dup_rows)")
        return n
    finally:
        con.execute("DROP TABLE IF EXISTS __centile_dup_rows")


def duplicate_record(reg: Registered) -> str:
    """SQL of a duplicate line's ``__record`` in ``rejects``: its typed values as JSON."""
    cols = [c for c in reg.columns if reg.has(c)]
    return "CAST(to_json(struct_pack(" + ", ".join(f"{ident(c)} := {ident(c)}" for c in cols) + ")) AS VARCHAR)"


def find_duplicates(con: duckdb.DuckDBPyConnection, reg: Registered, before: Callable[[], None] | None = None) -> int:
    """The extra copies of the exact duplicate lines of the table ``<t>_valid`` (every mapped column
    equal, NULLs equal; all but the first copy by rowid) into the temporary table ``__centile_dup_rows``
    (column ``r``: rowids), and their count (see :func:`set_aside_duplicates`). ``before`` runs once
    candidates are found, before rowids are read (it may turn a view into a table). Without
    candidates the table is not created."""
    valid = ident(reg.spec.name + "_valid")
    cols = [c for c in reg.columns if reg.has(c)]
    key = ", ".join(ident(c) for c in cols)
    cheap = ", ".join(ident(c) for c in cols if CONTRACT[reg.spec.name][c][0] != "varchar")
    # sorting the hashes in NumPy is about 3x faster than DuckDB's GROUP BY over ~20M distinct values
    hashes = np.asarray(con.execute(f"SELECT hash({cheap}) AS h FROM {valid}").fetchnumpy()["h"], dtype=np.uint64)
    if not hashes.flags.writeable:
        hashes = hashes.copy()
    hashes.sort()  # in place: np.sort would copy the array first (165 MB at 20M lines)
    repeated = np.unique(hashes[1:][hashes[1:] == hashes[:-1]])
    del hashes
    if repeated.size == 0:
        return 0
    if before is not None:
        before()
    con.register("__centile_dup_hash", pa.table({"h": repeated}))
    try:
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE __centile_dup_rows AS SELECT r FROM (SELECT rowid AS r, "
            f"row_number() OVER (PARTITION BY {key} ORDER BY rowid) AS rn FROM {valid} "
            f"WHERE hash({cheap}) IN (SELECT h FROM __centile_dup_hash)) WHERE rn > 1")
        return int(con.execute("SELECT count(*) FROM __centile_dup_rows").fetchall()[0][0])
    finally:
        con.unregister("__centile_dup_hash")
