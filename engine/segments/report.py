"""report.html sections of the segments: the R×F grid and the segment profiles.

Each returns "" when its Parquet file is absent from the results folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from centile.config import Config
from centile.report import charts
from centile.report.html import chart, esc, read, table
from centile.report.sections import register_section


def rfm_section(results: Path, cfg: Config | None = None) -> str:
    """The R×F grid as two heatmaps (customers, revenue share) and the named RFM segments."""
    grid = read(results, "rfm_grid")
    if grid is None or grid.is_empty():
        return ""
    bins = int(grid["r"].max())
    counts = np.zeros((bins, bins))
    share = np.zeros((bins, bins))
    for row in grid.iter_rows(named=True):
        # R from best (top) to worst, F from worst (left) to best
        counts[bins - row["r"], row["f"] - 1] = row["customers"]
        share[bins - row["r"], row["f"] - 1] = 100 * (row["revenue_share"] or 0.0)
    rl = [str(r) for r in range(bins, 0, -1)]
    cl = [str(f) for f in range(1, bins + 1)]
    svg1 = charts.heatmap(counts, rl, cl, title="Customers per R × F cell", xlabel="F (frequency score)",
                          ylabel="R (recency score)")
    svg2 = charts.heatmap(share, rl, cl, title="Share of 12-month net revenue, %", xlabel="F (frequency score)",
                          ylabel="R (recency score)", fmt="{:.1f}")
    prof = read(results, "segment_profiles")
    seg = ""
    if prof is not None:
        part = prof.filter((pl.col("segmentation") == "rfm_segment") & (pl.col("segment") != "all customers"))
        cols = [c for c in ("segment", "customers", "share", "revenue_share", "recency_days_mean", "orders_12m_mean",
                            "aov_12m", "description") if c in part.columns]
        seg = table(part.select(cols), left=("segment", "description"), pct=("share", "revenue_share"),
                    table_id="rfm-segments")
    return (f'<section id="rfm"><h2>RFM</h2><p class="muted">Scores 1–{bins} by quantile over the customers with '
            "orders; tied customers share a score. Named segments from R and FM = ⌈(F + M) / 2⌉ (see README).</p>"
            f"{chart(svg1, 'Customers per R x F cell')}{chart(svg2, 'Revenue share per R x F cell')}{seg}</section>")


def segments_section(results: Path, cfg: Config | None = None) -> str:
    """One profile table per segmentation (except RFM, shown in its own section)."""
    prof = read(results, "segment_profiles")
    if prof is None or prof.is_empty():
        return ""
    cols = ["segment", "customers", "share", "revenue_share", "orders_12m_mean", "orders_12m_ci_low",
            "orders_12m_ci_high", "aov_12m", "return_rate_12m", "open_rate_12m", "top_categories",
            "preferred_channel_mode", "description"]
    parts = []
    for s in prof["segmentation"].unique(maintain_order=True).to_list():
        if s == "rfm_segment":
            continue
        part = prof.filter((pl.col("segmentation") == s) & (pl.col("segment") != "all customers"))
        parts.append(f"<h3>{esc(s)}</h3>" + table(
            part.select([c for c in cols if c in part.columns]), left=("segment", "top_categories",
                                                                       "preferred_channel_mode", "description"),
            pct=("share", "revenue_share", "return_rate_12m", "open_rate_12m"), table_id=f"segments-{s}"))
    return ('<section id="segments"><h2>Segments</h2><p class="muted">Per segment: size, revenue share and KPIs '
            "(95 % confidence intervals in segment_profiles.parquet) with a description of what sets it apart "
            f"from the whole base.</p>{''.join(parts)}</section>")


register_section("rfm", "RFM", rfm_section)
register_section("segments", "Segments", segments_section)
