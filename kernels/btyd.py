"""Buy-till-you-die likelihoods and predictions: BG/NBD, Pareto/NBD, Gamma-Gamma.

Notation (one row per customer): ``x`` repeat transactions, ``tx`` time of the
last transaction and ``T`` time of the calibration end, both measured from the
first purchase. Parameters by their usual names: BG/NBD ``(r, alpha, a, b)``
(Fader, Hardie & Lee 2005, "Counting your customers the easy way", eq. 6),
Pareto/NBD ``(r, alpha, s, beta)`` (Fader & Hardie 2005, "A note on deriving
the Pareto/NBD model and related expressions", eqs. 17-22), Gamma-Gamma
``(p, q, gamma)`` on the mean repeat spend ``m`` (Fader & Hardie 2013, "The
Gamma-Gamma model of monetary value", eq. 4).

Numerical safety:

* everything is computed in log space; the two branches of a likelihood are
  combined with a stable log-sum-exp;
* terms that depend on ``x`` only (log-gammas, digammas) are evaluated once
  per distinct ``x`` (``ux`` with summed weights ``wx``), the per-customer loop
  needs a few logs and one exp;
* the Pareto/NBD Gauss hypergeometric ``2F1(a, b; a + 1; z)`` is evaluated after
  Euler's transformation, ``(1 - z)^(1 - b) 2F1(1, a + 1 - b; a + 1; z)``, whose
  series has positive, decreasing terms (ratio below ``z``): no overflow for
  customers with hundreds of transactions;
* the BG/NBD conditional expectation uses the same transformation,
  ``(1-z)^(r+x) 2F1(r+x, b+x; a+b+x-1; z) = (1-z)^(a-1) 2F1(a+b-1-r, a-1; a+b+x-1; z)``,
  and is written so that ``a = 1`` is not a singularity.

Public wrappers check and coerce inputs; the ``_``-prefixed ``@njit`` kernels
only compute. Parameters are passed on their natural scale; gradients are
with respect to the natural parameters (the fitting code applies the chain
rule for log-parameters).
"""

import math

import numpy as np
from numba import njit, prange

from ._flags import JIT, JIT_PARALLEL

_EPS = 1e-17
_MAX_TERMS = 1_000_000


# ---------------------------------------------------------------------------
# special functions

@njit(**JIT)
def _digamma(x):
    """psi(x) for x > 0: recurrence up to 6, then the asymptotic series (abs. error < 1e-13)."""
    acc = 0.0
    while x < 6.0:
        acc -= 1.0 / x
        x += 1.0
    f = 1.0 / (x * x)
    tail = f * (1.0 / 12 - f * (1.0 / 120 - f * (1.0 / 252 - f * (1.0 / 240 - f * (1.0 / 132)))))
    return acc + math.log(x) - 0.5 / x - tail


@njit(**JIT)
def _logaddexp(u, v):
    if u == -np.inf:
        return v
    if v == -np.inf:
        return u
    m = max(u, v)
    return m + math.log(math.exp(u - m) + math.exp(v - m))


@njit(**JIT)
def _log_2f1_a_b_a1(a, b, z):
    """log 2F1(a, b; a + 1; z) for a > 0, b > 0, 0 <= z < 1 (Euler-transformed series)."""
    # 2F1(a, b; a+1; z) = (1-z)^(1-b) * sum_k [(a+1-b)_k / (a+1)_k] z^k
    c = a + 1.0 - b
    term = 1.0
    s = 1.0
    k = 0
    while k < _MAX_TERMS:
        term *= (c + k) / (a + 1.0 + k) * z
        s += term
        k += 1
        ratio = (c + k) / (a + 1.0 + k) * z
        if abs(term) * ratio < _EPS * (1.0 - ratio) * s:
            break
    return (1.0 - b) * math.log1p(-z) + math.log(s)


# ---------------------------------------------------------------------------
# BG/NBD

@njit(**JIT)
def _bgnbd_ll_one(r, alpha, a, b, x, tx, T):
    """Log-likelihood of one customer (FHL 2005, eq. 6)."""
    a1 = math.lgamma(r + x) - math.lgamma(r) + r * math.log(alpha)
    a2 = math.lgamma(a + b) + math.lgamma(b + x) - math.lgamma(b) - math.lgamma(a + b + x)
    a3 = -(r + x) * math.log(alpha + T)
    if x > 0:
        a4 = math.log(a) - math.log(b + x - 1.0) - (r + x) * math.log(alpha + tx)
        return a1 + a2 + _logaddexp(a3, a4)
    return a1 + a2 + a3


