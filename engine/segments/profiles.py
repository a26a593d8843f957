"""Segment profiles ("personas"): KPIs with 95 % confidence intervals and a one-line description.

For every segmentation column and every segment (plus one ``all customers``
row per segmentation) :func:`profile_table` reports size, share, revenue
share, means of recency, frequency, net revenue, tenure, age and premium
margin, the ratio KPIs AOV (gross revenue / orders), return rate (returned
/ gross value) and e-mail open and click rates (opened / sent, clicked /
sent), the top categories by revenue, the preferred order channel and the
gender and region mix.

Confidence intervals (95 %, normal approximation; null below 2 customers):

* means: ``mean ± 1.96 · sd / √n``;
* ratios of sums ``R = Σy / Σx`` (per-customer y and x): delta method,
  ``SE(R) = √(Σ(y - R x)² / (n - 1) / n) / x̄`` (Cochran, *Sampling
  Techniques*, 3rd ed., eq. 6.13).

The description names the (at most three) features on which the segment's
mean differs most from the whole base in standard deviations of the
customer-level feature (``|mean_seg - mean_all| / sd_all >= 0.25``), plus
its dominant category and channel when they stand out, e.g.
"Orders 3.1× as often as average, mostly fashion, returns little (4 % vs 13 %)."
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import polars as pl

ALL = "all customers"
NONE = "(none)"
Z95 = 1.959963984540054

#: mean KPIs: output name -> feature column
MEANS = {"recency_days": "recency_days", "orders_12m": "orders_12m", "net_revenue_12m": "net_revenue_12m",
         "tenure_days": "tenure_days", "premium_margin_12m": "premium_margin_12m", "age": "age"}
#: ratio KPIs: output name -> (numerator, denominator) per-customer expressions
RATIOS = {
    "aov_12m": (pl.col("gross_revenue_12m"), pl.col("orders_12m")),
    "return_rate_12m": (pl.col("returned_value_12m"), pl.col("gross_revenue_12m")),
    "open_rate_12m": (pl.col("open_rate_12m") * pl.col("emails_sent_12m"), pl.col("emails_sent_12m")),
    "click_rate_12m": (pl.col("click_rate_12m") * pl.col("emails_sent_12m"), pl.col("emails_sent_12m")),
}
_RATIO_NEEDS = {"aov_12m": ("gross_revenue_12m", "orders_12m"),
                "return_rate_12m": ("returned_value_12m", "gross_revenue_12m"),
                "open_rate_12m": ("open_rate_12m", "emails_sent_12m"),
                "click_rate_12m": ("click_rate_12m", "emails_sent_12m")}
#: traits the description may name: feature column (customer level) -> profile column
TRAITS = {"orders_12m": "orders_12m", "recency_days": "recency_days", "net_revenue_12m": "net_revenue_12m",
          "avg_order_value_12m": "aov_12m", "return_rate_12m": "return_rate_12m",
          "open_rate_12m": "open_rate_12m", "click_rate_12m": "click_rate_12m",
          "premium_margin_12m": "premium_margin_12m", "tenure_days": "tenure_days",
          "max_price_kept_24m": "max_price_kept_24m"}
MIN_EFFECT = 0.25
_ORDER_TRAITS = {"orders_12m", "recency_days", "net_revenue_12m", "avg_order_value_12m", "return_rate_12m",
                 "tenure_days", "max_price_kept_24m", "premium_margin_12m"}


#: at most this many columns of the customer table are copied into one chunk at a time
AGG_COLUMNS = 4


def _agg_specs(cols: set[str], share_cols: list[str]) -> list[tuple[tuple[str, ...], list[pl.Expr]]]:
    """The aggregations, in output order, each with the customer columns it reads."""
    out: list[tuple[tuple[str, ...], list[pl.Expr]]] = [((), [pl.len().alias("customers")])]
    if "net_revenue_12m" in cols:
        out.append((("net_revenue_12m",), [pl.col("net_revenue_12m").sum().alias("_rev")]))
    for name, col in MEANS.items():
        if col in cols:
            x = pl.col(col).cast(pl.Float64)
            out.append(((col,), [x.mean().alias(f"{name}_mean"), x.std().alias(f"_{name}_sd"),
                                 x.count().alias(f"_{name}_n")]))
    if "max_price_kept_24m" in cols:
        out.append((("max_price_kept_24m",), [pl.col("max_price_kept_24m").mean().alias("max_price_kept_24m_mean")]))
    for name, (y, x) in RATIOS.items():
        if not set(_RATIO_NEEDS[name]) <= cols:
            continue
        ok = y.is_not_null() & x.is_not_null() & y.is_not_nan() & x.is_not_nan()
        yy, xx = y.filter(ok).cast(pl.Float64), x.filter(ok).cast(pl.Float64)
        out.append((_RATIO_NEEDS[name], [
            yy.sum().alias(f"_{name}_sy"), xx.sum().alias(f"_{name}_sx"), (yy * yy).sum().alias(f"_{name}_syy"),
            (xx * xx).sum().alias(f"_{name}_sxx"), (xx * yy).sum().alias(f"_{name}_sxy"),
            ok.sum().alias(f"_{name}_n")]))
    if share_cols and "net_revenue_lifetime" in cols:
        w = pl.col("net_revenue_lifetime").clip(lower_bound=0.0)
        out.append((("net_revenue_lifetime",), [w.sum().alias("_w")]))
        out += [(("net_revenue_lifetime", c), [(pl.col(c).fill_null(0.0) * w).sum().alias(f"_cat_{c}")])
                for c in share_cols]
    return out


def _batches(specs: list[tuple[tuple[str, ...], list[pl.Expr]]]
             ) -> list[tuple[list[str], list[pl.Expr]]]:
    """Consecutive aggregations packed so that each batch reads at most AGG_COLUMNS columns."""
    out: list[tuple[list[str], list[pl.Expr]]] = []
    for need, exprs in specs:
        if out and len(set(out[-1][0]) | set(need)) <= AGG_COLUMNS:
            out[-1][0].extend(c for c in need if c not in out[-1][0])
            out[-1][1].extend(exprs)
        else:
            out.append((list(need), list(exprs)))
    return out


def _aggregate(key: pl.Series, base: pl.DataFrame, share_cols: list[str]) -> pl.DataFrame:
    """The per-segment sums, means and counts, one row per value of ``key``.

    Each batch of aggregations runs over a frame of ``key`` and its own few columns, each copied into
    one chunk: float sums then do not depend on how the customer table is chunked (which follows the
    partition count), and only those columns are copied, never the whole table."""
    seg = key.name
    key = key.rechunk()
    prof: pl.DataFrame | None = None
    for need, exprs in _batches(_agg_specs(set(base.columns), share_cols)):
        part = pl.DataFrame([key, *(base.get_column(c).rechunk() for c in need)]).group_by(seg).agg(exprs)
        prof = part if prof is None else prof.join(part, on=seg, how="left", maintain_order="left")
    assert prof is not None
    return prof


def _finish(df: pl.DataFrame) -> pl.DataFrame:
    """CIs from the raw sums; drops the helper columns."""
    exprs = []
    for name in MEANS:
        if f"{name}_mean" not in df.columns:
            continue
        half = Z95 * pl.col(f"_{name}_sd") / pl.col(f"_{name}_n").cast(pl.Float64).sqrt()
        ok = pl.col(f"_{name}_n") >= 2
        exprs += [pl.when(ok).then(pl.col(f"{name}_mean") - half).alias(f"{name}_ci_low"),
                  pl.when(ok).then(pl.col(f"{name}_mean") + half).alias(f"{name}_ci_high")]
    for name in RATIOS:
        if f"_{name}_n" not in df.columns:
            continue
        n = pl.col(f"_{name}_n").cast(pl.Float64)
        sx, sy = pl.col(f"_{name}_sx"), pl.col(f"_{name}_sy")
        r = pl.when(sx != 0).then(sy / sx)
        s2 = (pl.col(f"_{name}_syy") - 2 * r * pl.col(f"_{name}_sxy") + r * r * pl.col(f"_{name}_sxx")) / (n - 1)
        se = (s2.clip(lower_bound=0.0) / n).sqrt() / (sx / n)
        ok = (n >= 2) & (sx != 0)
        exprs += [r.alias(name), pl.when(ok).then(r - Z95 * se).alias(f"{name}_ci_low"),
                  pl.when(ok).then(r + Z95 * se).alias(f"{name}_ci_high")]
    df = df.with_columns(exprs)
    return df


def _mix(key: pl.Series, values: pl.Series, top: int) -> pl.DataFrame:
    """'a 51 %, b 40 %, …' per segment, plus the mode and its share.

    Only the two columns are filtered: a filter of the whole customer table copied every feature
    column (about 0.4 GB per million customers) for each mix."""
    seg, col = key.name, values.name
    counts = (pl.DataFrame([key, values]).filter(pl.col(col).is_not_null()).group_by(seg, col).len()
                .sort([seg, "len", col], descending=[False, True, False]))
    tot = counts.group_by(seg).agg(pl.col("len").sum().alias("_tot"))
    counts = counts.join(tot, on=seg).with_columns((pl.col("len") / pl.col("_tot")).alias("_p"))
    return counts.group_by(seg, maintain_order=True).agg(
        pl.col(col).first().cast(pl.String).alias(f"{col}_mode"), pl.col("_p").first().alias(f"{col}_mode_share"),
        pl.format("{} {}", pl.col(col).cast(pl.String), (pl.col("_p") * 100).round(0).cast(pl.Int64).cast(pl.String) + " %")
          .head(top).str.join(", ").alias(f"{col}_mix"))


def _one(key: pl.Series, base: pl.DataFrame, share_cols: list[str], age_group: pl.Series | None) -> pl.DataFrame:
    seg = key.name
    prof = _finish(_aggregate(key, base, share_cols))
    for col, top in (("preferred_channel", 3), ("gender", 4), ("age_group", 4), ("region", 3), ("top_category", 3)):
        values = age_group if col == "age_group" else base.get_column(col) if col in base.columns else None
        if values is not None:
            prof = prof.join(_mix(key, values, top), on=seg, how="left")
    return prof


def _age_group(base: pl.DataFrame) -> pl.Series | None:
    if "age" not in base.columns:
        return None
    a = pl.col("age")
    return base.get_column("age").to_frame().select(
        pl.when(a < 30).then(pl.lit("<30")).when(a < 45).then(pl.lit("30-44"))
          .when(a < 60).then(pl.lit("45-59")).when(a >= 60).then(pl.lit("60+")).alias("age_group")).to_series()


def profile_table(base: pl.DataFrame, segmentations: list[str]) -> pl.DataFrame:
    """Profiles of every segment of each segmentation column of ``base``.

    Parameters
    ----------
    base : polars.DataFrame
        One row per customer: the feature columns, optional demographic
        columns (``age``, ``gender``, ``region``) and the segmentation columns.
    segmentations : list of str
        The segmentation columns to profile (labels; null becomes ``(none)``).
    """
    share_cols = [c for c in base.columns if c.startswith("share_")]
    n_all = base.height
    # every step reads the columns it needs from ``base``: no select, filter or with_columns over the
    # whole customer table (each would copy all of it when its columns are chunked unevenly)
    age_group = _age_group(base)
    every = _one(pl.repeat(ALL, n_all, dtype=pl.String, eager=True).alias("_seg"), base, share_cols, age_group)
    rev_all = every["_rev"][0] if "_rev" in every.columns else None
    parts = []
    for s in segmentations:
        key = base.get_column(s).cast(pl.String).fill_null(NONE).alias("_seg")
        prof = _one(key, base, share_cols, age_group).sort("customers", "_seg", descending=[True, False])
        parts.append(pl.concat([every, prof], how="diagonal_relaxed").with_columns(pl.lit(s).alias("segmentation")))
    out = pl.concat(parts, how="diagonal_relaxed") if parts else every.head(0).with_columns(
        pl.lit(None, pl.String).alias("segmentation"))
    out = out.rename({"_seg": "segment"}).with_columns(
        (pl.col("customers") / max(n_all, 1)).alias("share"),
        *([(pl.col("_rev") / rev_all).alias("revenue_share")] if rev_all else []))
    out = out.with_columns(_top_categories(out, share_cols))
    desc = describe(out, base)
    out = out.with_columns(pl.Series("description", desc, dtype=pl.String))
    keep = [c for c in out.columns if not c.startswith("_")]
    first = ["segmentation", "segment", "customers", "share", "revenue_share", "description"]
    return out.select([c for c in first if c in keep] + [c for c in keep if c not in first])


def _top_categories(out: pl.DataFrame, share_cols: list[str]) -> pl.Expr:
    if not share_cols or "_w" not in out.columns:
        return pl.lit(None, pl.String).alias("top_categories")
    names = [c.removeprefix("share_") for c in share_cols]
    shares = np.column_stack([(out[f"_cat_{c}"] / out["_w"]).fill_nan(None).fill_null(0.0).to_numpy()
                              for c in share_cols])
    text = []
    for row in shares:
        order = np.argsort(-row, kind="stable")[:3]
        text.append(", ".join(f"{names[j]} {row[j] * 100:.0f} %" for j in order if row[j] > 0) or None)
    return pl.Series("top_categories", text, dtype=pl.String)


# --------------------------------------------------------------------------
# descriptions
# --------------------------------------------------------------------------
def _pct(x: float) -> str:
    return f"{x * 100:.0f} %"


def _phrase(trait: str, seg: float, avg: float) -> str:
    r = seg / avg if avg else math.inf
    hi = seg > avg
    if trait == "orders_12m":
        if seg == 0:
            return "no orders in the last 12 months"
        if r < 0.1:
            return f"hardly orders ({seg:.2f} orders in 12 months vs {avg:.1f})"
        return f"orders {r:.1f}× as often as average"
    if trait == "recency_days":
        if hi:
            return f"last ordered long ago ({seg:.0f} days vs {avg:.0f} on average)"
        word = "recently" if seg <= avg / 2 else "more recently than average"
        return f"ordered {word} ({seg:.0f} days ago vs {avg:.0f})"
    if trait == "net_revenue_12m":
        return f"{r:.1f}× the average 12-month net revenue"
    if trait == "aov_12m":
        return f"baskets {r:.1f}× the average order value" if r >= 0.1 else "very small baskets"
    if trait == "return_rate_12m":
        return f"returns a lot ({_pct(seg)} vs {_pct(avg)})" if hi else f"returns little ({_pct(seg)} vs {_pct(avg)})"
    if trait == "open_rate_12m":
        return (f"opens e-mails often ({_pct(seg)} vs {_pct(avg)})" if hi
                else f"rarely opens e-mails ({_pct(seg)} vs {_pct(avg)})")
    if trait == "click_rate_12m":
        return (f"clicks e-mails often ({_pct(seg)} vs {_pct(avg)})" if hi
                else f"rarely clicks e-mails ({_pct(seg)} vs {_pct(avg)})")
    if trait == "premium_margin_12m":
        return (f"price-insensitive ({r:.1f}× the average margin on above-market-priced items)" if hi
                else "price-sensitive (little margin on above-market-priced items)")
    if trait == "tenure_days":
        return (f"long-standing ({seg / 365.25:.1f} years vs {avg / 365.25:.1f})" if hi
                else f"recently acquired ({seg / 365.25:.1f} years vs {avg / 365.25:.1f})")
    if trait == "max_price_kept_24m":
        return f"keeps expensive items ({r:.1f}× the average top price)" if hi else "keeps cheaper items"
    raise KeyError(trait)


def describe(prof: pl.DataFrame, base: pl.DataFrame) -> list[str]:
    """One sentence per profile row naming what sets the segment apart from the whole base."""
    stats: dict[str, tuple[float, float]] = {}
    for feat in TRAITS:
        if feat in base.columns:
            x = base.get_column(feat).rechunk().cast(pl.Float64).fill_nan(None)  # one chunk: sums in a fixed order
            sd = x.std()
            if x.count() >= 2 and sd and sd > 0:
                stats[feat] = (float(x.mean()), float(sd))
    cat_stats = {c: _mean_sd(base.get_column(c).rechunk().fill_null(0.0)) for c in base.columns if c.startswith("share_")}
    rows = prof.to_dicts()
    allrow = next((r for r in rows if r["segment"] == ALL), None)
    out = []
    for row in rows:
        if row["segment"] == ALL:
            out.append(f"All {row['customers']:,} customers.")
            continue
        cands: list[tuple[float, str]] = []
        never = row.get("recency_days_mean") is None and "recency_days" in stats
        if never:  # nobody in the segment has an order: say so first, skip the order-based traits
            cands.append((np.inf, "has never ordered"))
        for feat, col in TRAITS.items():
            if feat not in stats or (never and feat in _ORDER_TRAITS):
                continue
            seg_v = row.get(col) if col in RATIOS else row.get(f"{col}_mean")
            avg_v = allrow.get(col) if col in RATIOS else allrow.get(f"{col}_mean")
            cust_mean = row.get(f"{col}_mean") if col not in RATIOS else None
            if seg_v is None or avg_v is None:
                continue
            # effect size on the customer-level feature: the mean of the segment in base sds
            mean_seg = cust_mean if cust_mean is not None else seg_v
            d = (mean_seg - stats[feat][0]) / stats[feat][1]
            if col in RATIOS:  # ratio of sums: measure on the ratio itself against the base ratio
                d = (seg_v - avg_v) / stats[feat][1]
            if abs(d) >= MIN_EFFECT:
                cands.append((abs(d), _phrase(col, float(seg_v), float(avg_v))))
        cands.sort(key=lambda t: -t[0])
        parts = [p for _d, p in cands[:3]]
        cat = _category_phrase(row, base, cat_stats)
        if cat:
            parts.insert(min(1, len(parts)), cat)
        ch = _channel_phrase(row, allrow)
        if ch and len(parts) < 5:
            parts.append(ch)
        if not parts:
            out.append("Close to the average customer.")
            continue
        text = ", ".join(parts)
        out.append(text[0].upper() + text[1:] + ".")
    return out


def _mean_sd(x: pl.Series) -> tuple[float, float]:
    return float(x.mean()), float(x.std() or 0.0)


def _category_phrase(row: dict[str, Any], base: pl.DataFrame, cat_stats: dict[str, tuple[float, float]]) -> str | None:
    if not cat_stats or not row.get("_w"):
        return None
    best, best_d = None, 0.0
    for c, (mean, sd) in cat_stats.items():
        share = (row.get(f"_cat_{c}") or 0.0) / row["_w"]
        if sd > 0 and share >= 0.35:
            d = (share - mean) / sd
            if d >= MIN_EFFECT and d > best_d:
                best, best_d = c, d
    return f"mostly {best.removeprefix('share_')}" if best else None


def _channel_phrase(row: dict[str, Any], allrow: dict[str, Any] | None) -> str | None:
    mode, p = row.get("preferred_channel_mode"), row.get("preferred_channel_mode_share")
    if not mode or p is None or allrow is None:
        return None
    if allrow.get("preferred_channel_mode") == mode:
        return None  # the usual channel: nothing to say
    return f"prefers {mode} ({_pct(p)})"
