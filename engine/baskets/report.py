"""report.html section of basket analysis: top rules per segment, and the recommender against popularity."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from centile.config import Config
from centile.report.html import esc, read, table
from centile.report.sections import register_section


def _side(col: str) -> pl.Expr:
    """``a`` or ``a + b`` (a rule side of one or two items)."""
    one = pl.col(col).cast(pl.String)
    two = pl.col(f"{col}_2").cast(pl.String)
    return pl.when(two.is_null()).then(one).otherwise(pl.concat_str(one, pl.lit(" + "), two)).alias(col)


def baskets_section(results: Path, cfg: Config | None = None) -> str:
    rules = read(results, "basket_rules")
    summary = read(results, "basket_summary")
    # recommendations: ten rows per customer; only their counts are shown, scanned, never read whole
    recs_path = results / "recommendations.parquet"
    recs = pl.scan_parquet(recs_path) if recs_path.exists() else None
    ev = read(results, "recommendation_eval")
    if rules is None and recs is None:
        return ""
    parts = []
    top = 10
    if cfg is not None:
        try:
            top = cfg.settings("baskets").top_rules
        except KeyError:
            pass
    if summary is not None:
        parts += ['<p class="muted">A basket is one order; an item counts once per basket. A rule A → C is '
                  "kept when at least <em>threshold</em> baskets of its segment hold both (an integer count). "
                  "Lift = N·c(A∪C)/(c(A)·c(C)).</p>",
                  table(summary, left=("segment_by", "segment"), table_id="basket-summary")]
    if rules is not None and rules.height:
        best = (rules.with_columns(r=pl.int_range(pl.len()).over("segment_by", "segment"))
                .filter(pl.col("r") < top)
                .select("segment_by", "segment", _side("antecedent"), _side("consequent"), "lift", "support",
                        "confidence", "count_both", "n_baskets"))
        parts += [f"<h3>Top {top} rules per segment (by lift)</h3>",
                  table(best, left=("segment_by", "segment", "antecedent", "consequent"),
                        pct=("support", "confidence"), table_id="basket-rules", max_rows=500)]
    if ev is not None:
        cutoff = ev["cutoff"][0] if "cutoff" in ev.columns and ev.height else None
        verdict = []
        for r in ev.filter(pl.col("model") == "centile").iter_rows(named=True):
            word = "beats" if r["beats_popularity"] else "does not beat"
            verdict.append(f"{esc(r['protocol'])}: the recommender {word} popularity")
        parts += [f"<h3>Recommendations against popularity (fit before {esc(cutoff)}, scored after)</h3>",
                  f'<p class="muted">{"; ".join(verdict)}.</p>',
                  table(ev.drop("cutoff", strict=False), left=("protocol", "model"),
                        pct=("hit_rate", "precision", "recall"), table_id="recommend-eval")]
    if recs is not None:
        src = recs.group_by("source").agg(pl.len().alias("rows")).sort("source").collect()
        n, k = recs.select(pl.col("customer_id").n_unique(), pl.col("rank").max()).collect().row(0)
        parts += ["<h3>Recommendations</h3>",
                  f'<p class="muted">{n:,} customers, up to {k} items each.</p>',
                  table(src, left=("source",), table_id="recommend-sources")]
    return f'<section id="baskets"><h2>Baskets and recommendations</h2>{"".join(parts)}</section>'


register_section("baskets", "Baskets and recommendations", baskets_section)