@njit(**JIT_PARALLEL)
def _bgnbd_ll_each(r, alpha, a, b, x, tx, T, out):
    for i in prange(x.size):
        out[i] = _bgnbd_ll_one(r, alpha, a, b, x[i], tx[i], T[i])


@njit(**JIT_PARALLEL)
def _bgnbd_ll_grad(r, alpha, a, b, ux, wx, T0, w0, ix1, tx1, T1, w1, grad):
    """Weighted log-likelihood sum and its gradient in (r, alpha, a, b).

    Input as prepared by :func:`bgnbd_prepare`: distinct ``ux`` with summed weights
    ``wx``; customers with x = 0 (``T0``, ``w0``); customers with x > 0 by their index
    ``ix1`` into ``ux`` (``tx1``, ``T1``, ``w1``). The loops have no data-dependent
    branches.
    """
    ll = 0.0
    g0 = 0.0
    g1 = 0.0
    g2 = 0.0
    g3 = 0.0
    la = math.log(alpha)
    lgr = math.lgamma(r)
    lgab = math.lgamma(a + b)
    lgb = math.lgamma(b)
    pr = _digamma(r)
    pab = _digamma(a + b)
    pb = _digamma(b)
    la_ = math.log(a)
    # terms of x only, once per distinct x; c_j = log a - log(b + x - 1) for the x > 0 branch
    c = np.zeros(ux.size)
    ib = np.zeros(ux.size)
    for j in range(ux.size):
        xv = ux[j]
        wj = wx[j]
        pabx = _digamma(a + b + xv)
        ll += wj * (math.lgamma(r + xv) - lgr + r * la
                    + lgab + math.lgamma(b + xv) - lgb - math.lgamma(a + b + xv))
        g0 += wj * (_digamma(r + xv) - pr + la)
        g1 += wj * r / alpha
        g2 += wj * (pab - pabx)
        g3 += wj * (pab + _digamma(b + xv) - pb - pabx)
        if xv > 0:
            c[j] = la_ - math.log(b + xv - 1.0)
            ib[j] = 1.0 / (b + xv - 1.0)
    # x = 0: log (alpha+T)^-r
    for i in prange(T0.size):
        wi = w0[i]
        ll -= wi * r * math.log(alpha + T0[i])
        g0 -= wi * math.log(alpha + T0[i])
        g1 -= wi * r / (alpha + T0[i])
    # x > 0: log[(alpha+T)^-(r+x) + a/(b+x-1) (alpha+tx)^-(r+x)] = a3 + max(d, 0) + log1p(e^-|d|)
    ia = 1.0 / a
    for i in prange(T1.size):
        j = ix1[i]
        wi = w1[i]
        rx = r + ux[j]
        lT = math.log(alpha + T1[i])
        lt = math.log(alpha + tx1[i])
        d = c[j] - rx * (lt - lT)  # a4 - a3
        e = math.exp(-abs(d))
        q = 1.0 / (1.0 + e)
        w4 = q if d >= 0.0 else e * q
        w3 = 1.0 - w4
        ll += wi * (max(d, 0.0) + math.log1p(e) - rx * lT)
        g0 -= wi * (w3 * lT + w4 * lt)
        g1 -= wi * rx * (w3 / (alpha + T1[i]) + w4 / (alpha + tx1[i]))
        g2 += wi * w4 * ia
        g3 -= wi * w4 * ib[j]
    grad[0] = g0
    grad[1] = g1
    grad[2] = g2
    grad[3] = g3
    return ll


@njit(**JIT)
def _bgnbd_log_odds_dead(r, alpha, a, b, x, tx, T):
    """log[P(dead) / P(alive)] given the history; -inf for x = 0."""
    if x <= 0:
        return -np.inf
    return math.log(a) - math.log(b + x - 1.0) + (r + x) * (math.log(alpha + T) - math.log(alpha + tx))


@njit(**JIT)
def _p_from_log_odds(lo):
    if lo == -np.inf:
        return 1.0
    if lo > 0:
        e = math.exp(-lo)
        return e / (1.0 + e)
    return 1.0 / (1.0 + math.exp(lo))


