"""Statistics for campaign tests, vectorised over cells (segment x arm).

Every function takes NumPy arrays (one entry per comparison) and returns
arrays, so a table of thousands of comparisons costs a few array operations.
Undefined results (empty arms, zero variance, a zero control mean for a
relative uplift) are NaN, never an exception.

References
----------
* Wilson (1927) score interval; Newcombe (1998), "Interval estimation for the
  difference between independent proportions", method 10 (hybrid score).
* Welch (1947) t interval with Satterthwaite degrees of freedom.
* Holm (1979) step-down; Benjamini & Hochberg (1995) step-up FDR.
* Deng, Xu, Kohavi & Walker (2013), CUPED.
* Radcliffe (2007) Qini curve; Gutierrez & Gerardy (2017) AUUC.
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def _z(alpha: float) -> float:
    return float(stats.norm.ppf(1.0 - alpha / 2.0))


def safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a / b elementwise, NaN where b = 0."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b != 0, a / np.where(b != 0, b, 1.0), np.nan)


def wilson_interval(count: np.ndarray, n: np.ndarray, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for a proportion ``count / n`` (NaN where ``n == 0``)."""
    x = np.asarray(count, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    z = _z(alpha)
    p = safe_div(x, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        denom = 1.0 + z * z / n
        centre = (p + z * z / (2.0 * n)) / denom
        half = z * np.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n)) / denom
    return centre - half, centre + half


