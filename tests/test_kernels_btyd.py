"""BTYD kernels (kernels/btyd.py) against the plain scipy formulas in tests/reference_btyd.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from centile.kernels import btyd

from . import reference_btyd as ref

CDNOW_BG = (0.243, 4.414, 0.793, 2.426)
CDNOW_PNBD = (0.553, 10.578, 0.606, 11.669)
CDNOW_GG = (6.25, 3.74, 15.44)

pos = st.floats(0.05, 20.0)


@st.composite
def customers(draw, max_x=30, max_n=8):
    """A few (x, tx, T) rows: ties, x = 0, tx = T and tiny T included."""
    n = draw(st.integers(1, max_n))
    rows = []
    for _ in range(n):
        T = draw(st.one_of(st.floats(1e-6, 80.0), st.sampled_from([1e-6, 1.0, 39.0])))
        x = draw(st.integers(0, max_x))
        frac = draw(st.one_of(st.floats(0.0, 1.0), st.sampled_from([0.0, 1.0])))
        rows.append((float(x), 0.0 if x == 0 else frac * T, T))
    if draw(st.booleans()):
        rows.append(rows[0])  # a tie
    return tuple(np.array(c) for c in zip(*rows, strict=True))


@given(r=pos, alpha=pos, a=pos, b=pos, data=customers())
def test_bgnbd_loglik_matches_reference(r, alpha, a, b, data):
    x, tx, T = data
    got = btyd.bgnbd_loglik_each((r, alpha, a, b), x, tx, T)
    want = np.array([ref.bgnbd_ll(r, alpha, a, b, *row) for row in zip(x, tx, T, strict=True)])
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
    total, _ = btyd.bgnbd_loglik((r, alpha, a, b), x, tx, T)
    assert total == pytest.approx(want.sum(), rel=1e-10, abs=1e-8)


@given(r=pos, alpha=pos, s=pos, beta=pos, data=customers())
def test_pareto_nbd_loglik_matches_integral_reference(r, alpha, s, beta, data):
    x, tx, T = data
    got = btyd.pareto_nbd_loglik_each((r, alpha, s, beta), x, tx, T)
    want = np.array([ref.pareto_nbd_ll_integral(r, alpha, s, beta, *row) for row in zip(x, tx, T, strict=True)])
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-8)


def test_pareto_nbd_matches_printed_2f1_formula():
    rng = np.random.default_rng(5)
    x = rng.integers(0, 15, 40).astype(float)
    T = rng.uniform(0.5, 60, 40)
    tx = np.where(x > 0, rng.uniform(0, 1, 40) * T, 0.0)
    for params in (CDNOW_PNBD, (1.5, 3.0, 0.4, 20.0), (0.5, 20.0, 2.0, 1.0)):
        got = btyd.pareto_nbd_loglik_each(params, x, tx, T)
        want = [ref.pareto_nbd_ll(*params, *row) for row in zip(x, tx, T, strict=True)]
        np.testing.assert_allclose(got, want, rtol=1e-10)


@given(p=pos, q=pos, g=st.floats(0.1, 100.0), n=st.integers(1, 6), data=st.data())
def test_gamma_gamma_loglik_matches_reference(p, q, g, n, data):
    x = np.array(data.draw(st.lists(st.integers(1, 50), min_size=n, max_size=n)), float)
    m = np.array(data.draw(st.lists(st.floats(0.01, 500.0), min_size=n, max_size=n)))
    got = btyd.gamma_gamma_loglik_each((p, q, g), x, m)
    want = np.array([ref.gamma_gamma_ll(p, q, g, xi, mi) for xi, mi in zip(x, m, strict=True)])
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-8)


@given(r=pos, alpha=pos, a=pos, b=pos, data=customers())
def test_loglik_is_additive_over_customers(r, alpha, a, b, data):
    x, tx, T = data
    k = x.size // 2
    for total in (lambda *c: btyd.bgnbd_loglik((r, alpha, a, b), *c)[0],
                  lambda *c: btyd.pareto_nbd_loglik((r, alpha, a, b), *c)):
        whole = total(x, tx, T)
        parts = total(x[:k], tx[:k], T[:k]) + total(x[k:], tx[k:], T[k:]) if k else whole
        assert whole == pytest.approx(parts, rel=1e-12, abs=1e-9)
    # weights are repeated rows
    w = np.arange(1, x.size + 1, dtype=float)
    rep = [np.repeat(c, w.astype(int)) for c in (x, tx, T)]
    assert btyd.bgnbd_loglik((r, alpha, a, b), x, tx, T, w)[0] == pytest.approx(
        btyd.bgnbd_loglik((r, alpha, a, b), *rep)[0], rel=1e-12, abs=1e-9)
    assert btyd.pareto_nbd_loglik((r, alpha, a, b), x, tx, T, w) == pytest.approx(
        btyd.pareto_nbd_loglik((r, alpha, a, b), *rep), rel=1e-12, abs=1e-9)


@pytest.mark.parametrize("params", [CDNOW_BG, (2.0, 0.5, 3.0, 0.7), (0.5, 10.0, 1.0, 5.0)])
def test_bgnbd_gradient_matches_finite_differences(params):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 20, 60).astype(float)
    T = rng.uniform(0.1, 60, 60)
    tx = np.where(x > 0, rng.uniform(0, 1, 60) * T, 0.0)
    _, g = btyd.bgnbd_loglik(params, x, tx, T)
    num = ref.numeric_grad(lambda th: btyd.bgnbd_loglik_each(th, x, tx, T).sum(), params)
    np.testing.assert_allclose(g, num, rtol=1e-6)


def test_gamma_gamma_gradient_matches_finite_differences():
    rng = np.random.default_rng(2)
    x = rng.integers(1, 20, 60).astype(float)
    m = rng.gamma(2.0, 10.0, 60)
    _, g = btyd.gamma_gamma_loglik(CDNOW_GG, x, m)
    num = ref.numeric_grad(lambda th: btyd.gamma_gamma_loglik_each(th, x, m).sum(), CDNOW_GG)
    np.testing.assert_allclose(g, num, rtol=1e-6)


def test_predictions_match_reference():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 20, 40).astype(float)
    T = rng.uniform(0.5, 60, 40)
    tx = np.where(x > 0, rng.uniform(0, 1, 40) * T, 0.0)
    for params in (CDNOW_BG, (2.0, 0.5, 3.0, 0.7), (0.5, 10.0, 1.5, 5.0)):
        got = btyd.bgnbd_predict(params, x, tx, T, 20.0)
        rows = list(zip(x, tx, T, strict=True))
        np.testing.assert_allclose(got["p_alive"], [ref.bgnbd_p_alive(*params, *r) for r in rows], rtol=1e-12)
        np.testing.assert_allclose(got["expected"], [ref.bgnbd_expected(*params, *r, 20.0) for r in rows],
                                   rtol=1e-9)
    for params in (CDNOW_PNBD, (1.5, 3.0, 0.4, 20.0), (0.5, 20.0, 2.0, 1.0)):
        got = btyd.pareto_nbd_predict(params, x, tx, T, 20.0)
        rows = list(zip(x, tx, T, strict=True))
        np.testing.assert_allclose(got["p_alive"], [ref.pareto_nbd_p_alive(*params, *r) for r in rows],
                                   rtol=1e-8)
        np.testing.assert_allclose(got["p_any"], [ref.pareto_nbd_p_any(*params, *r, 20.0) for r in rows],
                                   rtol=1e-8, atol=1e-12)


def test_bgnbd_expectation_continuous_in_a_near_one():
    # eq. 10 divides by a - 1; the kernel's form has no singularity there
    args = ([3.0, 0.0], [10.0, 0.0], [30.0, 30.0], 26.0)
    near = [btyd.bgnbd_predict((0.5, 5.0, 1.0 + d, 3.0), *args)["expected"] for d in (-1e-9, 0.0, 1e-9)]
    np.testing.assert_allclose(near[0], near[1], rtol=1e-7)
    np.testing.assert_allclose(near[2], near[1], rtol=1e-7)
    far = btyd.bgnbd_predict((0.5, 5.0, 1.0 + 1e-3, 3.0), *args)["expected"]
    want = [ref.bgnbd_expected(0.5, 5.0, 1.0 + 1e-3, 3.0, xi, ti, Ti, 26.0)
            for xi, ti, Ti in zip(*args[:3], strict=True)]
    np.testing.assert_allclose(far, want, rtol=1e-8)


@pytest.mark.parametrize("x,tx,T", [(3.0, 10.0, 30.0), (0.0, 0.0, 30.0), (12.0, 5.0, 40.0)])
def test_bgnbd_interval_pmf_mean_is_the_conditional_expectation(x, tx, T):
    # the quantiles come from P(X(T, T+t) = k | history); its mean must equal eq. 10
    r, alpha, a, b = CDNOW_BG
    t = 39.0
    pa = ref.bgnbd_p_alive(r, alpha, a, b, x, tx, T)
    pmf = [pa * ref.bgnbd_pmf(r + x, alpha + T, a, b + x, t, k) for k in range(400)]
    pmf[0] += 1 - pa
    mean = sum(k * p for k, p in enumerate(pmf))
    assert mean == pytest.approx(ref.bgnbd_expected(r, alpha, a, b, x, tx, T, t), rel=1e-8)
    cdf = np.cumsum(pmf)
    got = btyd.bgnbd_predict(CDNOW_BG, [x], [tx], [T], t, interval=0.9)
    assert got["lo"][0] == int(np.searchsorted(cdf, 0.05 - 1e-12))
    assert got["hi"][0] == int(np.searchsorted(cdf, 0.95 - 1e-12))
    assert got["p_any"][0] == pytest.approx(1 - pmf[0], rel=1e-10)  # P(at least one purchase)


def test_extreme_inputs_stay_finite():
    x = np.array([500.0, 500.0, 500.0, 0.0, 1.0, 200.0])
    tx = np.array([52.0, 1e-9, 3.0, 0.0, 1e-9, 1e-7])
    T = np.array([52.0, 1e-9, 52.0, 1e-12, 1e-9, 1e-7])
    for params in (CDNOW_BG, (0.01, 100.0, 0.05, 50.0), (50.0, 0.01, 20.0, 0.05)):
        assert np.isfinite(btyd.bgnbd_loglik_each(params, x, tx, T)).all()
        ll, g = btyd.bgnbd_loglik(params, x, tx, T)
        assert math.isfinite(ll) and np.isfinite(g).all()
        pr = btyd.bgnbd_predict(params, x, tx, T, 52.0, interval=0.9)
        for k, v in pr.items():
            assert np.isfinite(v).all(), k
        assert ((pr["p_alive"] >= 0) & (pr["p_alive"] <= 1)).all()
        assert ((pr["p_any"] >= 0) & (pr["p_any"] <= 1)).all()
        assert (pr["lo"] <= pr["hi"]).all()
    for params in (CDNOW_PNBD, (0.553, 100.0, 0.606, 0.01), (0.553, 0.01, 0.606, 100.0), (5.0, 1.0, 5.0, 1.0)):
        assert np.isfinite(btyd.pareto_nbd_loglik_each(params, x, tx, T)).all()
        pr = btyd.pareto_nbd_predict(params, x, tx, T, 52.0)
        for k, v in pr.items():
            assert np.isfinite(v).all(), k
        assert ((pr["p_any"] >= 0) & (pr["p_any"] <= 1)).all()
    assert np.isfinite(btyd.gamma_gamma_loglik_each(CDNOW_GG, [500.0, 1.0], [1e-6, 1e6])).all()


def test_inputs_are_checked():
    with pytest.raises(ValueError, match="tx <= T"):
        btyd.bgnbd_loglik_each(CDNOW_BG, [1.0], [5.0], [4.0])
    with pytest.raises(ValueError, match="positive"):
        btyd.bgnbd_loglik_each((0.0, 1.0, 1.0, 1.0), [1.0], [1.0], [4.0])
    with pytest.raises(ValueError, match="NaN"):
        btyd.pareto_nbd_loglik_each(CDNOW_PNBD, [np.nan], [1.0], [4.0])
    with pytest.raises(ValueError, match="repeat buyers"):
        btyd.gamma_gamma_loglik_each(CDNOW_GG, [0.0], [3.0])
    assert btyd.bgnbd_loglik_each(CDNOW_BG, [], [], []).size == 0