@njit(**JIT)
def _bgnbd_future_alive(r, alpha, a, b, x, T, t):
    """E[X(T, T+t) | alive at T]: the bracket of FHL 2005 eq. 10 times (a+b+x-1)/(a-1).

    With z = t / (alpha + T + t), eps = a - 1 and Euler's transformation
    ``1 - (1-z)^(r+x) 2F1(r+x, b+x; a+b+x-1; z) = (1 - (1-z)^eps) - (1-z)^eps (F - 1)`` with
    ``F = 2F1(a+b-1-r, eps; a+b+x-1; z)``; both parts are divided by ``eps`` analytically.
    """
    if t <= 0.0:
        return 0.0
    z = t / (alpha + T + t)
    eps = a - 1.0
    u = math.log1p(-z)
    if abs(eps * u) > 1e-8:
        part1 = -math.expm1(eps * u) / eps
    else:
        part1 = -u * (1.0 + 0.5 * eps * u)
    A = a + b - 1.0 - r
    C = a + b + x - 1.0
    # G = (F - 1) / eps = sum_{k>=1} (A)_k (eps+1)_{k-1} z^k / ((C)_k k!)
    term = A * z / C
    g = term
    k = 1
    while k < _MAX_TERMS:
        ratio = (A + k) * (eps + k) / ((C + k) * (k + 1.0)) * z
        term *= ratio
        g += term
        k += 1
        if abs(term) <= _EPS * abs(g) and abs(ratio) < 1.0:
            break
        if term == 0.0:
            break
    return C * (part1 - math.exp(eps * u) * g)


@njit(**JIT)
def _bgnbd_quantiles(r, alpha, a, b, x, T, t, p_alive, q_lo, q_hi):
    """Quantiles of X(T, T+t) | history: P(dead) at 0 plus P(alive) x BG/NBD pmf with
    posterior parameters (r+x, alpha+T, a, b+x) (FHL 2005 eq. 8)."""
    rp = r + x
    ap = alpha + T
    bp = b + x
    lq = math.log(ap / (ap + t))
    lpz = math.log(t / (ap + t)) if t > 0 else -np.inf
    lnb = rp * lq               # log NB pmf at k = 0
    beta_ratio = 1.0            # B(a, b'+k) / B(a, b')
    nb_cdf = 0.0                # sum_{j<k} NB_j
    cdf = 1.0 - p_alive
    prev_ratio = 1.0
    lo = -1
    hi = -1
    k = 0
    while k < _MAX_TERMS:
        nb = math.exp(lnb)
        pk = beta_ratio * nb
        if k > 0:
            pk += a / (a + bp + k - 1.0) * prev_ratio * max(1.0 - nb_cdf, 0.0)
        cdf += p_alive * pk
        if lo < 0 and cdf >= q_lo - 1e-12:
            lo = k
        if cdf >= q_hi - 1e-12:
            hi = k
            break
        nb_cdf += nb
        prev_ratio = beta_ratio
        beta_ratio *= (bp + k) / (a + bp + k)
        lnb += math.log((rp + k) / (k + 1.0)) + lpz
        k += 1
    if lo < 0:
        lo = k
    if hi < 0:
        hi = k
    return lo, hi


@njit(**JIT_PARALLEL)
def _bgnbd_alive_terms(r, alpha, a, b, ux, uT, horizon, steps, disc, e_h, e_disc):
    """Per distinct (x, T): E[X(T, T+horizon) | alive] and its monthly discounted sum."""
    for j in prange(ux.size):
        e_h[j] = _bgnbd_future_alive(r, alpha, a, b, ux[j], uT[j], horizon)
        acc = 0.0
        prev = 0.0
        for k in range(steps.size):
            cur = _bgnbd_future_alive(r, alpha, a, b, ux[j], uT[j], steps[k])
            acc += (cur - prev) * disc[k]
            prev = cur
        e_disc[j] = acc


@njit(**JIT_PARALLEL)
def _bgnbd_predict(r, alpha, a, b, x, tx, T, idx, e_h, e_disc, horizon, q_lo, q_hi, want_pi,
                   p_alive, expected, p_any, disc_tx, lo, hi):
    for i in prange(x.size):
        xi = x[i]
        pa = _p_from_log_odds(_bgnbd_log_odds_dead(r, alpha, a, b, xi, tx[i], T[i]))
        p_alive[i] = pa
        expected[i] = pa * e_h[idx[i]]
        disc_tx[i] = pa * e_disc[idx[i]]
        # alive: a purchase happens in (T, T+t] iff the Poisson clock rings, lambda ~ Gamma(r+x, alpha+T)
        p_any[i] = pa * -math.expm1((r + xi) * math.log((alpha + T[i]) / (alpha + T[i] + horizon)))
        if want_pi:
            lo[i], hi[i] = _bgnbd_quantiles(r, alpha, a, b, xi, T[i], horizon, pa, q_lo, q_hi)


