"""Poisson bootstrap kernel: keyed weights, sums against a NumPy reference, thread and split independence."""

import math

import numba
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as hs
from scipy import stats

from centile.kernels.bootstrap import (
    THRESHOLDS32,
    poisson_bootstrap_sums,
    poisson_count_draws,
    poisson_weights,
    replicate_seeds,
)
from centile.kernels.hashing import hash_int64
from tests.reference_bootstrap import poisson_bootstrap_sums_numpy, poisson_weights_numpy


def test_thresholds_are_the_poisson1_cdf():
    cdf = stats.poisson.cdf(np.arange(8), 1.0)
    assert np.allclose(THRESHOLDS32[:8].astype(np.float64) / 2.0**32, cdf, atol=1e-9)
    assert np.all(np.diff(THRESHOLDS32.astype(np.int64)) >= 0)


def _keys(n, seed=0):
    return hash_int64(np.arange(n), seed)


@pytest.mark.parametrize("hashed", [True, False])
def test_weights_follow_poisson1(hashed):
    n = 400_000
    # hashed keys as the engine passes them, and raw counters (the most regular keys there are)
    w = poisson_weights(replicate_seeds(5, 1)[0], _keys(n) if hashed else np.arange(n, dtype=np.uint64))
    assert w.min() >= 0 and np.all(w == np.round(w))
    counts = np.bincount(w.astype(np.int64))
    k = 6  # pool the tail: k >= 6
    obs = np.append(counts[:k], counts[k:].sum())
    exp = np.append(stats.poisson.pmf(np.arange(k), 1.0), stats.poisson.sf(k - 1, 1.0)) * w.size
    assert stats.chisquare(obs, exp).pvalue > 1e-4
    assert abs(w.mean() - 1.0) < 5 / math.sqrt(w.size)
    assert w.max() >= 7  # the tail pass runs


def test_weights_of_replicates_are_uncorrelated():
    s = replicate_seeds(9, 2)
    keys = np.arange(200_000, dtype=np.uint64)  # consecutive keys: neighbours must not correlate either
    a, b = poisson_weights(s[0], keys), poisson_weights(s[1], keys)
    assert abs(np.corrcoef(a, b)[0, 1]) < 5 / math.sqrt(a.size)
    assert abs(np.corrcoef(a[:-1], a[1:])[0, 1]) < 5 / math.sqrt(a.size)
    # the same key under another campaign's hash seed: independent weights
    c = poisson_weights(s[0], _keys(200_000, 1)) - 0.0
    d = poisson_weights(s[0], _keys(200_000, 2)) - 0.0
    assert abs(np.corrcoef(c, d)[0, 1]) < 5 / math.sqrt(c.size)


def test_weight_depends_on_the_key_not_the_position():
    seed = int(replicate_seeds(3, 1)[0])
    keys = _keys(5000)
    w = poisson_weights(seed, keys)
    perm = np.random.default_rng(0).permutation(keys.size)
    assert np.array_equal(poisson_weights(seed, keys[perm]), w[perm])
    assert np.array_equal(poisson_weights(seed, keys[1234:1240]), w[1234:1240])


@pytest.mark.parametrize("n", [0, 1, 1023, 1024, 2047, 2048, 2049, 5000])
def test_numpy_weights_match_kernel_weights(n):
    seed = int(replicate_seeds(1, 1)[0])
    keys = _keys(n, 77)
    assert np.array_equal(poisson_weights(seed, keys), poisson_weights_numpy(seed, keys))


def _reference(values, offsets, seeds, keys):
    """Plain loops over the kernel's own weights."""
    k, n = values.shape
    g = len(offsets) - 1
    out = np.zeros((len(seeds), g, k + 1))
    for b, sd in enumerate(seeds):
        w = poisson_weights(sd, keys)
        for j in range(g):
            for i in range(offsets[j], offsets[j + 1]):
                out[b, j, 0] += w[i]
                for c in range(k):
                    out[b, j, 1 + c] += w[i] * values[c, i]
    return out


@given(sizes=hs.lists(hs.integers(0, 1500), min_size=1, max_size=5),
       k=hs.integers(1, 3), reps=hs.integers(0, 5), seed=hs.integers(0, 2**32),
       const=hs.booleans())
