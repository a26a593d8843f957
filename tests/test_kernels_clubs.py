"""Club kernels: id hashes (`kernels/_hash.py`) and overlap-free assignment (`kernels/clubs.py`)."""

import math

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from centile.kernels.clubs import assign_best_rank, assign_priority
from centile.kernels.hashing import hash_int64, hash_strings
from tests import reference as ref

NAMES = ("club", "tier", "position", "size", "threshold", "skipped", "qualified")
INT64 = st.integers(-(2**63), 2**63 - 1)


# --------------------------------------------------------------------------
# hashes
# --------------------------------------------------------------------------
def test_splitmix64_golden_values():
    # First outputs of SplitMix64 seeded with 1234567 (Vigna's reference
    # implementation): mix64(x) is the first output of a generator seeded x.
    assert ref.mix64(1234567) == 6457827717110365317
    assert ref.mix64(1234567 + 0x9E3779B97F4A7C15) == 3203168211198807973
    # hash_int64(id, seed) = mix64(id ^ mix64(seed)): pick the id that undoes the seed mix.
    seed = 99
    the_id = np.array([1234567 ^ ref.mix64(seed)], np.uint64).view(np.int64)
    assert hash_int64(the_id, seed).tolist() == [6457827717110365317]


def test_hash_regression_values():
    # Fixed values: a change here changes every club tie-break downstream.
    assert hash_int64([0, 1, -1, 2**63 - 1], 0).tolist() == [
        12035550249420947055, 627405149472732430, 3303439293501059696, 14389535693014737104]
    assert hash_int64([42], 2026).tolist() == [8518353899324195698]
    data = b"customer-42" + "Müller".encode()
    off = np.array([0, 0, 11, len(data)])
    assert hash_strings(off, np.frombuffer(data, np.uint8), 0).tolist() == [
        6566800829925814604, 5229513339910556410, 2475586548789390311]
    assert hash_strings([0, 11], np.frombuffer(b"customer-42", np.uint8), 2026).tolist() == [
        16908117616385334257]


@given(st.lists(INT64, max_size=50), st.integers(-(2**70), 2**70))
def test_hash_int64_matches_reference_and_is_order_free(ids, seed):
    got = hash_int64(np.array(ids, np.int64), seed)
    assert got.dtype == np.uint64
    assert got.tolist() == ref.hash_int64(ids, seed)
    perm = np.random.default_rng(len(ids)).permutation(len(ids))
    assert hash_int64(np.array(ids, np.int64)[perm], seed).tolist() == got[perm].tolist()
    # a bijection for a fixed seed: distinct ids never collide
    assert len(set(got.tolist())) == len(set(ids))


@given(st.lists(st.binary(max_size=12), max_size=30), st.integers(0, 2**64 - 1))
def test_hash_strings_matches_reference(strings, seed):
    data = np.frombuffer(b"".join(strings), np.uint8)
    off = np.cumsum([0] + [len(s) for s in strings])
    got = hash_strings(off, data, seed)
    assert got.tolist() == ref.hash_bytes(strings, seed)
    assert hash_strings(off.astype(np.int32), data, seed).tolist() == got.tolist()


def test_hash_strings_rejects_bad_offsets():
    data = np.frombuffer(b"abc", np.uint8)
    with pytest.raises(ValueError, match="non-decreasing"):
        hash_strings([0, 2, 1], data)
    with pytest.raises(ValueError, match="non-decreasing"):
        hash_strings([0, 4], data)
    assert hash_strings([0], data).shape == (0,)


# --------------------------------------------------------------------------
# clubs: helpers
# --------------------------------------------------------------------------
KEY_VALUES = [math.nan, -1.0, 0.0, 1.0, 2.0]


@st.composite
def club_inputs(draw, max_n=24, max_clubs=4):
    n = draw(st.integers(0, max_n))
    n_clubs = draw(st.integers(1, max_clubs))
    n_tiers = draw(st.integers(1, 3))
    m = draw(st.integers(1, 3))
    flat = draw(st.lists(st.sampled_from(KEY_VALUES), min_size=n_clubs * n * m,
                         max_size=n_clubs * n * m))
    vals = np.array(flat, dtype=np.float64).reshape(n_clubs, n, m)
    hashes = draw(st.none() | st.lists(st.integers(0, 3), min_size=n, max_size=n))
    sizes = np.array(draw(st.lists(st.integers(0, 6), min_size=n_clubs * n_tiers,
                                   max_size=n_clubs * n_tiers)), np.int64)
    sizes = sizes.reshape(n_clubs, n_tiers)
    if draw(st.booleans()):  # percentiles as the engine computes them
        pct = np.array([ref.rank_pct(vals[c, :, 0].tolist())[1] for c in range(n_clubs)])
    else:  # any preference values, ties across clubs included
        pct = np.array(draw(st.lists(st.sampled_from([0.0, 0.5, 1.0]),
                                     min_size=n_clubs * n, max_size=n_clubs * n)), float)
    pct = pct.reshape(n_clubs, n)
    pct[np.isnan(vals[:, :, 0])] = np.nan
    h = None if hashes is None else np.array(hashes, np.uint64)
    return vals, h, sizes, pct