# ---------------------------------------------------------------------------
# Pareto/NBD

@njit(**JIT)
def _log_tail(A, B, al, be, y):
    """log of the integral from y to infinity of (al+u)^-A (be+u)^-B du (A, B > 0, A + B > 1).

    Equal to (m+y)^-(A+B-1) / (A+B-1) 2F1(A+B-1, B'; A+B; |al-be| / (m+y)) with
    m = max(al, be) and B' = B when al >= be, else A (the 2F1 of eqs. 19-20).
    """
    c = A + B - 1.0
    if al >= be:
        return _log_2f1_a_b_a1(c, B, (al - be) / (al + y)) - c * math.log(al + y) - math.log(c)
    return _log_2f1_a_b_a1(c, A, (be - al) / (be + y)) - c * math.log(be + y) - math.log(c)


@njit(**JIT)
def _log_diff(l1, l2):
    """log(exp(l1) - exp(l2)), -inf when l2 >= l1 (an empty interval)."""
    if l1 > l2:
        return l1 + math.log1p(-math.exp(l2 - l1))
    return -np.inf


@njit(**JIT)
def _pnbd_terms(r, alpha, s, beta, x, tx, T):
    """(constant, log first branch, log second branch) of Fader & Hardie (2005) eq. 22.

    L = exp(const) * [exp(t1) + exp(t2)], t1 = -(r+x) ln(alpha+T) - s ln(beta+T),
    t2 = ln(s) + ln int_tx^T (alpha+u)^-(r+x) (beta+u)^-(s+1) du = ln(s/(r+s+x)) + ln A0.
    """
    const = math.lgamma(r + x) - math.lgamma(r) + r * math.log(alpha) + s * math.log(beta)
    t1 = -(r + x) * math.log(alpha + T) - s * math.log(beta + T)
    # tx = T gives -inf: the customer cannot have died in between
    t2 = math.log(s) + _log_diff(_log_tail(r + x, s + 1.0, alpha, beta, tx),
                                 _log_tail(r + x, s + 1.0, alpha, beta, T))
    return const, t1, t2


@njit(**JIT)
def _pnbd_ll_one(r, alpha, s, beta, x, tx, T):
    const, t1, t2 = _pnbd_terms(r, alpha, s, beta, x, tx, T)
    return const + _logaddexp(t1, t2)


@njit(**JIT_PARALLEL)
def _pnbd_ll_each(r, alpha, s, beta, x, tx, T, out):
    for i in prange(x.size):
        out[i] = _pnbd_ll_one(r, alpha, s, beta, x[i], tx[i], T[i])


@njit(**JIT_PARALLEL)
def _pnbd_tails(r, alpha, s, ux, uy, beta, out):
    """log of int_y^inf (alpha+u)^-(r+x) (beta+u)^-(s+1) du for each distinct (x, y)."""
    for j in prange(ux.size):
        out[j] = _log_tail(r + ux[j], s + 1.0, alpha, beta, uy[j])


@njit(**JIT_PARALLEL)
def _pnbd_ll_sum(r, alpha, s, beta, x, T, w, itx, iT, tails):
    """Weighted Pareto/NBD log-likelihood from the tail integrals of the (x, tx), (x, T) pairs."""
    base = -math.lgamma(r) + r * math.log(alpha) + s * math.log(beta)
    ls = math.log(s)
    ll = 0.0
    for i in prange(x.size):
        xi = x[i]
        t1 = -(r + xi) * math.log(alpha + T[i]) - s * math.log(beta + T[i])
        t2 = ls + _log_diff(tails[itx[i]], tails[iT[i]])
        ll += w[i] * (base + math.lgamma(r + xi) + _logaddexp(t1, t2))
    return ll


@njit(**JIT)
def _pnbd_future_alive(r, alpha, s, beta, x, T, t):
    """E[X(T, T+t) | alive at T] (Fader & Hardie 2005 eq. 27 without P(alive))."""
    if t <= 0.0:
        return 0.0
    u = math.log((beta + T) / (beta + T + t))
    sm1 = s - 1.0
    if abs(sm1 * u) > 1e-10:
        f = -math.expm1(sm1 * u) / sm1
    else:
        f = -u * (1.0 + 0.5 * sm1 * u)
    return (r + x) * (beta + T) / (alpha + T) * f


