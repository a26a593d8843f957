"""Ranking kernels: percentile ranks (`kernels/percentile.py`) and top-k (`kernels/topk.py`)."""

import math

import duckdb
import numba
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from centile.kernels.percentile import rank_pct, rank_pct_many
from centile.kernels.topk import topk
from tests import reference as ref

# Few distinct values -> many ties; NaN, signed zeros and infinities included.
TIE_VALUES = [math.nan, -math.inf, -2.5, -1.0, -0.0, 0.0, 1.0, 3.0, math.inf]
value = st.one_of(
    st.sampled_from(TIE_VALUES),
    st.floats(allow_nan=True, allow_infinity=True, width=64),
)


@st.composite
def ranked_inputs(draw, max_n=30):
    n = draw(st.integers(0, max_n))
    values = draw(st.lists(value, min_size=n, max_size=n))
    eligible = draw(st.none() | st.lists(st.booleans(), min_size=n, max_size=n))
    groups = draw(st.none() | st.lists(st.integers(-1, 3), min_size=n, max_size=n))
    if groups is not None and n and max(groups) >= 0:
        # dense codes: relabel the used non-negative codes to 0..g-1
        used = sorted({g for g in groups if g >= 0})
        groups = [used.index(g) if g >= 0 else -1 for g in groups]
    return np.array(values, dtype=np.float64), eligible, groups


def _arr(x, dtype):
    return None if x is None else np.array(x, dtype=dtype)


# --------------------------------------------------------------------------
# rank_pct
# --------------------------------------------------------------------------
@given(ranked_inputs())
def test_rank_pct_matches_reference(case):
    values, eligible, groups = case
    rank, pct = rank_pct(values, _arr(eligible, bool), _arr(groups, np.int64))
    exp_rank, exp_pct = ref.rank_pct(values.tolist(), eligible, groups)
    assert rank.dtype == np.int64 and pct.dtype == np.float64
    assert rank.tolist() == exp_rank
    np.testing.assert_array_equal(pct, np.array(exp_pct, dtype=np.float64))


@given(ranked_inputs())
def test_pct_rank_is_bounded_and_monotone(case):
    values, eligible, groups = case
    rank, pct = rank_pct(values, _arr(eligible, bool), _arr(groups, np.int64))
    ok = rank > 0
    assert np.all((pct[ok] >= 0.0) & (pct[ok] <= 1.0))
    assert np.all(np.isnan(pct[~ok]))
    g = np.zeros(len(values), np.int64) if groups is None else np.array(groups)
    idx = np.flatnonzero(ok)
    for i in idx:
        for j in idx:
            if g[i] != g[j]:
                continue
            if values[i] < values[j]:
                assert pct[i] < pct[j] and rank[i] > rank[j]
            elif values[i] == values[j]:
                assert pct[i] == pct[j] and rank[i] == rank[j]


@pytest.fixture(scope="module")
def duck():
    con = duckdb.connect()
    yield con
    con.close()


@settings(max_examples=25)
@given(ranked_inputs(max_n=40))
def test_pct_rank_equals_duckdb_percent_rank(duck, case):
    values, eligible, groups = case
    n = len(values)
    ok = ~np.isnan(values)
    if eligible is not None:
        ok &= np.array(eligible, dtype=bool)
    g = np.zeros(n, np.int64) if groups is None else np.array(groups, np.int64)
    ok &= g >= 0
    table = pa.table({"i": np.arange(n), "v": values, "g": g, "ok": ok})
    duck.register("t", table)
    partition = "" if groups is None else "PARTITION BY g"
    rows = duck.execute(
        f"SELECT i, percent_rank() OVER ({partition} ORDER BY v) AS p, "
        f"rank() OVER ({partition} ORDER BY v DESC) AS r FROM t WHERE ok ORDER BY i"
    ).fetchall()
    duck.unregister("t")
    rank, pct = rank_pct(values, _arr(eligible, bool), _arr(groups, np.int64))
    assert [i for i, _, _ in rows] == np.flatnonzero(ok).tolist()
    assert [p for _, p, _ in rows] == pct[ok].tolist()  # exact, not approximate
    assert [r for _, _, r in rows] == rank[ok].tolist()


def _numpy_rank_pct(values, groups=None):
    """Vectorised reference for large inputs: searchsorted on the sorted eligible values."""
    rank = np.zeros(len(values), np.int64)
    pct = np.full(len(values), np.nan)
    g = np.zeros(len(values), np.int64) if groups is None else groups
    for code in np.unique(g[g >= 0]):
        sel = np.flatnonzero((g == code) & ~np.isnan(values))
        v = values[sel] + 0.0  # -0.0 -> 0.0
        s = np.sort(v)
        m = len(s)
        rank[sel] = 1 + (m - np.searchsorted(s, v, "right"))
        pct[sel] = np.searchsorted(s, v, "left") / (m - 1) if m > 1 else 0.0
    return rank, pct


@pytest.mark.parametrize("kind", ["continuous", "integers", "mixed"])
def test_rank_pct_large_against_numpy(kind):
    # Long enough for the MSD + in-cache path of the radix sort (>= 65 536 values).
    rng = np.random.default_rng(7)
    n = 150_000
    if kind == "continuous":
        v = rng.standard_normal(n) * 1e3
    elif kind == "integers":
        v = rng.poisson(3, n).astype(np.float64)
    else:
        v = np.where(rng.random(n) < 0.5, rng.integers(-5, 5, n), rng.lognormal(0, 3, n))
        v[rng.random(n) < 0.05] = np.nan
        v[rng.random(n) < 0.01] = -0.0
        v[:3] = [np.inf, -np.inf, 5e-324]
    rank, pct = rank_pct(v)
    exp_rank, exp_pct = _numpy_rank_pct(v)
    np.testing.assert_array_equal(rank, exp_rank)
    np.testing.assert_array_equal(pct, exp_pct)
    groups = rng.integers(-1, 40, n)
    rank, pct = rank_pct(v, groups=groups)
    exp_rank, exp_pct = _numpy_rank_pct(v, groups)
    np.testing.assert_array_equal(rank, exp_rank)
    np.testing.assert_array_equal(pct, exp_pct)


