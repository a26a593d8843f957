"""RFM scores, the named RFM segments and the R×F grid.

Scores
------
R, F and M are quantile bins ``1 .. bins`` (default 5; higher is better)
of ``-recency_days``, ``orders_12m`` and ``net_revenue_12m`` over the *RFM
universe*: every customer with at least one valid order before ``as_of``
(``recency_days`` not null). The bin of a value ``v`` among the ``m``
customers of the universe is

    score(v) = 1 + floor(bins × #{customers with a strictly worse value} / m)

so tied customers always share a score (a tie is never split across bins;
it goes to the bin of its first member in sorted order). Heavy ties can
leave a score unused: when 40 % of the buyers have no order in the last 12
months they all get F = 1 and the next order count starts at F = 3.

Customers without orders (only in ``customers`` or ``email_events``) are not
scored: r, f and m are null and their named segment is ``No Purchase``.

Named segments
--------------
Defined on the 5-point scale (with another number of bins a score ``s`` is
first rescaled to ``ceil(5 s / bins)``) over R and FM = ``ceil((F + M) / 2)``:

==================== ======= ========
segment              R       FM
==================== ======= ========
Champions            5       4–5
Loyal Customers      3–4     4–5
Potential Loyalists  4–5     2–3
New Customers        5       1
Promising            4       1
Need Attention       3       3
About to Sleep       3       1–2
At Risk              1–2     3–4
Can't Lose Them      1–2     5
Hibernating          2       1–2
Lost                 1       1–2
No Purchase          (no order before as_of)
==================== ======= ========

The 25 (R, FM) cells are partitioned by the table, so every customer gets
exactly one segment.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

#: (segment, R values, FM values) on the 5-point scale; partitions the 5 × 5 grid.
RFM_RULES: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...] = (
    ("Champions", (5,), (4, 5)),
    ("Loyal Customers", (3, 4), (4, 5)),
    ("Potential Loyalists", (4, 5), (2, 3)),
    ("New Customers", (5,), (1,)),
    ("Promising", (4,), (1,)),
    ("Need Attention", (3,), (3,)),
    ("About to Sleep", (3,), (1, 2)),
    ("At Risk", (1, 2), (3, 4)),
    ("Can't Lose Them", (1, 2), (5,)),
    ("Hibernating", (2,), (1, 2)),
    ("Lost", (1,), (1, 2)),
)
NO_PURCHASE = "No Purchase"
RFM_SEGMENTS: tuple[str, ...] = tuple(r[0] for r in RFM_RULES) + (NO_PURCHASE,)

#: The feature columns the scores are computed from.
RFM_COLUMNS = ("recency_days", "orders_12m", "net_revenue_12m")


def _lookup() -> np.ndarray:
    """``table[R, FM]`` -> index into RFM_SEGMENTS (R, FM in 1..5; row/col 0 = unscored)."""
    t = np.full((6, 6), len(RFM_RULES), np.int8)  # No Purchase
    seen = np.zeros((6, 6), bool)
    for k, (_name, rs, fms) in enumerate(RFM_RULES):
        for r in rs:
            for fm in fms:
                if seen[r, fm]:
                    raise AssertionError(f"RFM rules overlap at R={r}, FM={fm}")
                seen[r, fm] = True
                t[r, fm] = k
    if not seen[1:, 1:].all():
        raise AssertionError("RFM rules leave a cell of the 5 x 5 grid uncovered")
    return t


_LOOKUP = _lookup()


@dataclass(frozen=True)
class RFMScores:
    """Scores (0 = not scored) and named segments as NumPy arrays, one entry per customer."""

    r: np.ndarray
    f: np.ndarray
    m: np.ndarray
    segment: np.ndarray  # int8 index into RFM_SEGMENTS
    bins: int


def rfm_scores(recency_days: np.ndarray, orders_12m: np.ndarray, net_revenue_12m: np.ndarray,
               bins: int = 5) -> RFMScores:
    """R, F, M scores and named segments (see the module docstring for the exact rule).

    Parameters
    ----------
    recency_days, orders_12m, net_revenue_12m : array_like, shape (n,)
        Feature columns; NaN recency marks a customer without orders (not scored).
    bins : int
        Number of score bins (2 .. 100).
    """
    from centile.kernels.binning import tie_quantile_bins

    rec = np.asarray(recency_days, dtype=np.float64)
    buyer = ~np.isnan(rec)
    freq = np.where(buyer, np.nan_to_num(np.asarray(orders_12m, dtype=np.float64), nan=0.0), np.nan)
    mon = np.where(buyer, np.nan_to_num(np.asarray(net_revenue_12m, dtype=np.float64), nan=0.0), np.nan)
    r = tie_quantile_bins(-rec, bins)
    f = tie_quantile_bins(freq, bins)
    m = tie_quantile_bins(mon, bins)
    return RFMScores(r, f, m, named_segments(r, f, m, bins), bins)


def to_five(score: np.ndarray, bins: int) -> np.ndarray:
    """Rescale scores ``1..bins`` to the 5-point scale: ``ceil(5 s / bins)`` (0 stays 0)."""
    s = score.astype(np.int64)
    return ((5 * s + bins - 1) // bins).astype(np.int8)


def named_segments(r: np.ndarray, f: np.ndarray, m: np.ndarray, bins: int = 5) -> np.ndarray:
    """Index into :data:`RFM_SEGMENTS` per customer from scores (0 = unscored -> No Purchase)."""
    r5, f5, m5 = to_five(r, bins), to_five(f, bins), to_five(m, bins)
    fm = (f5.astype(np.int64) + m5 + 1) // 2
    fm = np.where((f5 == 0) | (m5 == 0), 0, fm)
    return _LOOKUP[r5.astype(np.intp), fm.astype(np.intp)]


def segment_labels(codes: np.ndarray) -> pl.Series:
    """The segment names of :func:`named_segments` codes as a Polars Enum column."""
    enum = pl.Enum(list(RFM_SEGMENTS))
    return pl.Series("rfm_segment", np.asarray(RFM_SEGMENTS, dtype=object)[codes], dtype=pl.String).cast(enum)


def rf_grid(r: np.ndarray, f: np.ndarray, net_revenue_12m: np.ndarray, bins: int) -> pl.DataFrame:
    """The R×F grid over the scored customers: one row per (r, f) cell, every cell listed.

    Columns: r, f, customers, customer_share (of scored customers),
    net_revenue_12m (sum) and revenue_share (of the scored customers' total).
    """
    scored = r > 0
    rev = np.nan_to_num(np.asarray(net_revenue_12m, dtype=np.float64))[scored]
    cell = (r[scored].astype(np.int64) - 1) * bins + (f[scored].astype(np.int64) - 1)
    counts = np.bincount(cell, minlength=bins * bins)
    revenue = np.bincount(cell, weights=rev, minlength=bins * bins)
    n, total = int(scored.sum()), float(rev.sum())
    rr, ff = np.divmod(np.arange(bins * bins), bins)
    return pl.DataFrame({
        "r": pl.Series(rr + 1, dtype=pl.Int8), "f": pl.Series(ff + 1, dtype=pl.Int8),
        "customers": pl.Series(counts, dtype=pl.Int64),
        "customer_share": pl.Series(counts / n if n else np.full(counts.size, np.nan), dtype=pl.Float64),
        "net_revenue_12m": pl.Series(revenue, dtype=pl.Float64),
        "revenue_share": pl.Series(revenue / total if total else np.full(counts.size, np.nan), dtype=pl.Float64),
    }).with_columns(pl.col("customer_share", "revenue_share").fill_nan(None))