def newcombe_diff(x1: np.ndarray, n1: np.ndarray, x0: np.ndarray, n0: np.ndarray,
                  alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Difference ``p1 - p0`` of two independent proportions with Newcombe's hybrid score interval.

    Returns ``(diff, low, high)``.
    """
    p1, p0 = safe_div(x1, n1), safe_div(x0, n0)
    l1, u1 = wilson_interval(x1, n1, alpha)
    l0, u0 = wilson_interval(x0, n0, alpha)
    d = p1 - p0
    return d, d - np.sqrt((p1 - l1) ** 2 + (u0 - p0) ** 2), d + np.sqrt((u1 - p1) ** 2 + (p0 - l0) ** 2)


def two_proportion_p(x1: np.ndarray, n1: np.ndarray, x0: np.ndarray, n0: np.ndarray) -> np.ndarray:
    """Two-sided p-value of the pooled two-proportion z-test (NaN when undefined)."""
    x1, n1, x0, n0 = (np.asarray(a, dtype=np.float64) for a in (x1, n1, x0, n0))
    pooled = safe_div(x1 + x0, n1 + n0)
    with np.errstate(divide="ignore", invalid="ignore"):
        se = np.sqrt(pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n0))
    z = safe_div(safe_div(x1, n1) - safe_div(x0, n0), se)
    return 2.0 * stats.norm.sf(np.abs(z))


def welch(m1: np.ndarray, v1: np.ndarray, n1: np.ndarray, m0: np.ndarray, v0: np.ndarray, n0: np.ndarray,
          alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Welch's difference of means ``m1 - m0`` (sample variances ``v``, sizes ``n``).

    Returns ``(diff, low, high, p_value)`` with the t interval on Welch-Satterthwaite
    degrees of freedom. NaN when an arm has fewer than 2 rows or both variances are 0.
    """
    m1, v1, n1, m0, v0, n0 = (np.asarray(a, dtype=np.float64) for a in (m1, v1, n1, m0, v0, n0))
    ok = (n1 >= 2) & (n0 >= 2)
    a = np.where(ok, safe_div(v1, n1), np.nan)
    b = np.where(ok, safe_div(v0, n0), np.nan)
    se2 = a + b
    se = np.sqrt(se2)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = se2 * se2 / (safe_div(a * a, n1 - 1) + safe_div(b * b, n0 - 1))
    df = np.where(se2 > 0, df, np.nan)
    d = m1 - m0
    q = stats.t.ppf(1.0 - alpha / 2.0, df)
    t = safe_div(d, np.where(se2 > 0, se, np.nan))
    p = 2.0 * stats.t.sf(np.abs(t), df)
    return d, d - q * se, d + q * se, p


def relative_interval(m1: np.ndarray, v1: np.ndarray, n1: np.ndarray, m0: np.ndarray, v0: np.ndarray,
                      n0: np.ndarray, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Relative uplift ``m1 / m0 - 1`` with a delta-method interval on ``log(m1 / m0)``.

    ``var(log m) ~ v / (n m**2)``; NaN unless both means are positive.
    """
    m1, v1, n1, m0, v0, n0 = (np.asarray(a, dtype=np.float64) for a in (m1, v1, n1, m0, v0, n0))
    rel = safe_div(m1, m0) - 1.0
    pos = (m1 > 0) & (m0 > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        se = np.sqrt(safe_div(v1, n1 * m1 * m1) + safe_div(v0, n0 * m0 * m0))
        lr = np.log(np.where(pos, m1 / np.where(pos, m0, 1.0), np.nan))
    z = _z(alpha)
    with np.errstate(over="ignore"):  # a huge log-ratio interval on tiny cells: +inf is the honest bound
        return rel, np.where(pos, np.expm1(lr - z * se), np.nan), np.where(pos, np.expm1(lr + z * se), np.nan)


def _ordered(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``p`` as float, an all-NaN output of its shape, and the indices of its non-NaN entries
    in ascending order of p (stable)."""
    p = np.asarray(p, dtype=np.float64)
    idx = np.flatnonzero(~np.isnan(p))
    return p, np.full(p.shape, np.nan), idx[np.argsort(p[idx], kind="stable")]


def holm(p: np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values (NaN entries are left out and stay NaN)."""
    p, out, order = _ordered(p)
    m = order.size
    if m == 0:
        return out
    adj = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(adj, 1.0)
    return out


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg step-up adjusted p-values (q-values; NaN entries stay NaN)."""
    p, out, order = _ordered(p)
    m = order.size
    if m == 0:
        return out
    adj = p[order] * m / np.arange(1, m + 1)
    adj = np.minimum.accumulate(adj[::-1])[::-1]
    out[order] = np.minimum(adj, 1.0)
    return out


def srm_test(observed: np.ndarray, shares: np.ndarray) -> tuple[float, float]:
    """Pearson chi-square of arm counts against the planned shares: ``(statistic, p_value)``.

    Arms with a planned share of 0 must be empty (otherwise p = 0). NaN with
    fewer than two arms or no rows.
    """
    obs = np.asarray(observed, dtype=np.float64)
    sh = np.asarray(shares, dtype=np.float64)
    total = obs.sum()
    if obs.size < 2 or total <= 0:
        return float("nan"), float("nan")
    sh = sh / sh.sum()
    if np.any((sh == 0) & (obs > 0)):
        return float("inf"), 0.0
    keep = sh > 0
    exp = total * sh[keep]
    chi = float(((obs[keep] - exp) ** 2 / exp).sum())
    return chi, float(stats.chi2.sf(chi, int(keep.sum()) - 1))


def cuped_theta(n: np.ndarray, sx: np.ndarray, sxx: np.ndarray, sy: np.ndarray, sxy: np.ndarray) -> np.ndarray:
    """CUPED coefficient ``theta = cov(X, Y) / var(X)`` from pooled sums (NaN when var(X) = 0)."""
    n = np.asarray(n, dtype=np.float64)
    cov = sxy - safe_div(sx * sy, n)
    var = sxx - safe_div(sx * sx, n)
    return np.where(var > 1e-12 * np.maximum(sxx, 1e-300), safe_div(cov, var), np.nan)


def moments(n: np.ndarray, s: np.ndarray, ss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample variance (ddof 1) from count, sum and sum of squares."""
    m = safe_div(s, n)
    v = safe_div(ss - s * m, np.asarray(n, dtype=np.float64) - 1.0)
    return m, np.maximum(v, 0.0)


def percentile_interval(reps: np.ndarray, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Percentile interval and a two-sided bootstrap p-value over axis 0 of ``reps``.

    The p-value is ``2 * min(P*(d <= 0), P*(d >= 0))`` (the smallest level at which the
    percentile interval excludes 0), floored at ``1 / B``. NaN replicates (an empty
    replicate arm) are ignored.
    """
    r = np.asarray(reps, dtype=np.float64)
    with np.errstate(invalid="ignore"), _nan_quiet():
        low = np.nanquantile(r, alpha / 2.0, axis=0)
        high = np.nanquantile(r, 1.0 - alpha / 2.0, axis=0)
        valid = (~np.isnan(r)).sum(axis=0)
        le = safe_div((r <= 0).sum(axis=0), valid)
        ge = safe_div((r >= 0).sum(axis=0), valid)
    p = np.minimum(1.0, 2.0 * np.minimum(le, ge))
    p = np.where(valid > 0, np.maximum(p, safe_div(np.ones_like(p), valid)), np.nan)
    return low, high, p


class _nan_quiet:
    """Silence the all-NaN-slice RuntimeWarning of nanquantile (the result is NaN, as wanted)."""

    def __enter__(self) -> None:
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc: object) -> None:
        self._w.__exit__(*exc)


# --------------------------------------------------------------------------- Qini


def qini_curve(score: np.ndarray, treated: np.ndarray, y: np.ndarray,
               points: int = 100) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Qini curve of an uplift score (higher = target first).

    Customers are sorted by descending score (ties kept in input order). At
    each cut-off fraction ``phi`` of the population, ``qini(phi) = Y_t(phi) -
    Y_c(phi) * N_t(phi) / N_c(phi)``: the incremental outcome among the treated
    targeted so far (Radcliffe 2007), and ``uplift_at(phi) = Y_t / N_t - Y_c /
    N_c`` within the top ``phi``.

    Returns ``(phi, qini, uplift_at)``, each of length ``points + 1`` (``phi = 0 ..
    1``).
    """
    s = np.asarray(score, dtype=np.float64)
    t = np.asarray(treated, dtype=bool)
    yy = np.asarray(y, dtype=np.float64)
    order = np.argsort(-np.where(np.isnan(s), -np.inf, s), kind="stable")
    t, yy = t[order], yy[order]
    nt = np.concatenate([[0.0], np.cumsum(t)])
    nc = np.concatenate([[0.0], np.cumsum(~t)])
    yt = np.concatenate([[0.0], np.cumsum(np.where(t, yy, 0.0))])
    yc = np.concatenate([[0.0], np.cumsum(np.where(t, 0.0, yy))])
    phi = np.linspace(0.0, 1.0, points + 1)
    cut = np.round(phi * t.size).astype(np.int64)
    q = yt[cut] - np.nan_to_num(safe_div(yc[cut] * nt[cut], nc[cut]))
    up = safe_div(yt[cut], nt[cut]) - safe_div(yc[cut], nc[cut])
    return phi, q, up


def auuc(phi: np.ndarray, qini: np.ndarray) -> tuple[float, float]:
    """Area under the Qini curve and the Qini coefficient (area above the random-targeting line).

    Both are divided by ``|qini(1)|`` when it is non-zero, so 0.5 is random targeting for
    the first and 0 for the second.
    """
    trap = getattr(np, "trapezoid", None) or np.trapz
    area = float(trap(qini, phi))
    total = float(qini[-1])
    norm = abs(total) if total != 0 else 1.0
    return area / norm, (area - 0.5 * total) / norm
