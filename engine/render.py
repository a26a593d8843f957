"""Human-readable summaries for the CLI (rich tables on stdout)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import polars as pl
from rich.console import Console
from rich.table import Table

from .errors import ConfigError


def _n(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def print_validation(console: Console, summary: dict[str, Any]) -> None:
    """Tables read, rows, rejects by reason, and feature availability."""
    t = Table(title=f"Inputs (as_of {summary['as_of']}, {summary['as_of_source']})", title_justify="left")
    for col in ("table", "rows read", "filtered", "valid", "rejected", "from", "to", "customers"):
        t.add_column(col, justify="left" if col in ("table", "from", "to") else "right")
    for name, tab in summary["tables"].items():
        t.add_row(name, _n(tab["rows_read"]), _n(tab["rows_filtered_by_config"]), _n(tab["rows_valid"]),
                  _n(tab["rows_rejected"]), (tab["date_min"] or "—")[:10], (tab["date_max"] or "—")[:10],
                  _n(tab["customers"]))
    console.print(t)
    reasons = [(n, r, c) for n, tab in summary["tables"].items() for r, c in tab["rejects_by_reason"].items()]
    if reasons:
        rt = Table(title="Rejected rows by reason (set aside into rejects.parquet)", title_justify="left")
        rt.add_column("table")
        rt.add_column("reason")
        rt.add_column("rows", justify="right")
        for n, r, c in reasons:
            rt.add_row(n, r, _n(c))
        console.print(rt)
    if summary.get("absent_tables"):
        console.print(f"Absent optional tables: {', '.join(summary['absent_tables'])}")
    for note in summary.get("notes", []):
        console.print(f"Note: {note}")
    skipped = summary.get("features_skipped") or {}
    if "features_available" in summary:
        ok = [k for k, v in summary["features_available"].items() if v]
        console.print("Features available: orders, revenue, returns, max_price_kept_24m"
                      + (", " + ", ".join(ok) if ok else ""))
    for k, why in skipped.items():
        console.print(f"Skipped {k}: {why}")


def print_features(console: Console, res: Any) -> None:
    """A short account of a features run."""
    df: pl.DataFrame = res.features
    console.print(f"features.parquet: {df.height:,} customers × {df.width} columns, as_of {res.as_of}")
    s = res.summary
    console.print(f"rejected rows: {s['rows_rejected']:,} (see rejects.parquet)")
    for k, why in res.skipped.items():
        console.print(f"skipped {k}: {why}")
    if res.out is not None:
        console.print(f"written to {res.out}/")


def emit_frame(console: Console, df: pl.DataFrame, fmt: str, out: Path | None, limit: int) -> None:
    """Print or write a query result in table, csv, json or parquet format."""
    fmt = fmt.lower()
    if fmt not in ("table", "csv", "json", "parquet"):
        raise ConfigError(f"--format {fmt!r}: use table, csv, json or parquet")
    if fmt == "parquet":
        if out is None:
            raise ConfigError("--format parquet needs --out FILE")
        df.write_parquet(out)
        console.print(f"wrote {df.height:,} rows to {out}")
        return
    if fmt == "table":
        if out is not None:
            raise ConfigError("--format table prints to the terminal; use csv, json or parquet with --out")
        with pl.Config(tbl_rows=limit, tbl_cols=-1, tbl_width_chars=max(console.width, 100),
                       fmt_str_lengths=40, tbl_hide_dataframe_shape=True):
            console.print(str(df.head(limit)), highlight=False, markup=False, soft_wrap=True)
        if df.height > limit:
            console.print(f"({df.height:,} rows, {limit} shown; --limit N or --format csv for all)")
        return
    text = df.write_csv() if fmt == "csv" else df.write_json()
    if out is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    else:
        Path(out).write_text(text)
        console.print(f"wrote {df.height:,} rows to {out}")
