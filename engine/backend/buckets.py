"""The validated rows of each customer table, written once into customer-hash pieces on disk.

Without pieces, every customer partition filters whole tables by the hash of the customer id:
in this process each partition rescans the validated rows (and decodes again what stays a view
over the input files, e.g. the e-mail events), and on a cluster each partition's first task
reads and validates every input file. With pieces, one pass writes each table's validated rows
into ``count`` Parquet pieces in the run's scratch folder (a DuckDB ``COPY ... PARTITION_BY``),
piece ``k`` holding the customers of partition ``k`` of ``count`` (:class:`Partitioning`); a
partition then reads only the files of its pieces. A partitioning with another count reads the
pieces that overlap its bucket range and keeps its own buckets of the boundary pieces.

The pieces live in the run's scratch folder beside ``--out`` (a shared file system on a
cluster), which the run removes when it ends.
"""

from __future__ import annotations

import errno
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import duckdb

from centile.backend.partitions import BUCKETS, Partitioning, bucket_sql
from centile.errors import OutputError
from centile.io.sqlfiles import ident, literal

#: the columns that rejected rows carry besides the typed ones (pieces written from ``<t>_staged``)
REJECT_COLUMNS = ("reject_reason", "__centile_file", "__record")

#: hooks the tests use to see which files a view reads: ``observe(table, files)``, called whenever
#: a view over pieces is defined
observe = None


def piece_sql(count: int, column: str = "customer_id") -> str:
    """SQL for the piece of a row: the partition of ``count`` (contiguous bucket ranges,
    :meth:`Partitioning.bounds`) holding the row's bucket ``b``, i.e. ``((b + 1) * count - 1) // BUCKETS``."""
    return f"CAST((({bucket_sql(column)} + 1) * {int(count)} - 1) // {BUCKETS} AS INTEGER)"


@dataclass(frozen=True)
class Pieces:
    """One table's validated rows in ``count`` pieces under ``folder`` (``__piece=<k>/*.parquet``)
    plus an empty ``schema.parquet`` that gives an empty partition its typed columns."""

    table: str
    folder: str
    count: int
    #: the typed columns, in the order of ``<t>_valid``
    columns: tuple[str, ...]
    #: the pieces also hold the rejected rows (``reject_reason`` not NULL), written from ``<t>_staged``
    with_rejects: bool
    #: piece number -> its files (pieces without rows have none)
    files: tuple[tuple[int, tuple[str, ...]], ...]
    #: column -> its DuckDB type where Parquet does not keep it (an ENUM comes back as VARCHAR)
    casts: tuple[tuple[str, str], ...] = ()

    def files_of(self, lo: int = 0, hi: int = BUCKETS) -> list[str]:
        """The schema file and the files of the pieces overlapping the bucket range ``[lo, hi)``."""
        parts = Partitioning(self.count)
        out = [str(Path(self.folder) / "schema.parquet")]
        for k, files in self.files:
            a, b = parts.bounds(k)
            if a < hi and lo < b:
                out.extend(files)
        return out

    def exact(self, lo: int, hi: int) -> bool:
        """Is ``[lo, hi)`` a union of whole pieces (no bucket filter needed)?"""
        starts = {Partitioning(self.count).bounds(k)[0] for k in range(self.count)} | {BUCKETS}
        return lo in starts and hi in starts

    def select(self, buckets: tuple[int, int] | None = None, *, rejects: bool | None = False) -> str:
        """SQL over the pieces of the bucket range ``buckets`` (None: every piece): the typed columns
        of the valid rows (``rejects=False``), the rejected rows with ``reject_reason``, file and
        record (``True``), or every row with those columns (``None``, ``<t>_staged``)."""
        lo, hi = buckets or (0, BUCKETS)
        files = self.files_of(lo, hi)
        if observe is not None:
            observe(self.table, files)
        casts = dict(self.casts)
        cols = [f"CAST({ident(c)} AS {casts[c]}) AS {ident(c)}" if c in casts else ident(c) for c in self.columns]
        if rejects is not False:
            cols += [ident(c) if self.with_rejects else f"CAST(NULL AS VARCHAR) AS {ident(c)}"
                     for c in REJECT_COLUMNS]
        cond = []
        if rejects is False and self.with_rejects:
            cond.append("reject_reason IS NULL")
        elif rejects is True:
            cond.append("reject_reason IS NOT NULL" if self.with_rejects else "false")
        if not self.exact(lo, hi):
            b = bucket_sql("customer_id")
            cond.append(f"{b} >= {int(lo)} AND {b} < {int(hi)}")
        src = "read_parquet([" + ", ".join(literal(f) for f in files) + "], hive_partitioning = false)"
        return f"SELECT {', '.join(cols)} FROM {src}" + (f" WHERE {' AND '.join(cond)}" if cond else "")


