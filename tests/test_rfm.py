"""RFM scores: the tie-aware quantile kernel, hand-computed tables, DuckDB ntile, named segments."""

import math

import duckdb
import numpy as np
import polars as pl
from hypothesis import given
from hypothesis import strategies as st

from centile.kernels.binning import tie_quantile_bins
from centile.segments.rfm import (
    NO_PURCHASE,
    RFM_SEGMENTS,
    named_segments,
    rf_grid,
    rfm_scores,
    to_five,
)


def ref_bins(values, bins):
    """Plain-Python reference: 1 + floor(bins * #{x < v} / m) over the non-NaN values."""
    finite = [x for x in values if not math.isnan(x)]
    m = len(finite)
    return [0 if math.isnan(v) else 1 + (bins * sum(1 for x in finite if x < v)) // m for v in values]


@given(st.lists(st.one_of(st.integers(-5, 5).map(float), st.just(float("nan")), st.floats(-1e6, 1e6)),
                max_size=60),
       st.integers(2, 10))
def test_kernel_matches_reference(values, bins):
    got = tie_quantile_bins(np.array(values, dtype=np.float64), bins)
    assert got.tolist() == ref_bins(values, bins)


@given(st.lists(st.integers(0, 6).map(float), min_size=1, max_size=80), st.integers(2, 7))
def test_ties_never_split_and_bins_monotone(values, bins):
    v = np.array(values)
    b = tie_quantile_bins(v, bins)
    for x in np.unique(v):
        assert len(set(b[v == x].tolist())) == 1
    order = np.argsort(v, kind="stable")
    assert np.all(np.diff(b[order]) >= 0)
    assert b.min() == 1 and b.max() <= bins


def test_empty_constant_single():
    assert tie_quantile_bins(np.array([]), 5).tolist() == []
    assert tie_quantile_bins(np.array([3.0]), 5).tolist() == [1]
    assert tie_quantile_bins(np.full(7, 2.0), 5).tolist() == [1] * 7
    assert tie_quantile_bins(np.array([np.nan, np.nan]), 5).tolist() == [0, 0]


def test_hand_computed_table():
    # 10 buyers + 1 customer without orders; bins = 5, so score = 1 + floor(5 * #worse / 10) = 1 + #worse // 2
    recency = [5, 10, 10, 40, 90, 120, 200, 400, 400, 700, np.nan]
    orders = [12, 6, 6, 3, 2, 2, 1, 0, 0, 0, 0]
    revenue = [900.0, 300.0, 450.0, 120.0, 80.0, 80.0, 40.0, 0.0, 0.0, -20.0, 0.0]
    s = rfm_scores(np.array(recency, float), np.array(orders, float), np.array(revenue), 5)
    # R: #customers with a larger recency: 9, 7, 7, 6, 5, 4, 3, 1, 1, 0
    assert s.r.tolist() == [5, 4, 4, 4, 3, 3, 2, 1, 1, 1, 0]
    # F: #fewer orders: 9, 7, 7, 6, 4, 4, 3, 0, 0, 0 (the three zeros tie at F = 1; F = 2 stays empty)
    assert s.f.tolist() == [5, 4, 4, 4, 3, 3, 2, 1, 1, 1, 0]
    # M: #less revenue: 9, 7, 8, 6, 4, 4, 3, 1, 1, 0
    assert s.m.tolist() == [5, 4, 5, 4, 3, 3, 2, 1, 1, 1, 0]
    names = [RFM_SEGMENTS[c] for c in s.segment]
    # FM = ceil((F + M) / 2): 5, 4, 5, 4, 3, 3, 2, 1, 1, 1
    assert names == ["Champions", "Loyal Customers", "Loyal Customers", "Loyal Customers", "Need Attention",
                     "Need Attention", "Hibernating", "Lost", "Lost", "Lost", NO_PURCHASE]


#: The documented table (README and centile.segments.rfm), written out cell by cell: (R, FM) -> segment
DOCUMENTED = {}
for _r, _fm, _name in [
    (5, (4, 5), "Champions"), ((3, 4), (4, 5), "Loyal Customers"), ((4, 5), (2, 3), "Potential Loyalists"),
    (5, (1,), "New Customers"), (4, (1,), "Promising"), (3, (3,), "Need Attention"), (3, (1, 2), "About to Sleep"),
    ((1, 2), (3, 4), "At Risk"), ((1, 2), (5,), "Can't Lose Them"), (2, (1, 2), "Hibernating"), (1, (1, 2), "Lost"),
]:
    for _rr in (_r if isinstance(_r, tuple) else (_r,)):
        for _f in _fm:
            DOCUMENTED[(_rr, _f)] = _name


def test_rules_as_documented_every_cell_exactly_one():
    assert len(DOCUMENTED) == 25
    for r in range(1, 6):
        for f in range(1, 6):
            for m in range(1, 6):
                fm = math.ceil((f + m) / 2)
                code = named_segments(np.array([r], np.int8), np.array([f], np.int8), np.array([m], np.int8))[0]
                assert RFM_SEGMENTS[code] == DOCUMENTED[(r, fm)], (r, f, m)
    assert RFM_SEGMENTS[named_segments(np.zeros(1, np.int8), np.zeros(1, np.int8), np.zeros(1, np.int8))[0]] \
        == NO_PURCHASE


def test_other_bin_counts_rescaled_to_five():
    assert to_five(np.arange(1, 11), 10).tolist() == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert to_five(np.arange(1, 4), 3).tolist() == [2, 4, 5]
    assert to_five(np.array([0]), 3).tolist() == [0]


def _features(n, seed=3):
    rng = np.random.default_rng(seed)
    orders = rng.negative_binomial(1, 0.4, n).astype(float)
    recency = np.where(rng.random(n) < 0.05, np.nan, rng.integers(1, 1000, n).astype(float))
    revenue = np.round(orders * rng.gamma(2, 40, n), 2) - (rng.random(n) < 0.02) * 15
    return recency, orders, revenue


def test_against_duckdb_quantiles_on_generated_data():
    n = 20_000
    recency, orders, revenue = _features(n)
    s = rfm_scores(recency, orders, revenue, 5)
    df = pl.DataFrame({"i": np.arange(n), "rec": recency, "o": orders, "rev": revenue}).with_columns(
        pl.col("rec").fill_nan(None))
    con = duckdb.connect()
    con.register("t", df)
    q = con.sql("""
        SELECT i,
          1 + floor(5 * (rank() OVER (ORDER BY rec DESC) - 1) / count(*) OVER ()) AS r,
          1 + floor(5 * (rank() OVER (ORDER BY o) - 1) / count(*) OVER ()) AS f,
          1 + floor(5 * (rank() OVER (ORDER BY rev) - 1) / count(*) OVER ()) AS m
        FROM t WHERE rec IS NOT NULL ORDER BY i""").pl()
    buyers = ~np.isnan(recency)
    assert np.array_equal(s.r[buyers], q["r"].to_numpy())
    assert np.array_equal(s.f[buyers], q["f"].to_numpy())
    assert np.array_equal(s.m[buyers], q["m"].to_numpy())
    assert not s.r[~buyers].any() and not s.f[~buyers].any() and not s.m[~buyers].any()
    # distinct values, n divisible by the bins: exactly DuckDB's ntile
    v = np.random.default_rng(1).permutation(10_000).astype(float) * 1.5
    con.register("u", pl.DataFrame({"i": np.arange(v.size), "v": v}))
    nt = con.sql("SELECT ntile(5) OVER (ORDER BY v) AS b, i FROM u ORDER BY i").pl()["b"].to_numpy()
    assert np.array_equal(tie_quantile_bins(v, 5), nt)
    # with ties, bins differ from ntile's only by the tie group straddling a boundary: ours take it whole
    for col, scores in (("o", s.f), ("rev", s.m)):
        nt = con.sql(f"SELECT ntile(5) OVER (ORDER BY {col}, i) AS b, {col} AS v FROM t "
                     "WHERE rec IS NOT NULL").pl()
        ours = scores[buyers]
        vals = (orders if col == "o" else revenue)[buyers]
        for b in range(1, 5):
            mine, theirs = int((ours <= b).sum()), int((nt["b"] <= b).sum())
            edge = nt.filter(pl.col("b") == b)["v"].max()  # the value at ntile's boundary
            assert 0 <= mine - theirs < int((vals == edge).sum()) or mine == theirs
    con.close()


def test_every_customer_exactly_one_named_segment_and_grid():
    recency, orders, revenue = _features(5000, seed=9)
    s = rfm_scores(recency, orders, revenue, 5)
    assert s.segment.min() >= 0 and s.segment.max() < len(RFM_SEGMENTS)
    assert (np.array(RFM_SEGMENTS)[s.segment] == NO_PURCHASE).sum() == np.isnan(recency).sum()
    g = rf_grid(s.r, s.f, revenue, 5)
    assert g.height == 25
    assert g["customers"].sum() == (~np.isnan(recency)).sum()
    assert abs(g["revenue_share"].sum() - 1.0) < 1e-9
    cell = g.filter((pl.col("r") == 5) & (pl.col("f") == 5))["customers"][0]
    assert cell == int(((s.r == 5) & (s.f == 5)).sum())