def _as_lists(vals, hashes):
    keys = [[tuple(vals[c, i]) for i in range(vals.shape[1])] for c in range(vals.shape[0])]
    return keys, None if hashes is None else hashes.tolist()


def _assert_same(got, exp):
    for name, a, b in zip(NAMES, got, exp, strict=True):
        b = np.asarray(b).reshape(np.shape(a))
        assert np.array_equal(np.asarray(a), b, equal_nan=True), name


def _check_common(vals, hashes, sizes, out):
    club, tier, position, size, threshold, skipped, qualified = out
    n_clubs, n = vals.shape[0], vals.shape[1]
    assert club.dtype == np.int32 and tier.dtype == np.int8 and position.dtype == np.int64
    assert qualified.shape == (n, n_clubs) and qualified.dtype == np.bool_
    # at most one club and tier per customer; members are eligible
    assert np.array_equal(club >= 0, tier > 0)
    assert np.array_equal(club >= 0, position >= 0)
    for i in np.flatnonzero(club >= 0):
        assert not math.isnan(vals[club[i], i, 0])
    for c in range(n_clubs):
        for t in range(sizes.shape[1]):
            assert size[c, t] == np.sum((club == c) & (tier == t + 1)) <= sizes[c, t]
    # qualified = top sum(sizes[c]) of the club's own ordering
    for c in range(n_clubs):
        order = ref.order([tuple(r) for r in vals[c]], None if hashes is None else hashes.tolist())
        top = set(order[: sizes[c].sum()])
        assert set(np.flatnonzero(qualified[:, c]).tolist()) == top


def _prefers(key_c, hashes, i, j):
    """Club with keys ``key_c`` prefers customer i to j."""
    return ref.sort_key(key_c, hashes, i) < ref.sort_key(key_c, hashes, j)


def _check_priority(vals, hashes, sizes, out):
    club, tier = out[0], out[1]
    keys, hl = _as_lists(vals, hashes)
    taken = np.zeros(vals.shape[1], bool)
    for t in range(sizes.shape[1]):
        for c in range(vals.shape[0]):
            members = np.flatnonzero((club == c) & (tier == t + 1))
            free = [i for i in range(vals.shape[1])
                    if not taken[i] and not math.isnan(vals[c, i, 0]) and i not in members]
            # every member beats every eligible customer still free at its turn
            for i in members:
                assert not taken[i]
                for j in free:
                    assert _prefers(keys[c], hl, i, j)
            # exact size unless nobody eligible is left
            assert len(members) == sizes[c, t] or not free
            taken[members] = True


def _check_best_rank(vals, hashes, sizes, pct, out):
    club, tier = out[0], out[1]
    keys, hl = _as_lists(vals, hashes)
    n_clubs, n = vals.shape[0], vals.shape[1]
    for t in range(sizes.shape[1]):
        free = [i for i in range(n) if club[i] < 0 or tier[i] >= t + 1]
        members = {c: [i for i in free if club[i] == c and tier[i] == t + 1]
                   for c in range(n_clubs)}
        for c in range(n_clubs):
            if sizes[c, t] == 0:
                continue
            eligible = [i for i in free if not math.isnan(vals[c, i, 0])]
            # exact size unless every free eligible customer was placed this tier
            if len(members[c]) < sizes[c, t]:
                assert all(tier[i] == t + 1 for i in eligible)
            worst = max(members[c], key=lambda i: ref.sort_key(keys[c], hl, i), default=None)
            for i in eligible:
                if club[i] == c and tier[i] == t + 1:
                    continue
                a = club[i] if tier[i] == t + 1 else None
                wants = a is None or (pct[c, i], -c) > (pct[a, i], -a)
                accepts = worst is None or len(members[c]) < sizes[c, t] or _prefers(
                    keys[c], hl, i, worst)
                assert not (wants and accepts), ("blocking pair", i, c, t + 1)


# --------------------------------------------------------------------------
# clubs: properties on small inputs
# --------------------------------------------------------------------------
@given(club_inputs())
def test_assign_priority_matches_reference(case):
    vals, hashes, sizes, _pct = case
    out = assign_priority(vals, hashes, sizes)
    keys, hl = _as_lists(vals, hashes)
    _assert_same(out, ref.assign_priority(keys, hl, sizes.tolist()))
    _check_common(vals, hashes, sizes, out)
    _check_priority(vals, hashes, sizes, out)


