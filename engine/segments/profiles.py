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
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from centile.segments.sums import GroupMoments, Moments, Split, group_moments, grouped, split_values

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


def _ratio_terms(base: pl.DataFrame, name: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The per-customer numerator and denominator of a ratio KPI where both are valid (not null,
    not NaN), or None when its columns are absent."""
    if not set(_RATIO_NEEDS[name]) <= set(base.columns):
        return None
    y, x = RATIOS[name]
    need = pl.DataFrame([base.get_column(c) for c in _RATIO_NEEDS[name]])
    yx = need.select(y.cast(pl.Float64).alias("y"), x.cast(pl.Float64).alias("x"))
    return yx["y"].to_numpy(), yx["x"].to_numpy()


def _values(series: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """A column as float64 values and its not-null mask."""
    f = series.cast(pl.Float64)
    valid = f.is_not_null().to_numpy()
    return f.fill_null(0.0).to_numpy(), valid


@dataclass
class SegmentState:
    """The mergeable aggregates of one segmentation's segments (or of every customer): their sizes,
    exact moments per measure (:mod:`centile.segments.sums`) and value counts of the mix columns."""

    sizes: dict[str, int] = field(default_factory=dict)
    measures: dict[str, GroupMoments] = field(default_factory=dict)
    mixes: dict[str, pl.DataFrame] = field(default_factory=dict)

    def add(self, other: SegmentState) -> SegmentState:
        for lab, n in other.sizes.items():
            self.sizes[lab] = self.sizes.get(lab, 0) + n
        for name, gm in other.measures.items():
            self.measures[name] = gm if name not in self.measures else self.measures[name].add(gm)
        for col, counts in other.mixes.items():
            mine = self.mixes.get(col)
            if mine is None:
                self.mixes[col] = counts
            else:
                both = pl.concat([mine, counts], how="vertical")
                self.mixes[col] = both.group_by(both.columns[:2]).agg(pl.col("len").sum().cast(pl.UInt32))
        return self


@dataclass
class ProfileState:
    """Everything :func:`profile_table` needs from the customers, as mergeable state: built per
    partition with :func:`profile_state`, merged with :meth:`add` (exact: counts and exact sums),
    turned into the table by :func:`profiles_from_state`. Any partitioning gives the same bytes."""

    columns: tuple[str, ...]
    rows: int = 0
    segmentations: dict[str, SegmentState] = field(default_factory=dict)
    #: moments over every customer of the description's traits (NaN as null) and category shares
    stats: dict[str, Moments] = field(default_factory=dict)

    def add(self, other: ProfileState) -> ProfileState:
        self.rows += other.rows
        for name, st in other.segmentations.items():
            mine = self.segmentations.get(name)
            self.segmentations[name] = st if mine is None else mine.add(st)
        for col, m in other.stats.items():
            self.stats[col] = m if col not in self.stats else self.stats[col].add(m)
        return self


def merge_profile_states(a: ProfileState, b: ProfileState) -> ProfileState:
    """``a`` with ``b`` merged in (for :meth:`~centile.backend.session.Session.map_reduce`)."""
    return a.add(b)


def _measures(base: pl.DataFrame, share_cols: list[str]) -> list[tuple[str, np.ndarray, np.ndarray, bool]]:
    """The per-customer terms each profile sum adds up: (name, values, valid mask, squares)."""
    cols = set(base.columns)
    out: list[tuple[str, np.ndarray, np.ndarray, bool]] = []
    if "net_revenue_12m" in cols:
        out.append(("_rev", *_values(base.get_column("net_revenue_12m")), False))
    for name, col in MEANS.items():
        if col in cols:
            out.append((name, *_values(base.get_column(col)), True))
    if "max_price_kept_24m" in cols:
        out.append(("max_price_kept_24m", *_values(base.get_column("max_price_kept_24m")), False))
    for name in RATIOS:
        terms = _ratio_terms(base, name)
        if terms is None:
            continue
        y, x = terms
        ok = ~(np.isnan(y) | np.isnan(x))  # nulls are NaN here: a ratio skips both
        y, x = np.where(ok, y, 0.0), np.where(ok, x, 0.0)
        out += [(f"_{name}_sy", y, ok, False), (f"_{name}_sx", x, ok, False), (f"_{name}_syy", y * y, ok, False),
                (f"_{name}_sxx", x * x, ok, False), (f"_{name}_sxy", x * y, ok, False)]
    if share_cols and "net_revenue_lifetime" in cols:
        w, wok = _values(base.get_column("net_revenue_lifetime").cast(pl.Float64).clip(lower_bound=0.0))
        out.append(("_w", w, wok, False))
        for c in share_cols:
            share = base.get_column(c).cast(pl.Float64).fill_null(0.0).to_numpy()
            out.append((f"_cat_{c}", share * w, wok, False))
    return out


_MIX_COLUMNS = (("preferred_channel", 3), ("gender", 4), ("age_group", 4), ("region", 3), ("top_category", 3))


def _segment_state(key: pl.Series, measures: list[tuple[str, Split]], mixes: dict[str, pl.Series]) -> SegmentState:
    lab = key.unique().sort().to_list()
    codes = (key.rank("dense").cast(pl.Int64) - 1).to_numpy() if key.len() else np.zeros(0, np.int64)
    st = SegmentState(sizes=dict(zip(lab, np.bincount(codes, minlength=len(lab)).tolist(), strict=True)))
    for name, split in measures:
        st.measures[name] = grouped(codes, lab, split)
    for col, values in mixes.items():
        st.mixes[col] = (pl.DataFrame([key.alias("_seg"), values]).filter(pl.col(col).is_not_null())
                         .group_by("_seg", col).len())
    return st


def profile_state(base: pl.DataFrame, segmentations: list[str]) -> ProfileState:
    """The mergeable aggregates of ``base``'s customers (one partition of them, or all): see
    :func:`profile_table`."""
    share_cols = [c for c in base.columns if c.startswith("share_")]
    # each measure's values are split for exact sums once, then summed per segment of every segmentation
    measures = [(name, split_values(x, valid, squares=squares)) for name, x, valid, squares in _measures(base, share_cols)]
    age_group = _age_group(base)
    mixes = {col: (age_group if col == "age_group" else base.get_column(col))
             for col, _top in _MIX_COLUMNS if (col == "age_group" and age_group is not None) or col in base.columns}
    state = ProfileState(tuple(base.columns), base.height)
    state.segmentations[ALL] = _segment_state(pl.repeat(ALL, base.height, dtype=pl.String, eager=True),
                                              measures, mixes)
    for s in segmentations:
        key = base.get_column(s).cast(pl.String).fill_null(NONE)
        state.segmentations[s] = _segment_state(key, measures, mixes)
    for feat in TRAITS:
        if feat in base.columns:
            x = base.get_column(feat).cast(pl.Float64).fill_nan(None).drop_nulls().to_numpy()
            state.stats[feat] = group_moments(np.zeros(x.size, np.int64), [0], x, squares=True).get(0, True)
    for c in share_cols:
        x = base.get_column(c).cast(pl.Float64).fill_null(0.0).to_numpy()
        state.stats[c] = group_moments(np.zeros(x.size, np.int64), [0], x, squares=True).get(0, True)
    return state


def _aggregate(st: SegmentState, columns: set[str], share_cols: list[str]) -> pl.DataFrame:
    """The per-segment sums, means and counts, one row per segment, from the merged state (the
    columns of the old single-pass aggregation, in its order)."""
    labels = sorted(st.sizes)
    cols: dict[str, pl.Series] = {"_seg": pl.Series("_seg", labels, dtype=pl.String),
                                  "customers": pl.Series([st.sizes[g] for g in labels], dtype=pl.UInt32)}

    def moments(name: str, squares: bool = False) -> list[Moments]:
        gm = st.measures[name]
        return [gm.get(g, squares) for g in labels]

    if "net_revenue_12m" in columns:
        cols["_rev"] = pl.Series([m.sum() for m in moments("_rev")], dtype=pl.Float64)
    for name, col in MEANS.items():
        if col in columns:
            ms = moments(name, True)
            cols[f"{name}_mean"] = pl.Series([m.mean() for m in ms], dtype=pl.Float64)
            cols[f"_{name}_sd"] = pl.Series([m.std() for m in ms], dtype=pl.Float64)
            cols[f"_{name}_n"] = pl.Series([m.count for m in ms], dtype=pl.UInt32)
    if "max_price_kept_24m" in columns:
        cols["max_price_kept_24m_mean"] = pl.Series([m.mean() for m in moments("max_price_kept_24m")],
                                                    dtype=pl.Float64)
    for name in RATIOS:
        if f"_{name}_sy" not in st.measures:
            continue
        for part in ("sy", "sx", "syy", "sxx", "sxy"):
            cols[f"_{name}_{part}"] = pl.Series([m.sum() for m in moments(f"_{name}_{part}")], dtype=pl.Float64)
        cols[f"_{name}_n"] = pl.Series([m.count for m in moments(f"_{name}_sy")], dtype=pl.UInt32)
    if "_w" in st.measures:
        cols["_w"] = pl.Series([m.sum() for m in moments("_w")], dtype=pl.Float64)
        for c in share_cols:
            cols[f"_cat_{c}"] = pl.Series([m.sum() for m in moments(f"_cat_{c}")], dtype=pl.Float64)
    return pl.DataFrame([s.alias(n) for n, s in cols.items()])


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


def _mix(counts: pl.DataFrame, col: str, top: int) -> pl.DataFrame:
    """'a 51 %, b 40 %, …' per segment, plus the mode and its share, from the merged value counts."""
    seg = "_seg"
    counts = counts.sort([seg, "len", col], descending=[False, True, False])
    tot = counts.group_by(seg).agg(pl.col("len").sum().alias("_tot"))
    counts = counts.join(tot, on=seg).with_columns((pl.col("len") / pl.col("_tot")).alias("_p"))
    return counts.group_by(seg, maintain_order=True).agg(
        pl.col(col).first().cast(pl.String).alias(f"{col}_mode"), pl.col("_p").first().alias(f"{col}_mode_share"),
        pl.format("{} {}", pl.col(col).cast(pl.String), (pl.col("_p") * 100).round(0).cast(pl.Int64).cast(pl.String) + " %")
          .head(top).str.join(", ").alias(f"{col}_mix"))


def _one(st: SegmentState, columns: set[str], share_cols: list[str]) -> pl.DataFrame:
    prof = _finish(_aggregate(st, columns, share_cols))
    for col, top in _MIX_COLUMNS:
        if col in st.mixes:
            prof = prof.join(_mix(st.mixes[col], col, top), on="_seg", how="left")
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
    narrow = pl.DataFrame([base.get_column(c) for c in profile_columns(base.columns, segmentations)])
    return profiles_from_state(profile_state(narrow, segmentations), segmentations)


def profile_columns(columns: list[str], segmentations: list[str]) -> list[str]:
    """The columns of a customer table that :func:`profile_state` reads (with ``customer_id``)."""
    used = {"customer_id", "net_revenue_12m", "max_price_kept_24m", "net_revenue_lifetime", "age",
            *MEANS.values(), *TRAITS, *(c for need in _RATIO_NEEDS.values() for c in need),
            *(c for c, _top in _MIX_COLUMNS), *segmentations}
    return [c for c in columns if c in used or c.startswith("share_")]


def _profile_partition(view: Any, part: int, base: pl.DataFrame, segmentations: list[str]) -> ProfileState:
    """One partition's profile state (a task on a cluster; ``base`` holds its customers' rows)."""
    return profile_state(base, segmentations)


def profiles_in_session(s: Any, base: pl.DataFrame, segmentations: list[str], kept: Any = None) -> pl.DataFrame:
    """:func:`profile_table` with the per-customer aggregation on the session's workers when they are
    elsewhere (``s.distributed()``): each task aggregates its partition's customers into a
    :class:`ProfileState`, merged exactly on the workers; here (or without a session) in one pass.
    The same bytes either way. ``kept``: the rows the workers kept of which ``base`` has the rows and
    those columns (:class:`~centile.backend.partitions.PerCustomer`)."""
    narrow = pl.DataFrame([base.get_column(c) for c in profile_columns(base.columns, segmentations)])
    if s is None or not s.distributed():
        state = profile_state(narrow, segmentations)
    else:
        from centile.backend.partitions import PerCustomer

        state = s.map_reduce(s.work_partitions(), "segments: profiles", _profile_partition, merge_profile_states,
                             PerCustomer(narrow, kept), segmentations, tables=())
    return profiles_from_state(state, segmentations)


def profiles_from_state(state: ProfileState, segmentations: list[str]) -> pl.DataFrame:
    """:func:`profile_table` from the merged :class:`ProfileState` of every customer: sums, means and
    standard deviations are exact and rounded once, so any partitioning gives the same bytes."""
    columns = set(state.columns)
    share_cols = [c for c in state.columns if c.startswith("share_")]
    n_all = state.rows
    every = _one(state.segmentations[ALL], columns, share_cols)
    rev_all = every["_rev"][0] if "_rev" in every.columns else None
    parts = []
    for s in segmentations:
        prof = _one(state.segmentations[s], columns, share_cols).sort("customers", "_seg", descending=[True, False])
        parts.append(pl.concat([every, prof], how="diagonal_relaxed").with_columns(pl.lit(s).alias("segmentation")))
    out = pl.concat(parts, how="diagonal_relaxed") if parts else every.head(0).with_columns(
        pl.lit(None, pl.String).alias("segmentation"))
    out = out.rename({"_seg": "segment"}).with_columns(
        (pl.col("customers") / max(n_all, 1)).alias("share"),
        *([(pl.col("_rev") / rev_all).alias("revenue_share")] if rev_all else []))
    out = out.with_columns(_top_categories(out, share_cols))
    desc = describe(out, state)
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


def describe(prof: pl.DataFrame, state: ProfileState) -> list[str]:
    """One sentence per profile row naming what sets the segment apart from the whole base (its
    means and standard deviations from the exact moments of ``state``)."""
    stats: dict[str, tuple[float, float]] = {}
    for feat in TRAITS:
        m = state.stats.get(feat)
        if m is not None:
            sd = m.std()
            mean = m.mean()
            if m.count >= 2 and sd and sd > 0 and mean is not None:
                stats[feat] = (mean, sd)
    cat_stats = {c: _mean_sd(m) for c, m in state.stats.items() if c.startswith("share_")}
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
        cat = _category_phrase(row, cat_stats)
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


def _mean_sd(m: Moments) -> tuple[float, float]:
    mean = m.mean()
    return (math.nan if mean is None else mean), float(m.std() or 0.0)


def _category_phrase(row: dict[str, Any], cat_stats: dict[str, tuple[float, float]]) -> str | None:
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
