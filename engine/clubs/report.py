"""report.html section of the clubs: the club table, revenue shares and stability against --previous."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from centile.config import Config
from centile.report import charts
from centile.report.html import chart, read, table
from centile.report.sections import register_section


def clubs_section(results: Path, cfg: Config | None = None) -> str:
    summary = read(results, "club_summary")
    if summary is None:
        return ""
    cols = [c for c in ("club", "tier", "size", "target_size", "eligible", "threshold", "taken_by_earlier",
                        "revenue_share_12m", "orders_12m_mean", "aov_12m", "return_rate_12m", "open_rate_12m",
                        "click_rate_12m") if c in summary.columns]
    t = table(summary.select(cols), left=("club",), table_id="club-table",
              pct=("revenue_share_12m", "return_rate_12m", "open_rate_12m", "click_rate_12m"))
    t1 = summary.filter(pl.col("tier") == 1) if "tier" in summary.columns else summary
    svg = charts.bar_chart([str(c) for c in t1["club"]], [float(v) for v in t1["revenue_share_12m"].fill_null(0) * 100],
                           title="Share of 12-month net revenue, tier 1 (top 1 %)", xlabel="% of all net revenue")
    stab = read(results, "club_stability")
    st = ("<h3>Stability against the previous run</h3>" + table(stab, left=("club",), table_id="club-stability")
          if stab is not None else "")
    return (f'<section id="clubs"><h2>1 % clubs</h2><p class="muted">Overlap-free: each customer is in at most one '
            f"club and tier. threshold = score of the tier's last member; taken = customers ranked above it who "
            f"are in an earlier club.</p>{t}{chart(svg, 'Revenue share per club, tier 1')}{st}</section>")


register_section("clubs", "Clubs", clubs_section)