@njit(**JIT_PARALLEL)
def _pnbd_predict(r, alpha, s, beta, x, tx, T, horizon, steps, disc,
                  p_alive, expected, p_any, disc_tx):
    for i in prange(x.size):
        xi = x[i]
        const, t1, t2 = _pnbd_terms(r, alpha, s, beta, xi, tx[i], T[i])
        pa = _p_from_log_odds(t2 - t1)
        p_alive[i] = pa
        expected[i] = pa * _pnbd_future_alive(r, alpha, s, beta, xi, T[i], horizon)
        # P(purchase in (T, T+t] | alive) = int_0^t E[lambda e^(-lambda u)] E[e^(-mu u)] du with
        # lambda ~ Gamma(r+x, alpha+T), mu ~ Gamma(s, beta+T): the same 2F1 integral as A0
        rx = r + xi
        aT = alpha + T[i]
        bT = beta + T[i]
        lint = _log_diff(_log_tail(rx + 1.0, s, aT, bT, 0.0), _log_tail(rx + 1.0, s, aT, bT, horizon))
        p_any[i] = pa * min(math.exp(math.log(rx) + rx * math.log(aT) + s * math.log(bT) + lint), 1.0)
        total = 0.0
        prev = 0.0
        for j in range(steps.size):
            cur = _pnbd_future_alive(r, alpha, s, beta, xi, T[i], steps[j])
            total += (cur - prev) * disc[j]
            prev = cur
        disc_tx[i] = pa * total


# ---------------------------------------------------------------------------
# Gamma-Gamma

@njit(**JIT)
def _gg_ll_one(p, q, g, x, m):
    """Log density of the mean spend m of x transactions (Fader & Hardie 2013, eq. 4)."""
    px = p * x
    return (math.lgamma(px + q) - math.lgamma(px) - math.lgamma(q) + q * math.log(g)
            + px * math.log(x) + (px - 1.0) * math.log(m) - (px + q) * math.log(g + x * m))


@njit(**JIT_PARALLEL)
def _gg_ll_each(p, q, g, x, m, out):
    for i in prange(x.size):
        out[i] = _gg_ll_one(p, q, g, x[i], m[i])


@njit(**JIT_PARALLEL)
def _gg_ll_grad(p, q, g, ux, wx, x, lm, m, w, grad):
    """Weighted log-likelihood sum and gradient in (p, q, gamma); ``lm = log(m)``."""
    ll = 0.0
    g0 = 0.0
    g1 = 0.0
    g2 = 0.0
    lg = math.log(g)
    lgq = math.lgamma(q)
    pq = _digamma(q)
    for j in range(ux.size):
        xv = ux[j]
        wj = wx[j]
        px = p * xv
        ppxq = _digamma(px + q)
        lx = math.log(xv)
        ll += wj * (math.lgamma(px + q) - math.lgamma(px) - lgq + q * lg + px * lx)
        g0 += wj * xv * (ppxq - _digamma(px) + lx)
        g1 += wj * (ppxq - pq + lg)
        g2 += wj * q / g
    for i in prange(x.size):
        xi = x[i]
        wi = w[i]
        px = p * xi
        lgx = math.log(g + xi * m[i])
        ll += wi * ((px - 1.0) * lm[i] - (px + q) * lgx)
        g0 += wi * xi * (lm[i] - lgx)
        g1 -= wi * lgx
        g2 -= wi * (px + q) / (g + xi * m[i])
    grad[0] = g0
    grad[1] = g1
    grad[2] = g2
    return ll


@njit(**JIT_PARALLEL)
def _gg_expected(p, q, g, x, m, out):
    pop = p * g / (q - 1.0)
    for i in prange(x.size):
        xi = x[i]
        if xi > 0 and m[i] > 0:
            out[i] = p * (g + xi * m[i]) / (p * xi + q - 1.0)
        else:
            out[i] = pop


# ---------------------------------------------------------------------------
# public wrappers

