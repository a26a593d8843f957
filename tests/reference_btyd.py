"""Slow, obviously correct references for the buy-till-you-die kernels (kernels/btyd.py).

The formulas exactly as printed in the papers, one customer at a time, with
``scipy.special`` (gammaln, betaln, hyp2f1) and ``scipy.integrate.quad``: no
log-space tricks, no transformations, no numba.
"""

import math

import numpy as np
from scipy import integrate, special


def bgnbd_ll(r, alpha, a, b, x, tx, T):
    """FHL (2005) eq. 6, as printed."""
    l1 = special.beta(a, b + x) / special.beta(a, b) * math.exp(
        special.gammaln(r + x) - special.gammaln(r)) * alpha ** r / (alpha + T) ** (r + x)
    l2 = 0.0
    if x > 0:
        l2 = special.beta(a + 1, b + x - 1) / special.beta(a, b) * math.exp(
            special.gammaln(r + x) - special.gammaln(r)) * alpha ** r / (alpha + tx) ** (r + x)
    return math.log(l1 + l2)


def bgnbd_p_alive(r, alpha, a, b, x, tx, T):
    if x == 0:
        return 1.0
    return 1.0 / (1.0 + a / (b + x - 1) * ((alpha + T) / (alpha + tx)) ** (r + x))


def bgnbd_expected(r, alpha, a, b, x, tx, T, t):
    """FHL (2005) eq. 10 with scipy's hyp2f1."""
    z = t / (alpha + T + t)
    f = special.hyp2f1(r + x, b + x, a + b + x - 1, z)
    num = (a + b + x - 1) / (a - 1) * (1 - ((alpha + T) / (alpha + T + t)) ** (r + x) * f)
    return num * bgnbd_p_alive(r, alpha, a, b, x, tx, T)


def bgnbd_pmf(r, alpha, a, b, t, k):
    """FHL (2005) eq. 8: P(X(t) = k) for a new customer."""
    def nb(j):
        return math.exp(special.gammaln(r + j) - special.gammaln(r) - special.gammaln(j + 1)) * (
            alpha / (alpha + t)) ** r * (t / (alpha + t)) ** j
    p = special.beta(a, b + k) / special.beta(a, b) * nb(k)
    if k > 0:
        p += special.beta(a + 1, b + k - 1) / special.beta(a, b) * (1 - sum(nb(j) for j in range(k)))
    return p


def pareto_nbd_ll(r, alpha, s, beta, x, tx, T):
    """Fader & Hardie (2005) note, eqs. 19-22, with scipy's hyp2f1 as printed."""
    if alpha >= beta:
        def F(y):
            return special.hyp2f1(r + s + x, s + 1, r + s + x + 1, (alpha - beta) / (alpha + y)) / (
                    alpha + y) ** (r + s + x)
    else:
        def F(y):
            return special.hyp2f1(r + s + x, r + x, r + s + x + 1, (beta - alpha) / (beta + y)) / (
                    beta + y) ** (r + s + x)
    a0 = F(tx) - F(T)
    c = math.exp(special.gammaln(r + x) - special.gammaln(r)) * alpha ** r * beta ** s
    return math.log(c * (1 / ((alpha + T) ** (r + x) * (beta + T) ** s) + s / (r + s + x) * a0))


def pareto_nbd_ll_integral(r, alpha, s, beta, x, tx, T):
    """The same likelihood from its integral form (no 2F1): lambda, mu integrated out of
    lambda^x e^{-(lambda+mu)T} + lambda^x mu int_tx^T e^{-(lambda+mu)tau} dtau."""
    c = math.exp(special.gammaln(r + x) - special.gammaln(r)) * alpha ** r * beta ** s
    first = 1 / ((alpha + T) ** (r + x) * (beta + T) ** s)
    second = s * integrate.quad(lambda u: (alpha + u) ** -(r + x) * (beta + u) ** -(s + 1), tx, T,
                                epsabs=0, epsrel=1e-12, limit=200)[0]
    return math.log(c * (first + second))


def pareto_nbd_p_alive(r, alpha, s, beta, x, tx, T):
    c_first = 1 / ((alpha + T) ** (r + x) * (beta + T) ** s)
    second = s * integrate.quad(lambda u: (alpha + u) ** -(r + x) * (beta + u) ** -(s + 1), tx, T,
                                epsabs=0, epsrel=1e-12, limit=200)[0]
    return c_first / (c_first + second)


def pareto_nbd_p_any(r, alpha, s, beta, x, tx, T, t):
    """P(alive) * int_0^t E[lambda e^{-lambda u}] E[e^{-mu u}] du under the posterior."""
    rx, aT, bT = r + x, alpha + T, beta + T
    inner = integrate.quad(lambda u: rx / aT * (aT / (aT + u)) ** (rx + 1) * (bT / (bT + u)) ** s, 0, t,
                           epsabs=0, epsrel=1e-12, limit=200)[0]
    return pareto_nbd_p_alive(r, alpha, s, beta, x, tx, T) * inner


def gamma_gamma_ll(p, q, g, x, m):
    """Fader & Hardie (2013) eq. 4, as printed."""
    return (special.gammaln(p * x + q) - special.gammaln(p * x) - special.gammaln(q) + q * math.log(g)
            + p * x * math.log(x) + (p * x - 1) * math.log(m) - (p * x + q) * math.log(g + x * m))


def numeric_grad(f, theta, h=1e-6):
    """Central differences of ``f`` at ``theta`` (relative steps)."""
    theta = np.asarray(theta, float)
    out = np.empty_like(theta)
    for k in range(theta.size):
        e = np.zeros_like(theta)
        e[k] = h * theta[k]
        out[k] = (f(theta + e) - f(theta - e)) / (2 * e[k])
    return out
