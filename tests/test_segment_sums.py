"""Exact group sums (engine/segments/sums.py): against sums of fractions, and the same bits for any
split of the values into partitions merged in order (issue 16: profiles per partition)."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from centile.segments.sums import GroupMoments, Moments, group_moments

_FLOATS = st.one_of(
    st.floats(-1e12, 1e12, allow_nan=False, allow_infinity=False).filter(lambda v: v == 0 or abs(v) >= 2.0 ** -400),
    st.sampled_from([0.0, -0.0, 0.1, 0.2, 0.3, 1e100, -1e100, 1.0 + 2 ** -52, 3.0]))


def _reference(values: list[float]) -> tuple[float, float | None, float | None]:
    """sum, mean, sample sd from fractions (one rounding each; the sd's square root of the rounded
    variance, as the state computes it)."""
    exact = [Fraction(v) for v in values]
    n = len(exact)
    s = sum(exact, Fraction(0))
    mean = float(s / n) if n else None
    sd = None
    if n >= 2:
        m = s / n
        sd = math.sqrt(float(sum(((v - m) ** 2 for v in exact), Fraction(0)) / (n - 1)))
    return float(s), mean, sd


def _moments(codes, labels, x):
    return group_moments(np.asarray(codes, np.int64), labels, np.asarray(x, np.float64), squares=True)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), _FLOATS), max_size=60), st.lists(st.integers(1, 59), max_size=4))
def test_group_sums_are_exact_and_the_same_for_any_split(rows, cuts):
    labels = ["a", "b", "c", "d"]
    codes = [c for c, _v in rows]
    x = [v for _c, v in rows]
    whole = _moments(codes, labels, x)
    bounds = [0, *sorted({c for c in cuts if c < len(rows)}), len(rows)]
    merged = GroupMoments()
    for a, b in zip(bounds, bounds[1:], strict=False):
        merged.add(_moments(codes[a:b], labels, x[a:b]))
    for g, lab in enumerate(labels):
        vals = [v for c, v in rows if c == g]
        ref = _reference(vals)
        for state in (whole.get(lab, True), merged.get(lab, True)):
            assert state.count == len(vals)
            assert state.sum() == ref[0] or (ref[0] == 0 and state.sum() == 0)
            assert state.mean() == ref[1]
            assert state.std() == ref[2]
        assert whole.get(lab, True) == merged.get(lab, True)


def test_specials_propagate_as_in_polars():
    x = np.array([1.0, np.nan, 2.0, np.inf, 3.0, np.inf, -np.inf, 4.0, 5.0])
    m = group_moments(np.array([0, 0, 1, 1, 2, 3, 3, 4, 4]), ["nan", "inf", "one", "both", "two"], x, squares=True)
    assert math.isnan(m.groups["nan"].sum()) and math.isnan(m.groups["nan"].mean())
    assert math.isnan(m.groups["nan"].std())
    assert m.groups["inf"].sum() == math.inf and m.groups["inf"].mean() == math.inf
    assert m.groups["one"].std() is None and m.groups["one"].mean() == 3.0
    assert math.isnan(m.groups["both"].sum())
    assert m.groups["two"].std() == pytest.approx(math.sqrt(0.5), abs=0)
    assert Moments(squares=0).mean() is None and Moments(squares=0).sum() == 0.0
    # a sum that float addition in any order gets wrong: 1e16 + 1 + 1 - 1e16
    big = group_moments(np.zeros(4, np.int64), ["g"], np.array([1e16, 1.0, 1.0, -1e16]))
    assert big.groups["g"].sum() == 2.0


def test_out_of_range_squares_are_refused():
    with pytest.raises(ValueError, match="exact squares"):
        group_moments(np.zeros(1, np.int64), ["g"], np.array([1e200]), squares=True)


def test_a_pickled_state_is_the_same_state_and_short():
    import pickle

    m = group_moments(np.zeros(3, np.int64), ["g"], np.array([0.1, -2.5, 1e9]), squares=True)
    back = pickle.loads(pickle.dumps(m))
    assert back == m and back.groups["g"].std() == m.groups["g"].std()
    assert len(pickle.dumps(m.groups["g"])) < 200  # the sums without their 2**-1126 unit's zeros
    assert pickle.loads(pickle.dumps(Moments())) == Moments()