def _f64(v, name):
    arr = np.ascontiguousarray(v, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional")
    return arr


def _rfm(x, tx, T):
    x, tx, T = _f64(x, "x"), _f64(tx, "tx"), _f64(T, "T")
    if not (x.size == tx.size == T.size):
        raise ValueError("x, tx and T must have the same length")
    if x.size and (np.isnan(x).any() or np.isnan(tx).any() or np.isnan(T).any()):
        raise ValueError("x, tx and T must not contain NaN")
    if x.size and ((x < 0).any() or (tx < 0).any() or (tx > T).any()):
        raise ValueError("need x >= 0 and 0 <= tx <= T")
    return x, tx, T


def _params(params, k, name):
    pv = [float(v) for v in params]
    if len(pv) != k or not all(v > 0 and math.isfinite(v) for v in pv):
        raise ValueError(f"{name} needs {k} positive finite parameters, got {params!r}")
    return pv


def _weights(w, n):
    if w is None:
        return np.ones(n)
    w = _f64(w, "weights")
    if w.size != n:
        raise ValueError("weights must have one entry per customer")
    return w


def _by_x(x, w):
    """Distinct x and their summed weights (a bincount when x is a small whole number)."""
    if x.size and x.max() < 1e6 and np.array_equal(x, np.floor(x)):
        wx = np.bincount(x.astype(np.int64), weights=w)
        ux = np.flatnonzero(wx).astype(np.float64)
        return ux, np.ascontiguousarray(wx[ux.astype(np.int64)])
    ux, inv = np.unique(x, return_inverse=True)
    return np.ascontiguousarray(ux), np.bincount(inv.ravel(), weights=w, minlength=ux.size)


def bgnbd_loglik_each(params, x, tx, T):
    """Per-customer BG/NBD log-likelihood (FHL 2005, eq. 6).

    Parameters
    ----------
    params : sequence of 4 floats
        ``(r, alpha, a, b)``, all positive.
    x, tx, T : array_like
        Repeat transactions, recency and age, one entry per customer.

    Returns
    -------
    numpy.ndarray
        float64, one log-likelihood per customer.
    """
    r, al, a, b = _params(params, 4, "BG/NBD")
    x, tx, T = _rfm(x, tx, T)
    out = np.empty(x.size)
    _bgnbd_ll_each(r, al, a, b, x, tx, T, out)
    return out


def bgnbd_loglik(params, x, tx, T, weights=None):
    """Weighted BG/NBD log-likelihood and its gradient in ``(r, alpha, a, b)``.

    Returns
    -------
    (float, numpy.ndarray)
        Sum of ``weights * loglik`` and the gradient (4 floats).
    """
    r, al, a, b = _params(params, 4, "BG/NBD")
    x, tx, T = _rfm(x, tx, T)
    prep = bgnbd_prepare(x, tx, T, _weights(weights, x.size))
    grad = np.empty(4)
    ll = _bgnbd_ll_grad(r, al, a, b, *prep, grad)
    return ll, grad


def bgnbd_prepare(x, tx, T, w):
    """Arrays for the BG/NBD likelihood kernel, computed once per fit: distinct x with
    summed weights, the x = 0 rows (T, w) and the x > 0 rows (index into the distinct
    x, tx, T, w)."""
    ux, wx = _by_x(x, w)
    zero = x == 0
    pos = ~zero
    ix1 = np.searchsorted(ux, x[pos]).astype(np.int64)
    c = np.ascontiguousarray
    return ux, wx, c(T[zero]), c(w[zero]), ix1, c(tx[pos]), c(T[pos]), c(w[pos])


def pareto_nbd_loglik_each(params, x, tx, T):
    """Per-customer Pareto/NBD log-likelihood (Fader & Hardie 2005 note, eq. 22).

    ``params = (r, alpha, s, beta)``. The 2F1 terms are evaluated in log space after
    Euler's transformation, so large ``x`` and ``tx = T`` stay finite.
    """
    r, al, s, be = _params(params, 4, "Pareto/NBD")
    x, tx, T = _rfm(x, tx, T)
    out = np.empty(x.size)
    _pnbd_ll_each(r, al, s, be, x, tx, T, out)
    return out


def pareto_nbd_loglik(params, x, tx, T, weights=None, prepared=None):
    """Weighted sum of the Pareto/NBD log-likelihood.

    ``prepared`` (from :func:`pareto_nbd_prepare` on the same x, tx, T) saves the
    pair search when the likelihood is evaluated many times (a fit).
    """
    r, al, s, be = _params(params, 4, "Pareto/NBD")
    x, tx, T = _rfm(x, tx, T)
    ux, uy, itx, iT = prepared if prepared is not None else pareto_nbd_prepare(x, tx, T)
    tails = np.empty(ux.size)
    _pnbd_tails(r, al, s, ux, uy, be, tails)
    return float(_pnbd_ll_sum(r, al, s, be, x, T, _weights(weights, x.size), itx, iT, tails))


def pareto_nbd_prepare(x, tx, T):
    """Distinct (x, y) pairs over y in tx and T, with each customer's index for its
    (x, tx) and (x, T) pair: the 2F1 terms are evaluated once per pair."""
    x, tx, T = _rfm(x, tx, T)
    n = x.size
    y = np.concatenate([tx, T])
    xx = np.concatenate([x, x])
    if n and x.max() < 1e5 and np.array_equal(x, np.floor(x)):
        uy, iy = np.unique(y, return_inverse=True)
        key = xx.astype(np.int64) * uy.size + iy.ravel()
        ukey, inv = np.unique(key, return_inverse=True)
        inv = inv.ravel().astype(np.int64)
        return ((ukey // uy.size).astype(np.float64), np.ascontiguousarray(uy[ukey % uy.size]),
                np.ascontiguousarray(inv[:n]), np.ascontiguousarray(inv[n:]))
    idx = np.arange(2 * n, dtype=np.int64)
    return xx, y, idx[:n].copy(), idx[n:].copy()


def _spend(x, m):
    x, m = _f64(x, "x"), _f64(m, "m")
    if x.size != m.size:
        raise ValueError("x and m must have the same length")
    if x.size and (not (x > 0).all() or not (m > 0).all()):
        raise ValueError("Gamma-Gamma needs x > 0 and mean spend m > 0 (repeat buyers only)")
    return x, m


def gamma_gamma_loglik_each(params, x, m):
    """Per-customer Gamma-Gamma log density of the mean spend ``m`` over ``x`` transactions.

    ``params = (p, q, gamma)``; eq. 4 of Fader & Hardie (2013), all constants included.
    """
    p, q, g = _params(params, 3, "Gamma-Gamma")
    x, m = _spend(x, m)
    out = np.empty(x.size)
    _gg_ll_each(p, q, g, x, m, out)
    return out


def gamma_gamma_loglik(params, x, m, weights=None):
    """Weighted Gamma-Gamma log-likelihood and its gradient in ``(p, q, gamma)``."""
    p, q, g = _params(params, 3, "Gamma-Gamma")
    x, m = _spend(x, m)
    w = _weights(weights, x.size)
    ux, wx = _by_x(x, w)
    grad = np.empty(3)
    ll = _gg_ll_grad(p, q, g, ux, wx, x, np.log(m), m, w, grad)
    return ll, grad


def _steps(horizon, steps, disc):
    steps = _f64(np.atleast_1d(steps if steps is not None else [horizon]), "steps")
    disc = _f64(np.atleast_1d(disc if disc is not None else np.ones(steps.size)), "disc")
    if steps.size != disc.size:
        raise ValueError("steps and disc must have the same length")
    return steps, disc


def bgnbd_predict(params, x, tx, T, horizon, steps=None, disc=None, interval=None, pairs=None):
    """Per-customer BG/NBD predictions over ``(T, T + horizon]``.

    Parameters
    ----------
    params : (r, alpha, a, b)
    x, tx, T : array_like
    horizon : float
        Length of the prediction period, in the time unit of ``tx`` and ``T``.
    steps, disc : array_like, optional
        Increasing end times of discounting periods and their discount factors:
        ``discounted`` is sum_j disc[j] * E[X(T, T + steps[j]) - X(T, T + steps[j-1])].
    interval : float, optional
        Central probability (e.g. 0.9) of a prediction interval for X(T, T + horizon).
    pairs : (ux, uT, idx), optional
        The distinct ``(x, T)`` pairs and each customer's pair index: the conditional
        expectations (a 2F1 series per step) depend on ``(x, T)`` only and are computed
        once per pair. Default: every customer is its own pair.

    Returns
    -------
    dict of numpy.ndarray
        ``p_alive`` (FHL 2005 eq. 13 of the companion note), ``expected`` (eq. 10),
        ``p_any`` (probability of at least one purchase), ``discounted``, and with
        ``interval`` the integer bounds ``lo`` and ``hi``.
    """
    r, al, a, b = _params(params, 4, "BG/NBD")
    x, tx, T = _rfm(x, tx, T)
    steps, disc = _steps(horizon, steps, disc)
    n = x.size
    out = {k: np.empty(n) for k in ("p_alive", "expected", "p_any", "discounted")}
    want = interval is not None
    lo = np.zeros(n if want else 0, np.int64)
    hi = np.zeros(n if want else 0, np.int64)
    q = 0.5 * (1.0 - float(interval)) if want else 0.0
    if pairs is None:
        ux, uT, idx = x, T, np.arange(n, dtype=np.int64)
    else:
        ux, uT = _f64(pairs[0], "pairs"), _f64(pairs[1], "pairs")
        idx = np.ascontiguousarray(pairs[2], dtype=np.int64)
        if idx.size != n or ux.size != uT.size or (n and (idx.min() < 0 or idx.max() >= ux.size)):
            raise ValueError("pairs must be (ux, uT, idx) with one index per customer into ux/uT")
    e_h = np.empty(ux.size)
    e_disc = np.empty(ux.size)
    _bgnbd_alive_terms(r, al, a, b, ux, uT, float(horizon), steps, disc, e_h, e_disc)
    _bgnbd_predict(r, al, a, b, x, tx, T, idx, e_h, e_disc, float(horizon), q, 1.0 - q, want,
                   out["p_alive"], out["expected"], out["p_any"], out["discounted"], lo, hi)
    if want:
        out["lo"], out["hi"] = lo, hi
    return out


def pareto_nbd_predict(params, x, tx, T, horizon, steps=None, disc=None):
    """Per-customer Pareto/NBD predictions over ``(T, T + horizon]``.

    Same keys as :func:`bgnbd_predict` without intervals: ``p_alive`` (Fader & Hardie
    2005 eq. 18), ``expected`` (eq. 27), ``p_any`` (the posterior expectation of
    P(a purchase before death and before T + horizon), a 2F1 integral like eq. 19).
    """
    r, al, s, be = _params(params, 4, "Pareto/NBD")
    x, tx, T = _rfm(x, tx, T)
    steps, disc = _steps(horizon, steps, disc)
    n = x.size
    out = {k: np.empty(n) for k in ("p_alive", "expected", "p_any", "discounted")}
    _pnbd_predict(r, al, s, be, x, tx, T, float(horizon), steps, disc,
                  out["p_alive"], out["expected"], out["p_any"], out["discounted"])
    return out


def gamma_gamma_expected(params, x, m):
    """Expected mean transaction value per customer (Fader & Hardie 2013, eq. 5).

    Customers with ``x = 0`` or ``m <= 0`` get the population mean ``p gamma / (q - 1)``
    (infinite when ``q <= 1``).
    """
    p, q, g = _params(params, 3, "Gamma-Gamma")
    x, m = _f64(x, "x"), _f64(m, "m")
    out = np.empty(x.size)
    if q <= 1.0:
        out[:] = np.inf
        ok = (x > 0) & (m > 0)
        out[ok] = p * (g + x[ok] * m[ok]) / (p * x[ok] + q - 1.0)
        return out
    _gg_expected(p, q, g, x, np.where(np.isnan(m), 0.0, m), out)
    return out


# ---------------------------------------------------------------------------
# public wrappers for fitters (checked inputs, preallocated gradient)

def check_rfm(x, tx, T):
    """``x, tx, T`` as contiguous float64 arrays; ValueError on NaN, unequal lengths or tx > T."""
    return _rfm(x, tx, T)


def check_spend(x, m):
    """``x, m`` of the repeat buyers as contiguous float64; ValueError unless x > 0 and m > 0."""
    return _spend(x, m)


def check_weights(weights, n):
    """Per-customer weights (ones when None) as contiguous float64 of length ``n``."""
    return _weights(weights, n)


def bgnbd_loglik_grad(log_params, prepared, grad):
    """BG/NBD total log-likelihood at ``exp(log_params)`` and its gradient in ``grad``
    (d/d log-parameter), over the arrays of :func:`bgnbd_prepare`."""
    lp = np.asarray(log_params, dtype=np.float64)
    return _bgnbd_ll_grad(lp[0], lp[1], lp[2], lp[3], *prepared, grad)


def gamma_gamma_prepare(x, m, w):
    """Arrays for the Gamma-Gamma likelihood kernel, computed once per fit."""
    ux, wx = _by_x(x, w)
    return ux, wx, x, np.log(m), m, w


def gamma_gamma_loglik_grad(log_params, prepared, grad):
    """Gamma-Gamma total log-likelihood at ``exp(log_params)`` and its gradient in ``grad``,
    over the arrays of :func:`gamma_gamma_prepare`."""
    lp = np.asarray(log_params, dtype=np.float64)
    return _gg_ll_grad(lp[0], lp[1], lp[2], *prepared, grad)