@given(club_inputs())
def test_assign_best_rank_matches_reference(case):
    vals, hashes, sizes, pct = case
    out = assign_best_rank(vals, hashes, sizes, pct)
    keys, hl = _as_lists(vals, hashes)
    _assert_same(out, ref.assign_best_rank(keys, hl, sizes.tolist(), pct.tolist()))
    _check_common(vals, hashes, sizes, out)
    _check_best_rank(vals, hashes, sizes, pct, out)


@settings(max_examples=15)
@given(club_inputs(max_n=6, max_clubs=6))
def test_more_clubs_than_customers(case):
    vals, hashes, sizes, pct = case
    for out in (assign_priority(vals, hashes, sizes), assign_best_rank(vals, hashes, sizes, pct)):
        _check_common(vals, hashes, sizes, out)


def test_key_matrices_as_a_list_are_padded():
    a = np.array([[1.0, 5.0], [1.0, 7.0], [0.0, 9.0]])
    b = np.array([2.0, 3.0, 1.0])
    got = assign_priority([a, b], None, [[1], [1]])
    vals = np.full((2, 3, 2), np.nan)
    vals[0] = a
    vals[1, :, 0] = b
    _assert_same(got, assign_priority(vals, None, [[1], [1]]))
    assert got[0].tolist() == [1, 0, -1]


def test_input_errors():
    vals = np.zeros((2, 3, 1))
    with pytest.raises(ValueError, match="sizes"):
        assign_priority(vals, None, np.ones((3, 1), np.int64))
    with pytest.raises(ValueError, match=">= 0"):
        assign_priority(vals, None, np.array([[1], [-1]]))
    with pytest.raises(TypeError, match="integers"):
        assign_priority(vals, None, np.array([[1.0], [1.0]]))
    with pytest.raises(ValueError, match="hashes"):
        assign_priority(vals, np.zeros(2, np.uint64), [[1], [1]])
    pct = np.zeros((2, 3))
    pct[0, 1] = np.nan
    with pytest.raises(ValueError, match="club 0, row 1"):
        assign_best_rank(vals, None, [[1], [1]], pct)


# --------------------------------------------------------------------------
# clubs: medium inputs (prefix growth, pool fallback) and thread counts
# --------------------------------------------------------------------------
def _medium(kind, n=2_000, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 8, n).astype(float)
    vals = np.empty((3, n, 2))
    if kind == "correlated":  # clubs compete for the same customers: deep walks
        vals[0, :, 0] = base
        vals[1, :, 0] = base + rng.integers(0, 2, n)
        vals[2, :, 0] = np.where(rng.random(n) < 0.3, np.nan, base)
    elif kind == "overlapping":  # few ties, strongly correlated: deep walks in complete pools
        x = rng.standard_normal(n)
        vals[:, :, 0] = (x + 0.2 * rng.standard_normal((3, n))).round(3)
    elif kind == "all-tied":  # one giant tie on the primary: the pool overflows its slack
        vals[:, :, 0] = 1.0
    else:
        vals[:, :, 0] = rng.standard_normal((3, n)).round(1)
        vals[:, rng.random(n) < 0.2, 0] = np.nan
    vals[:, :, 1] = rng.integers(0, 4, (3, n))
    hashes = rng.integers(0, 50, n).astype(np.uint64)
    sizes = np.array([[20, 100], [20, 100], [20, 100]], np.int64)
    pct = np.array([ref.rank_pct(vals[c, :, 0].tolist())[1] for c in range(3)])
    return vals, hashes, sizes, pct


@pytest.mark.parametrize("kind", ["correlated", "overlapping", "all-tied", "independent"])
def test_medium_inputs_against_reference(kind):
    vals, hashes, sizes, pct = _medium(kind)
    keys, hl = _as_lists(vals, hashes)
    out = assign_priority(vals, hashes, sizes)
    _assert_same(out, ref.assign_priority(keys, hl, sizes.tolist()))
    out = assign_best_rank(vals, hashes, sizes, pct)
    _assert_same(out, ref.assign_best_rank(keys, hl, sizes.tolist(), pct.tolist()))
    _check_best_rank(vals, hashes, sizes, pct, out)


def test_same_result_with_one_and_all_threads():
    rng = np.random.default_rng(5)
    n = 30_000
    vals = rng.integers(0, 30, (6, n, 2)).astype(float)
    vals[:, rng.random(n) < 0.1, 0] = np.nan
    hashes = hash_int64(np.arange(n), 1)
    sizes = np.array([[300, 1_500]] * 6, np.int64)
    pct = np.where(np.isnan(vals[:, :, 0]), np.nan, rng.random((6, n)).round(2))
    all_threads = numba.config.NUMBA_NUM_THREADS
    try:
        numba.set_num_threads(1)
        one = (assign_priority(vals, hashes, sizes), assign_best_rank(vals, hashes, sizes, pct))
    finally:
        numba.set_num_threads(all_threads)
    many = (assign_priority(vals, hashes, sizes), assign_best_rank(vals, hashes, sizes, pct))
    for a, b in zip(one, many, strict=True):
        _assert_same(a, b)
