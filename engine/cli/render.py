"""Human-readable summaries for the CLI (rich tables on stdout)."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
from rich.console import Console
from rich.table import Table

from centile.errors import ConfigError

if TYPE_CHECKING:  # the printers' inputs; their modules are imported by the commands that use them
    from centile.clv.compute import ClvResult
    from centile.segments.compute import SegmentsResult
    from centile.uplift.compute import UpliftResult
    from centile.uplift.holdout import HoldoutResult


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
        console.print(f"Note: {note}", markup=False, highlight=False)
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
    s = res.summary
    parts = s.get("partitions") or 1
    console.print(f"features: {df.height:,} customers × {df.width} columns, as_of {res.as_of}; "
                  f"{s['rows_rejected']:,} rejected rows (rejects.parquet)"
                  + (f"; computed in {parts} customer partitions" if parts > 1 else ""))
    for k, why in res.skipped.items():
        console.print(f"  skipped {k}: {why}")
    for note in s.get("notes", []):
        console.print(f"  note: {note}", markup=False, highlight=False)


def _pct(v: Any) -> str:
    return "—" if v is None else f"{100 * v:.1f} %"


def print_clubs(console: Console, res: Any) -> None:
    """The club summary table, then notes and the stability table."""
    t = Table(title=f"Clubs ({res.strategy}; {res.universe:,} customers, {res.clubs.height:,} members)",
              title_justify="left")
    for col in ("club", "tier", "size", "eligible", "threshold", "taken", "revenue", "orders",
                "AOV", "returns", "open", "click"):
        t.add_column(col, justify="left" if col == "club" else "right", no_wrap=col == "club")
    for r in res.summary.iter_rows(named=True):
        size = _n(r["size"]) + ("" if r["size"] == r["target_size"] else f" / {_n(r['target_size'])}")
        t.add_row(r["club"], str(r["tier"]), size, _n(r["eligible"]), _n(r["threshold"]),
                  _n(r["taken_by_earlier"]), _pct(r["revenue_share_12m"]), _n(r["orders_12m_mean"]),
                  _n(r["aov_12m"]), _pct(r["return_rate_12m"]), _pct(r["open_rate_12m"]),
                  _pct(r["click_rate_12m"]))
    console.print(t)
    console.print("size: members (/ target when short); threshold: score of the tier's last member; "
                  "taken: customers ranked above that member who are in another club; revenue: share of "
                  "all net revenue (12m); orders, AOV, returns, open, click: member averages (12m).")
    for note in res.notes:
        console.print(f"note: {note}", markup=False, highlight=False)
    if res.stability is not None:
        st = Table(title="Stability against --previous", title_justify="left")
        for col in ("club", "members", "stayed", "joined", "left"):
            st.add_column(col, justify="left" if col == "club" else "right")
        for r in res.stability.iter_rows(named=True):
            st.add_row(r["club"], _n(r["members"]), _n(r["stayed"]), _n(r["joined"]), _n(r["left"]))
        console.print(st)


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


def print_run(console: Console, res: Any) -> None:
    """The final summary of ``centile run``: one row per stage, then where the results are."""
    t = Table(title=f"centile run: {res.seconds:.1f} s", title_justify="left")
    for col in ("stage", "status", "seconds", "rows written", "note"):
        t.add_column(col, justify="right" if col in ("seconds",) else "left")
    for name, rec in res.stages.items():
        rows = ", ".join(f"{k} {v:,}" for k, v in (rec.get("rows") or {}).items())
        secs = "—" if rec.get("seconds") is None else f"{rec['seconds']:.2f}"
        t.add_row(name, rec["status"], secs, rows, rec.get("reason") or "")
    console.print(t)
    clubs = Path(res.out) / "club_summary.parquet"
    if res.stages.get("clubs", {}).get("status") in ("ran", "reused") and clubs.exists():
        ct = Table(title="Clubs", title_justify="left")
        for col in ("club", "tier", "size", "threshold", "revenue (12m)", "orders", "AOV"):
            ct.add_column(col, justify="left" if col == "club" else "right", no_wrap=col == "club")
        for r in pl.read_parquet(clubs).iter_rows(named=True):
            ct.add_row(r["club"], str(r["tier"]), _n(r["size"]), _n(r["threshold"]), _pct(r["revenue_share_12m"]),
                       _n(r["orders_12m_mean"]), _n(r["aov_12m"]))
        console.print(ct)
    for note in getattr(res, "notes", []) or []:
        console.print(f"note: {note}", markup=False, highlight=False)
    console.print(f"results in {res.out}/" + (f"; report: {res.report}" if res.report else ""))


def print_clv(console: Any, res: ClvResult) -> None:
    """Render the fitted models, the holdout table and the top customers with rich."""
    from rich.table import Table

    from centile.clv.models import LABELS

    t = Table(title=f"Models (calibration end {res.calibration_end}, time unit {res.settings.time_unit})")
    for c in ("model", "parameters (± SE)", "log-lik", "n", "converged"):
        t.add_column(c)
    for m in res.models:
        ps = ", ".join(f"{k} = {v:.4g} ± {m.se[k]:.2g}" for k, v in m.params.items())
        t.add_row(LABELS[m.model], ps, f"{m.loglik:,.2f}", f"{m.n:,}", "yes" if m.converged else "no")
    console.print(t)
    sm = res.summary
    console.print(f"{sm['customers']:,} customers; horizon {res.settings.horizon:g} {res.settings.time_unit}s: "
                  f"{sm['expected_transactions']:,.0f} expected transactions, mean P(alive) "
                  f"{sm['p_alive_mean']:.3f}, total CLV {sm['clv_total']:,.0f}")
    if res.holdout is not None:
        h = Table(title="Holdout: transactions by calibration frequency")
        for c in res.holdout.columns:
            h.add_column(c, justify="right")
        for row in res.holdout.iter_rows():
            h.add_row(*(f"{v:,.2f}" if isinstance(v, float) else str(v) for v in row))
        console.print(h)
    for note in res.notes:
        console.print(f"note: {note}", markup=False, highlight=False)


def print_segments(console: Any, res: SegmentsResult) -> None:
    """A rich summary: RFM segment sizes and every segmentation's profile lines."""
    from rich.table import Table

    t = Table(title="Segments", show_lines=False)
    for c in ("segmentation", "segment", "customers", "share", "revenue share", "description"):
        t.add_column(c, justify="right" if c in ("customers", "share", "revenue share") else "left")
    prof = res.profiles.filter(pl.col("segment") != "all customers")
    for row in prof.iter_rows(named=True):
        rs = row.get("revenue_share")
        t.add_row(row["segmentation"], str(row["segment"]), f"{row['customers']:,}", f"{row['share'] * 100:.1f} %",
                  "" if rs is None else f"{rs * 100:.1f} %", row["description"])
    console.print(t)
    if res.k:
        console.print(f"k-means: k = {res.k}" + (f" (silhouette {res.silhouette[res.k]:.3f})" if res.silhouette else ""))
    for n in res.notes:
        console.print(f"note: {n}", markup=False, highlight=False)