def test_sums_match_reference(sizes, k, reps, seed, const):
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    n = int(offsets[-1])
    rng = np.random.default_rng(seed)
    values = np.full((k, n), 2.5) if const else rng.gamma(0.5, 10.0, (k, n))
    seeds = replicate_seeds(seed, reps)
    keys = rng.integers(0, 2**63, n).astype(np.uint64)
    got = poisson_bootstrap_sums(values, offsets, seeds, keys)
    assert got.shape == (reps, len(sizes), k + 1) and got.dtype == np.float64
    np.testing.assert_allclose(got, _reference(values, offsets, seeds, keys), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(got, poisson_bootstrap_sums_numpy(values, offsets, seeds, keys), rtol=1e-12, atol=1e-9)
    # empty groups sum to zero
    assert np.all(got[:, np.asarray(sizes) == 0, :] == 0)
    # integer values (money in integer units) are summed exactly in int64
    ints = np.round(values * 10_000).astype(np.int64)
    exact = poisson_bootstrap_sums(ints, offsets, seeds, keys)
    assert exact.dtype == np.int64
    assert np.array_equal(exact, _reference(ints.astype(np.float64), offsets, seeds, keys))


@given(sizes=hs.lists(hs.integers(0, 900), min_size=1, max_size=4), cuts=hs.integers(1, 6),
       seed=hs.integers(0, 2**32))
def test_sums_of_any_split_of_the_rows_add_up_exactly(sizes, cuts, seed):
    """Rows cut into parts (as customer-hash partitions cut them), each part's sums per group
    added: the same int64 sums as one pass over all rows, whatever the cut and the row order."""
    rng = np.random.default_rng(seed)
    g = len(sizes)
    group = np.repeat(np.arange(g), sizes)
    n = group.size
    values = rng.integers(-10**9, 10**9, (2, n))
    keys = rng.integers(0, 2**63, n).astype(np.uint64)
    seeds = replicate_seeds(seed, 7)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    whole = poisson_bootstrap_sums(values, offsets, seeds, keys)
    part = rng.integers(0, cuts, n)
    total = np.zeros_like(whole)
    for p in range(cuts):
        idx = np.flatnonzero(part == p)
        idx = idx[np.argsort(group[idx] * n - np.arange(idx.size), kind="stable")]  # reversed within groups
        off = np.concatenate([[0], np.cumsum(np.bincount(group[idx], minlength=g))])
        total += poisson_bootstrap_sums(values[:, idx], off, seeds, keys[idx])
    assert np.array_equal(total, whole)


def test_identical_at_one_thread_and_all_threads():
    rng = np.random.default_rng(3)
    n = 50_000
    values = np.vstack([rng.lognormal(2, 1.5, n), rng.poisson(0.3, n).astype(float)])
    offsets = np.array([0, 7, 20_000, 20_000, 33_333, n])
    seeds = replicate_seeds(42, 67)  # not a multiple of the block size
    keys = _keys(n, 5)
    all_threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = poisson_bootstrap_sums(values, offsets, seeds, keys)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = poisson_bootstrap_sums(values, offsets, seeds, keys)
    finally:
        numba.set_num_threads(all_threads)
    assert np.array_equal(one, many)
    # the parallel block size is speed only
    assert np.array_equal(one, poisson_bootstrap_sums(values, offsets, seeds, keys, block=1))
    assert np.array_equal(one, poisson_bootstrap_sums(values, offsets, seeds, keys, block=1000))
    # and the same seed gives the same replicates
    assert np.array_equal(one, poisson_bootstrap_sums(values, offsets, replicate_seeds(42, 67), keys))


def test_replicate_seeds_prefix_and_distinct():
    a = replicate_seeds((7, 1, 0), 100)
    assert np.array_equal(a[:10], replicate_seeds((7, 1, 0), 10))
    assert np.unique(a).size == 100
    assert not np.array_equal(a[:10], replicate_seeds((7, 1, 1), 10))


def test_bootstrap_variance_of_a_mean():
    """The replicate means spread like the sampling distribution: sd ~ sigma / sqrt(n)."""
    rng = np.random.default_rng(11)
    n = 4000
    y = rng.normal(10.0, 3.0, n)
    sums = poisson_bootstrap_sums(y, [0, n], replicate_seeds(2, 400), _keys(n))
    means = sums[:, 0, 1] / sums[:, 0, 0]
    se = y.std(ddof=1) / math.sqrt(n)
    assert 0.85 < means.std(ddof=1) / se < 1.15
    assert abs(means.mean() - y.mean()) < 0.2 * se


def test_input_checks():
    with pytest.raises(ValueError, match="NaN"):
        poisson_bootstrap_sums(np.array([[1.0, np.nan]]), [0, 2], replicate_seeds(0, 2), _keys(2))
    with pytest.raises(ValueError, match="offsets"):
        poisson_bootstrap_sums(np.ones((1, 3)), [0, 2], replicate_seeds(0, 2), _keys(3))
    with pytest.raises(ValueError, match="offsets"):
        poisson_bootstrap_sums(np.ones((1, 3)), [0, 2, 1, 3], replicate_seeds(0, 2), _keys(3))
    with pytest.raises(ValueError, match="keys"):
        poisson_bootstrap_sums(np.ones((1, 3)), [0, 3], replicate_seeds(0, 2), _keys(2))
    with pytest.raises(ValueError, match="too large"):
        poisson_bootstrap_sums(np.full((1, 3), 2**60), [0, 3], replicate_seeds(0, 2), _keys(3))
    with pytest.raises(ValueError, match="replicates"):
        replicate_seeds(0, -1)
    out = poisson_bootstrap_sums(np.ones((2, 0)), [0, 0], replicate_seeds(0, 3), _keys(0))
    assert out.shape == (3, 1, 3) and not out.any()


def test_collapsed_zero_rows():
    """All-zero rows passed as counts: the outcome sums are untouched, the weight total gains
    one Poisson(count) draw per group, the same numbers as the plain-Python port."""
    rng = np.random.default_rng(6)
    values = rng.gamma(1.0, 5.0, (2, 3000))
    offsets = np.array([0, 1000, 1000, 3000])
    zeros = np.array([3, 0, 400])
    seeds = replicate_seeds(8, 40)
    keys = _keys(3000)
    base = poisson_bootstrap_sums(values, offsets, seeds, keys)
    got = poisson_bootstrap_sums(values, offsets, seeds, keys, zeros=zeros, stream=99)
    assert np.array_equal(got[:, :, 1:], base[:, :, 1:])
    assert np.array_equal(got[:, 1, 0], base[:, 1, 0])
    extra = got[:, :, 0] - base[:, :, 0]
    assert np.all(extra == np.round(extra)) and np.all(extra >= 0)
    np.testing.assert_allclose(got, poisson_bootstrap_sums_numpy(values, offsets, seeds, keys, zeros, 99),
                               rtol=1e-12)
    assert np.array_equal(extra, poisson_count_draws(seeds, zeros, 99))
    # another stream: other draws
    assert not np.array_equal(poisson_count_draws(seeds, zeros, 98), extra)
    with pytest.raises(ValueError, match="zeros"):
        poisson_bootstrap_sums(values, offsets, seeds, keys, zeros=[1, 2])
    with pytest.raises(ValueError, match="non-negative"):
        poisson_count_draws(seeds, [-1])
    only = poisson_bootstrap_sums(np.zeros((1, 0)), [0, 0], seeds, _keys(0), zeros=[5])
    assert only[:, 0, 0].sum() > 0 and not only[:, 0, 1].any()


@pytest.mark.parametrize("mu", [0.5, 3.0, 9.5, 25.0, 700.0])
def test_block_draws_are_poisson(mu):
    """The per-group draw is Poisson(mu): multiplication method below 10, PTRS above."""
    seeds = replicate_seeds(int(mu * 10), 4000)
    d = poisson_count_draws(seeds, [int(mu)] if mu == int(mu) else [0])[:, 0].astype(np.float64)
    if mu != int(mu):  # a fractional mean goes through the Python port only
        from tests.reference_bootstrap import poisson_block_py

        d = np.array([poisson_block_py(int(s), 0, mu) for s in seeds])
    lo, hi = stats.poisson.ppf(0.001, mu), stats.poisson.ppf(0.999, mu)
    edges = np.unique(np.linspace(lo, hi + 1, 12).astype(np.int64))
    obs = np.histogram(np.clip(d, lo, hi), bins=edges)[0]
    cdf = stats.poisson.cdf(edges - 1, mu)
    cdf[0], cdf[-1] = 0.0, 1.0
    exp = np.diff(cdf) * d.size
    assert stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue > 1e-4
    assert abs(d.mean() - mu) < 5 * math.sqrt(mu / d.size)


def test_collapsed_identical_at_one_thread_and_all_threads():
    rng = np.random.default_rng(4)
    values = rng.gamma(1.0, 5.0, (1, 9000))
    offsets, zeros, seeds = np.array([0, 4000, 9000]), np.array([100_000, 37]), replicate_seeds(3, 50)
    keys = _keys(9000)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = poisson_bootstrap_sums(values, offsets, seeds, keys, zeros=zeros)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = poisson_bootstrap_sums(values, offsets, seeds, keys, zeros=zeros)
    finally:
        numba.set_num_threads(before)
    assert np.array_equal(one, many)