def write_pieces(con: duckdb.DuckDBPyConnection, table: str, columns: list[str], folder: Path, count: int,
                 *, with_rejects: bool) -> Pieces:
    """Write the rows of ``table`` (``<table>_staged`` with its reject columns when ``with_rejects``,
    else ``<table>_valid``) into ``count`` customer-hash pieces under ``folder`` in one pass.

    Raises
    ------
    OutputError
        The scratch disk is full (or not writable): names the folder and how to free space.
    """
    cols = [ident(c) for c in columns] + ([ident(c) for c in REJECT_COLUMNS] if with_rejects else [])
    src = ident(table + ("_staged" if with_rejects else "_valid"))
    casts = write_schema(con, table, columns, folder, with_rejects=with_rejects)
    try:
        con.execute(f"COPY (SELECT {', '.join(cols)}, {piece_sql(count)} AS __piece FROM {src}) "
                    f"TO {literal(str(folder))} (FORMAT parquet, PARTITION_BY (__piece), OVERWRITE_OR_IGNORE, "
                    f"FILENAME_PATTERN 'data_{{i}}')")
    except (duckdb.IOException, OSError) as exc:
        raise scratch_error(folder, exc) from None
    found: dict[int, list[str]] = {}
    for f in sorted(folder.glob("__piece=*/*.parquet")):
        found.setdefault(int(f.parent.name.split("=", 1)[1]), []).append(str(f))
    return Pieces(table, str(folder), count, tuple(columns), with_rejects,
                  tuple((k, tuple(v)) for k, v in sorted(found.items())), casts)


def write_schema(con: duckdb.DuckDBPyConnection, table: str, columns: list[str], folder: Path, *,
                 with_rejects: bool) -> tuple[tuple[str, str], ...]:
    """Create ``folder`` (it must not exist) with the empty ``schema.parquet`` of the pieces of
    ``table`` (from ``<table>_staged`` with the reject columns, or ``<table>_valid``); return the
    columns whose DuckDB type Parquet does not keep, with that type (:attr:`Pieces.casts`)."""
    folder.mkdir(parents=True, exist_ok=False)
    cols = [ident(c) for c in columns] + ([ident(c) for c in REJECT_COLUMNS] if with_rejects else [])
    src = ident(table + ("_staged" if with_rejects else "_valid"))
    schema = folder / "schema.parquet"
    try:
        con.execute(f"COPY (SELECT {', '.join(cols)} FROM {src} LIMIT 0) TO {literal(str(schema))} (FORMAT parquet)")
        before = dict(con.execute(f"SELECT column_name, column_type FROM (DESCRIBE SELECT {', '.join(cols)} "
                                  f"FROM {src})").fetchall())
        after = dict(con.execute(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM "
                                 f"read_parquet({literal(str(schema))}))").fetchall())
    except (duckdb.IOException, OSError) as exc:
        raise scratch_error(folder, exc) from None
    return tuple((c, t) for c, t in before.items() if c in columns and after.get(c) != t)


def pieces_folder(scratch: Path, table: str) -> Path:
    """A fresh folder for one table's pieces inside the run's scratch folder."""
    return scratch / f"pieces-{uuid.uuid4().hex[:8]}" / table


def scratch_error(folder: Path, exc: BaseException) -> OutputError:
    """The error for a failed write into the scratch folder: disk full, or not writable."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    full = (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)) or \
        "space left" in text.lower() or "disk full" in text.lower()
    free, there = "", folder
    while not there.exists() and there != there.parent:
        there = there.parent
    try:
        free = f" ({shutil.disk_usage(there).free / 1e9:.1f} GB free)"
    except OSError:
        pass
    what = "the disk is full" if full else "it cannot be written"
    return OutputError(
        f"cannot write the customer-hash pieces of the input into the scratch folder {folder.parent}{free}: "
        f"{what} ({text}). The scratch folder lives beside --out and needs about the size of the "
        "validated input; free space there, or point --out to a folder on a disk with more room "
        "(the scratch folder is removed when the run ends).")
