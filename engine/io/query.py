"""Ad-hoc SQL over the inputs and the outputs of a run (``centile sql``)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import duckdb
import polars as pl

from centile import urls
from centile.backend.session import connect, input_folders, open_session, restrict_files
from centile.config import Config
from centile.errors import QueryError
from centile.io.sqlfiles import ident, literal
from centile.runtime import Progress

_INTERNAL = ("src_", "raw_")
_INTERNAL_SUFFIX = ("_typed", "_valid", "_staged", "_rejects")


def register_results(con: duckdb.DuckDBPyConnection, results: str | Path, skip: set[str] = frozenset()
                     ) -> list[str]:
    """Register each ``*.parquet`` file or Parquet folder in ``results`` as a view named by its
    stem, except names in ``skip`` (the input tables win). ``results`` may be an output URL of
    ``centile run`` (the run its ``LATEST`` names) or one of its run prefixes."""
    if urls.is_url(str(results)):
        return _register_url_results(con, str(results), skip)
    results = Path(results)
    names = []
    if not results.is_dir():
        return names
    for p in sorted(results.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_file() and p.suffix == ".parquet":
            name, target = p.stem, str(p)
        elif p.is_dir() and any(p.glob("**/*.parquet")):
            name, target = p.name, str(p / "**" / "*.parquet")
        else:
            continue
        if name in skip:
            continue
        con.execute(f"CREATE OR REPLACE TEMP VIEW {ident(name)} AS SELECT * FROM read_parquet({literal(target)})")
        names.append(name)
    return names


def _register_url_results(con: duckdb.DuckDBPyConnection, url: str, skip: set[str]) -> list[str]:
    from centile.io.outputs import run_url

    run = run_url(url)
    urls.register(con, [run])
    tables: dict[str, str] = {}
    for f in urls.files(run):
        rel = f[len(run):].lstrip("/")
        top, _, rest = rel.partition("/")
        if not f.endswith(".parquet") or top.startswith("."):
            continue
        name, target = (top[:-len(".parquet")], f) if not rest else (top, urls.join(run, top, "**", "*.parquet"))
        tables.setdefault(name, target)
    names = []
    for name, target in sorted(tables.items()):
        if name in skip:
            continue
        con.execute(f"CREATE OR REPLACE TEMP VIEW {ident(name)} AS SELECT * FROM read_parquet({literal(target)})")
        names.append(name)
    return names


def _run_prefix(url: str) -> str:
    from centile.io.outputs import run_url

    return run_url(url).rstrip("/") + "/"


def run_query(query: str, cfg: Config | None = None, results: str | Path | None = None,
              progress: Progress | None = None, *, read_only: bool = False) -> pl.DataFrame:
    """Run a DuckDB query and return the result as a Polars DataFrame.

    With ``cfg`` the validated inputs are registered under the contract's
    names (``orders``, ``products``, ...; valid rows only) plus ``rejects``;
    with ``results`` every Parquet output of that run folder under its file
    name (``features``, ``clubs``, ...).

    This is a console over the user's own data: by default any DuckDB statement runs,
    including ones that read or write other files. ``read_only`` allows one SELECT, and
    file access only to the inputs and ``results`` (for shared servers).
    """
    if read_only:
        from centile.config import parse_sql

        doc = parse_sql(query)
        if doc.get("error") or len(doc.get("statements") or []) != 1:
            raise QueryError("--read-only runs exactly one SELECT statement (no COPY, ATTACH, SET, INSERT, "
                             "several statements, ...)")
    with contextlib.ExitStack() as stack:
        if cfg is not None:
            con = stack.enter_context(open_session(cfg, progress, restrict=False)).con
        else:
            con = connect(Config(tables={}))
            stack.callback(con.close)
        views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE temporary AND NOT internal").fetchall()
                 if not r[0].startswith(_INTERNAL) and not r[0].endswith(_INTERNAL_SUFFIX)}
        if results is not None:
            views |= set(register_results(con, results, views))
        if read_only:
            paths = [p for spec in (cfg.tables.values() if cfg else []) for p in spec.paths]
            inputs = [Path(p) for p in paths if not urls.is_url(p)]
            remote = results is not None and urls.is_url(str(results))
            restrict_files(con, input_folders(inputs)
                           + ([Path(results)] if results is not None and not remote else []),
                           prefixes=urls.prefixes(paths) + ([_run_prefix(str(results))] if remote else []))
        try:
            rel = con.sql(query)
        except duckdb.Error as exc:
            hint = (f"; tables: {', '.join(sorted(views))}" if views else
                    "; no tables are registered: pass --data/-c for the inputs or --results for a run's outputs")
            raise QueryError(f"{str(exc).splitlines()[0]}{hint}") from None
        if rel is None:
            raise QueryError("the statement returned no rows; `centile sql` runs SELECT queries")
        try:
            return rel.pl()
        except duckdb.Error as exc:
            raise QueryError(str(exc).splitlines()[0]) from None
