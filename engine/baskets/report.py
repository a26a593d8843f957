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


#: rows of basket_rules.parquet read at a time for the report
_BATCH_ROWS = 1 << 20

_RULE_COLUMNS = ("segment_by", "segment", "antecedent", "antecedent_2", "consequent", "consequent_2", "lift",
                 "support", "confidence", "count_both", "n_baskets")


def _top_rules(path: Path, top: int) -> pl.DataFrame:
    """The first ``top`` rules of every segment of ``basket_rules.parquet`` (sorted by segment, then
    lift), read a batch at a time: a segment's rules are contiguous, so a batch adds to the rows
    each segment already has."""
    import pyarrow.parquet as pq

    have: dict[tuple[str, str], int] = {}
    keep = []
    for batch in pq.ParquetFile(path).iter_batches(batch_size=_BATCH_ROWS, columns=list(_RULE_COLUMNS)):
        df = pl.DataFrame(pl.from_arrow(batch)).with_columns(r=pl.int_range(pl.len()).over("segment_by", "segment"))
        before = pl.DataFrame([(k[0], k[1], v) for k, v in have.items()], orient="row",
                              schema={"segment_by": df.schema["segment_by"], "segment": df.schema["segment"],
                                      "n": pl.Int64})
        df = df.join(before, on=["segment_by", "segment"], how="left", maintain_order="left", nulls_equal=True)
        keep.append(df.filter(pl.col("r") + pl.col("n").fill_null(0) < top).drop("r", "n"))
        for seg_by, seg, n in df.group_by("segment_by", "segment").len().iter_rows():
            have[(seg_by, seg)] = have.get((seg_by, seg), 0) + n
    return pl.concat(keep) if keep else pl.read_parquet(path, columns=list(_RULE_COLUMNS))


def baskets_section(results: Path, cfg: Config | None = None) -> str:
    # the rules are millions of rows, sorted by segment then lift: only each segment's first rows are
    # shown, so the file is scanned for them rather than read whole
    rules_path = results / "basket_rules.parquet"
    rules = rules_path if rules_path.exists() else None
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
    best = None if rules is None else _top_rules(rules_path, top).select(
        "segment_by", "segment", _side("antecedent"), _side("consequent"), "lift", "support", "confidence",
        "count_both", "n_baskets")
    if best is not None and best.height:
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