def print_uplift(console: Any, res: UpliftResult, *, methods: tuple[str, ...] | None = None,
                 limit: int = 60) -> None:
    """Rich table of the overall rows (one method per outcome) and the notes (SRM failures in red)."""
    from rich.markup import escape
    from rich.table import Table

    from centile.uplift.compute import PREFERRED_METHODS, preferred_rows

    df = preferred_rows(res.uplift.filter(pl.col("breakdown") == "overall"), methods or PREFERRED_METHODS)
    t = Table(title=f"Uplift vs control (overall; {res.summary['units']:,} contacts, "
                    f"{res.summary['campaigns']} campaigns; all rows in uplift.parquet)", title_justify="left",
              padding=(0, 1), collapse_padding=True)
    for c in ("campaign", "arm", "outcome", "method", "n arm / ctrl", "uplift", "95 % CI", "rel", "p", "ROI",
              "SRM p"):
        t.add_column(c, justify="left" if c in ("campaign", "arm", "outcome", "method") else "right", no_wrap=True)

    def f(v: Any, pct: bool = False) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "—"
        return f"{v:+.1%}" if pct else f"{v:.3g}"

    for r in df.head(limit).iter_rows(named=True):
        srm = f(r["srm_p_value"]) + (" FAIL" if r["srm_flag"] else "")
        t.add_row(r["campaign"], r["arm"], r["outcome"], r["method"], f"{r['n_arm']:,} / {r['n_control']:,}",
                  f(r["uplift"]), f"{f(r['uplift_ci_low'])} .. {f(r['uplift_ci_high'])}", f(r["rel_uplift"], True),
                  f(r["p_value"]), f(r["roi"]), srm,
                  style="bold red" if r["srm_flag"] else None)
    console.print(t)
    if df.height > limit:
        console.print(f"... {df.height - limit} more rows in uplift.parquet")
    for note in res.notes:
        console.print(f"[bold red]{escape(note)}[/]" if note.startswith("SAMPLE RATIO") else f"Note: {escape(note)}",
                      highlight=False)


def print_holdout(console: Any, res: HoldoutResult) -> None:
    """Arm sizes and shares per campaign (rich)."""
    from rich.table import Table

    per = (res.assignments.group_by("campaign", "arm").agg(n=pl.len())
           .with_columns(share=pl.col("n") / pl.col("n").sum().over("campaign")).sort("campaign", "arm"))
    t = Table(title="Assignments", title_justify="left")
    for c in ("campaign", "arm", "customers", "share"):
        t.add_column(c, justify="left" if c in ("campaign", "arm") else "right")
    for r in per.iter_rows(named=True):
        t.add_row(r["campaign"], r["arm"], f"{r['n']:,}", f"{r['share']:.2%}")
    console.print(t)
    for note in res.notes:
        console.print(f"Note: {note}", markup=False, highlight=False)