@given(st.integers(0, 25).flatmap(lambda n: st.tuples(
    st.lists(st.lists(value, min_size=3, max_size=3), min_size=n, max_size=n),
    st.lists(st.lists(st.booleans(), min_size=3, max_size=3), min_size=n, max_size=n),
)))
def test_rank_pct_many_equals_columns(case):
    rows, elig = case
    m = np.array(rows, dtype=np.float64).reshape(len(rows), 3)
    e = np.array(elig, dtype=bool).reshape(len(rows), 3)
    for matrix in (m, np.asfortranarray(m)):
        rank, pct = rank_pct_many(matrix, e)
        assert rank.shape == pct.shape == (len(rows), 3)
        for j in range(3):
            r1, p1 = rank_pct(m[:, j], e[:, j])
            np.testing.assert_array_equal(rank[:, j], r1)
            np.testing.assert_array_equal(pct[:, j], p1)


def test_rank_pct_many_same_with_one_and_all_threads():
    rng = np.random.default_rng(3)
    m = np.round(rng.standard_normal((20_000, 5)), 1)
    m[rng.random(m.shape) < 0.1] = np.nan
    groups = rng.integers(0, 7, 20_000)
    all_threads = numba.config.NUMBA_NUM_THREADS
    try:
        numba.set_num_threads(1)
        one = rank_pct_many(m, groups=groups)
    finally:
        numba.set_num_threads(all_threads)
    many = rank_pct_many(m, groups=groups)
    for a, b in zip(one, many, strict=True):
        np.testing.assert_array_equal(a, b)


def test_rank_pct_edge_cases_and_errors():
    rank, pct = rank_pct(np.array([]))
    assert rank.shape == pct.shape == (0,)
    rank, pct = rank_pct([7.0])
    assert rank.tolist() == [1] and pct.tolist() == [0.0]
    rank, pct = rank_pct([np.nan, np.nan])
    assert rank.tolist() == [0, 0] and np.isnan(pct).all()
    rank, pct = rank_pct([2, 2, 2], eligible=[True, False, True])  # ints are converted
    assert rank.tolist() == [1, 0, 1] and pct[[0, 2]].tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="eligible"):
        rank_pct([1.0, 2.0], eligible=[True])
    with pytest.raises(ValueError, match="groups"):
        rank_pct([1.0, 2.0], groups=[0])
    with pytest.raises(ValueError, match="1-D"):
        rank_pct(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="eligible"):
        rank_pct_many(np.zeros((3, 2)), np.ones((2, 3), bool))


# --------------------------------------------------------------------------
# topk
# --------------------------------------------------------------------------
@st.composite
def topk_inputs(draw, max_n=40):
    n = draw(st.integers(0, max_n))
    m = draw(st.integers(1, 3))
    keys = draw(st.lists(st.lists(st.sampled_from(TIE_VALUES[:6] + [1.0]), min_size=m,
                                  max_size=m), min_size=n, max_size=n))
    hashes = draw(st.none() | st.lists(st.integers(0, 3), min_size=n, max_size=n))
    eligible = draw(st.none() | st.lists(st.booleans(), min_size=n, max_size=n))
    k = draw(st.integers(0, n + 3))
    return np.array(keys, dtype=np.float64).reshape(n, m), hashes, eligible, k


@given(topk_inputs())
def test_topk_matches_sorted_head(case):
    keys, hashes, eligible, k = case
    idx, thr = topk(keys, k, _arr(hashes, np.uint64), _arr(eligible, bool))
    everything = ref.order(keys.tolist(), hashes, eligible)
    assert idx.dtype == np.int64
    assert idx.tolist() == everything[:k]  # a sorted subset of size min(k, n_eligible)
    assert len(idx) == min(k, len(everything))
    if len(idx):
        assert thr == keys[everything[len(idx) - 1], 0]
        assert all(keys[i, 0] >= thr for i in idx)
    else:
        assert math.isnan(thr)


@pytest.mark.parametrize("seed", [0, 1])
def test_topk_large_ties_against_sorted(seed):
    # Long runs of equal primaries (and of equal first tie-breakers) go
    # through the radix path on every column, including the hash.
    rng = np.random.default_rng(seed)
    n = 30_000
    keys = np.column_stack([
        rng.integers(0, 6, n).astype(float),
        rng.integers(0, 3, n).astype(float),
        np.where(rng.random(n) < 0.2, np.nan, rng.standard_normal(n).round(1)),
    ])
    keys[rng.random(n) < 0.1, 0] = np.nan
    hashes = rng.integers(0, 5_000, n).astype(np.uint64)
    everything = ref.order(keys.tolist(), hashes.tolist())
    for k in (0, 1, 100, 7_000, n):
        idx, thr = topk(keys, k, hashes)
        assert idx.tolist() == everything[:k]


def test_topk_errors():
    with pytest.raises(ValueError, match="k must be"):
        topk(np.zeros((3, 1)), -1)
    with pytest.raises(ValueError, match="hashes"):
        topk(np.zeros((3, 1)), 1, np.zeros(2, np.uint64))
    with pytest.raises(TypeError, match="hashes"):
        topk(np.zeros((3, 1)), 1, np.zeros(3))
    idx, thr = topk([3.0, 1.0, 2.0], 2)  # 1-D keys are one column
    assert idx.tolist() == [0, 2] and thr == 2.0
