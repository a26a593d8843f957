"""Fitting and prediction for the buy-till-you-die models behind ``centile clv``.

Maximum likelihood on log-parameters (scipy L-BFGS-B; for large inputs a warm start
from a subsample fit followed by Newton steps with the subsample's Hessian), identical
rows collapsed into weights, standard errors from a finite-difference Hessian of the
compiled gradient, and per-customer predictions. The likelihoods and predictions
themselves are the numba kernels of ``kernels/btyd.py``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from centile.errors import CentileError
from centile.runtime import numba_threads

log = logging.getLogger(__name__)

TIME_UNITS = {"day": 1.0, "week": 7.0}
MONTH_DAYS = 365.25 / 12
PARAM_NAMES = {"bgnbd": ("r", "alpha", "a", "b"), "pareto-nbd": ("r", "alpha", "s", "beta"),
               "gamma-gamma": ("p", "q", "gamma")}
LABELS = {"bgnbd": "BG/NBD", "pareto-nbd": "Pareto/NBD", "gamma-gamma": "Gamma-Gamma"}
# rows below which fits and predictions use one numba thread: the optimiser alternates short
# parallel regions with serial Python work, and on a shared machine every region waits for its
# slowest thread (measured at 1M customers on 2 busy cores: 1.1 s on one thread, 3.0 s on two)
_SERIAL_BELOW = 2_000_000
_WARM_ABOVE = 200_000  # rows: above this, a fit starts from the fit on an evenly spaced 1-in-k subsample
_LOG_BOUND = 25.0  # log-parameters live in [-25, 25]; an optimum on the bound is a failed fit


class FitError(CentileError):
    """A model could not be fitted (no convergence, degenerate data, parameters diverging)."""


# ---------------------------------------------------------------------------
# fitting

@dataclass(frozen=True)
class FitResult:
    """A fitted model. ``se`` are standard errors from the inverse Hessian of the negative
    log-likelihood in log-parameters, mapped back by the delta method (NaN when the
    Hessian is not positive definite)."""

    model: str
    params: Mapping[str, float]
    se: Mapping[str, float]
    loglik: float
    converged: bool
    iterations: int
    n: int
    patterns: int
    penalty: float = 0.0
    #: covariance of the log-parameters (inverse Hessian of the negative penalised log-likelihood)
    cov_log: tuple[tuple[float, ...], ...] | None = field(default=None, repr=False, compare=False)

    @property
    def values(self) -> tuple[float, ...]:
        return tuple(self.params[k] for k in PARAM_NAMES[self.model])

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "name": LABELS[self.model], "params": dict(self.params),
                "se": {k: (None if not math.isfinite(v) else v) for k, v in self.se.items()},
                "loglik": self.loglik, "n": self.n, "patterns": self.patterns, "converged": self.converged,
                "iterations": self.iterations, "penalty": self.penalty}


def _collapse(cols: Sequence[np.ndarray], weights: np.ndarray | None) -> tuple[list[np.ndarray], np.ndarray]:
    """Identical rows → one row with the summed weight (hash group-by in Polars)."""
    names = [f"c{i}" for i in range(len(cols))]
    df = pl.DataFrame({**dict(zip(names, cols, strict=True)),
                       "w": weights if weights is not None else np.ones(cols[0].size)})
    g = df.group_by(names, maintain_order=True).agg(pl.col("w").sum())  # deterministic order
    return [g[c].to_numpy() for c in names], g["w"].to_numpy()


def _collapse_rfm(x: np.ndarray, tx: np.ndarray, T: np.ndarray, w: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Collapse identical (x, tx, T) rows into weights.

    Customers without repeat purchases differ by T only (one sort). The others are
    grouped when a 1-in-k sample of 50,000 of them shows at least 30 % duplicates: with
    years of history and many customers they rarely repeat, and grouping would cost
    more than it saves.
    """
    zero = x == 0
    uT, inv = np.unique(T[zero], return_inverse=True)
    w0 = np.bincount(inv.ravel(), weights=w[zero], minlength=uT.size)
    pos = ~zero
    cols = [x[pos], tx[pos], T[pos]]
    wp = w[pos]
    n = cols[0].size
    if n:
        step = max(n // 50_000, 1)
        sample = pl.DataFrame({"x": cols[0][::step], "t": cols[1][::step], "T": cols[2][::step]})
        if n <= 50_000 or sample.n_unique() <= 0.7 * sample.height:
            cols, wp = _collapse(cols, wp)
    return (np.concatenate([np.zeros(uT.size), cols[0]]), np.concatenate([np.zeros(uT.size), cols[1]]),
            np.concatenate([uT, cols[2]]), np.concatenate([w0, wp]))


def _minimize(model: str, fg: Callable[[np.ndarray], tuple[float, np.ndarray]], x0: np.ndarray, W: float,
              penalty: float, numeric: bool, warm: FitResult | None = None
              ) -> tuple[np.ndarray, float, int, bool, np.ndarray]:
    """Minimise the mean penalised negative log-likelihood over log-parameters.

    With a ``warm`` fit on a subsample, first Newton steps with the subsample's Hessian
    held fixed (one gradient per step, converging fast because the two Hessians differ
    by sampling noise only); L-BFGS-B from wherever that stops otherwise.
    """
    from scipy.optimize import minimize

    def obj(lp: np.ndarray) -> tuple[float, np.ndarray]:
        theta = np.exp(lp)
        ll, g = fg(theta)
        f = -ll / W + penalty * float(theta @ theta)
        grad = -g * theta / W + 2.0 * penalty * theta * theta
        if not math.isfinite(f) or not np.isfinite(grad).all():
            return 1e300, np.zeros_like(lp)
        return f, grad

    gtol_opt = 1e-9 if not numeric else 1e-8
    if warm is not None:
        x0 = np.log(np.asarray(warm.values))
    if warm is not None and warm.cov_log is not None:
        lp = x0
        H = np.linalg.inv(np.asarray(warm.cov_log)) / warm.n  # Hessian of the mean objective
        f, grad = obj(lp)
        for step in range(1, 16):
            nxt = lp - np.linalg.solve(H, grad)
            fn, gn = obj(nxt)
            if not fn <= f + 1e-12 * abs(f) or np.any(np.abs(nxt) >= _LOG_BOUND):
                break
            lp, f, grad = nxt, fn, gn
            if np.max(np.abs(grad)) < gtol_opt:
                return lp, -f * W + penalty * W * float(np.exp(lp) @ np.exp(lp)), step, True, grad
        x0 = lp
    bounds = [(-_LOG_BOUND, _LOG_BOUND)] * x0.size
    opts = {"maxiter": 2000, "ftol": 1e-14, "gtol": gtol_opt, "maxls": 50}
    res = minimize(obj, x0, jac=True, method="L-BFGS-B", bounds=bounds, options=opts)
    f, grad = obj(res.x)
    # L-BFGS-B stops "abnormally" at machine precision; a vanishing gradient is convergence too
    gtol = 1e-5 if numeric else 1e-6
    ok = bool(res.success or np.max(np.abs(grad)) < gtol) and f < 1e299
    if np.any(np.abs(res.x) >= _LOG_BOUND - 1e-6):
        names = [n for n, v in zip(PARAM_NAMES[model], res.x, strict=True) if abs(v) >= _LOG_BOUND - 1e-6]
        raise FitError(f"{LABELS[model]} fit: parameter(s) {', '.join(names)} diverged to "
                       f"{'0' if res.x.min() < 0 else 'infinity'}; the data do not identify the model. "
                       "Try a small penalty ([clv] penalty = 0.01), a longer calibration period, or "
                       "the other purchase model (--model).")
    if not ok:
        raise FitError(f"{LABELS[model]} fit did not converge after {res.nit} iterations ({res.message}); "
                       "try a small penalty ([clv] penalty = 0.01), a longer calibration period, or the "
                       "other purchase model (--model).")
    return res.x, -f * W + penalty * W * float(np.exp(res.x) @ np.exp(res.x)), int(res.nit), ok, grad


def _hessian(gradient: Callable[[np.ndarray], np.ndarray], lp: np.ndarray, h: float) -> np.ndarray:
    """Forward differences of the gradient (k + 1 evaluations), symmetrised."""
    k = lp.size
    H = np.empty((k, k))
    g0 = gradient(lp)
    for j in range(k):
        e = np.zeros(k)
        e[j] = h
        H[:, j] = (gradient(lp + e) - g0) / h
    return 0.5 * (H + H.T)


def _standard_errors(model: str, gradient: Callable[[np.ndarray], np.ndarray], lp: np.ndarray,
                     h: float) -> tuple[dict[str, float], tuple[tuple[float, ...], ...] | None]:
    """SE of the natural parameters: theta * sqrt(diag(H^-1)) with H the Hessian of the total
    negative (penalised) log-likelihood in log-parameters; and H^-1 itself."""
    H = _hessian(gradient, lp, h)
    try:
        np.linalg.cholesky(H)
        cov = np.linalg.inv(H)
        se = np.exp(lp) * np.sqrt(np.diag(cov))
        cov_t = tuple(tuple(float(v) for v in row) for row in cov)
    except np.linalg.LinAlgError:
        log.warning("%s: the Hessian is not positive definite; standard errors are NaN", LABELS[model])
        se = np.full(lp.size, np.nan)
        cov_t = None
    return dict(zip(PARAM_NAMES[model], (float(v) for v in se), strict=True)), cov_t


def _penalised_total_grad(fg: Callable, penalty: float, W: float) -> Callable[[np.ndarray], np.ndarray]:
    def grad(lp: np.ndarray) -> np.ndarray:
        theta = np.exp(lp)
        _ll, g = fg(theta)
        return -g * theta + 2.0 * penalty * W * theta * theta
    return grad


def _warm_start(fit: Callable[..., FitResult], cols: tuple[np.ndarray, ...], weights: Any,
                penalty: float) -> FitResult | None:
    """For large inputs, the fit on an evenly spaced subsample of ~100k rows: a starting
    point a few iterations from the optimum (the objective is a mean, so it has the same
    scale). None for small inputs or when the subsample fit fails."""
    n = cols[0].size
    if n <= _WARM_ABOVE:
        return None
    step = n // 100_000
    sub = tuple(c[::step] for c in cols)
    w = None if weights is None else np.asarray(weights, np.float64)[::step]
    try:
        return fit(*sub, weights=w, penalty=penalty)
    except FitError:
        return None


def _check_rfm(x: np.ndarray, tx: np.ndarray, T: np.ndarray, label: str) -> None:
    if x.size == 0:
        raise FitError(f"{label} fit: no customers")
    if not np.any(x > 0):
        raise FitError(f"{label} fit: no customer has a repeat transaction in the calibration period; "
                       "the model needs repeat purchases: use a longer order history (a later as_of, or a "
                       "later calibration end if one is set)")
    if not np.any(T > 0):
        raise FitError(f"{label} fit: every customer is new on the calibration end (T = 0); use a longer "
                       "order history (a later as_of, or a later calibration end if one is set)")


def fit_bgnbd(x: Any, tx: Any, T: Any, *, weights: Any = None, penalty: float = 0.0,
              collapse: bool = True) -> FitResult:
    """Fit the BG/NBD model (Fader, Hardie & Lee 2005) by maximum likelihood.

    Parameters
    ----------
    x, tx, T : array_like
        Repeat transactions, recency and age per customer (same time unit).
    weights : array_like, optional
        Customers per row (default 1).
    penalty : float
        L2 penalty on the parameters, added to the mean negative log-likelihood.
    collapse : bool
        Collapse identical ``(x, tx, T)`` rows into weights first.

    Raises
    ------
    FitError
        Degenerate data, no convergence or a diverging parameter.
    """
    from centile.kernels import btyd

    x, tx, T = btyd.check_rfm(x, tx, T)
    _check_rfm(x, tx, T, "BG/NBD")
    warm = _warm_start(fit_bgnbd, (x, tx, T), weights, penalty)
    w = btyd.check_weights(weights, x.size)
    n = int(round(w.sum()))
    if collapse:
        x, tx, T, w = _collapse_rfm(x, tx, T, w)
    prep = btyd.bgnbd_prepare(x, tx, T, w)
    grad = np.empty(4)

    def fg(theta: np.ndarray) -> tuple[float, np.ndarray]:
        ll = btyd.bgnbd_loglik_grad(theta, prep, grad)
        return ll, grad.copy()

    W = float(w.sum())
    mx = float(np.average(x, weights=w))
    x0 = np.log([1.0, max(float(np.average(T, weights=w)) / max(mx, 0.05), 1e-3), 1.0, 1.0])
    with numba_threads(1 if x.size < _SERIAL_BELOW else None):
        lp, ll, it, ok, _ = _minimize("bgnbd", fg, x0, W, penalty, numeric=False, warm=warm)
        se, cov = _standard_errors("bgnbd", _penalised_total_grad(fg, penalty, W), lp, 1e-5)
    return FitResult("bgnbd", dict(zip(PARAM_NAMES["bgnbd"], (float(v) for v in np.exp(lp)), strict=True)),
                     se, float(ll), ok, it, n, x.size, penalty, cov)


def fit_pareto_nbd(x: Any, tx: Any, T: Any, *, weights: Any = None, penalty: float = 0.0,
                   collapse: bool = True) -> FitResult:
    """Fit the Pareto/NBD model (Schmittlein, Morrison & Colombo 1987) by maximum likelihood.

    The likelihood is eq. 22 of Fader & Hardie's note (2005), the one their published
    CDNOW estimates come from; gradients by central differences in log-parameters.
    Arguments and errors as :func:`fit_bgnbd`.
    """
    from centile.kernels import btyd

    x, tx, T = btyd.check_rfm(x, tx, T)
    _check_rfm(x, tx, T, "Pareto/NBD")
    warm = _warm_start(fit_pareto_nbd, (x, tx, T), weights, penalty)
    w = btyd.check_weights(weights, x.size)
    n = int(round(w.sum()))
    if collapse:
        x, tx, T, w = _collapse_rfm(x, tx, T, w)

    prep = btyd.pareto_nbd_prepare(x, tx, T)

    def ll_at(theta: np.ndarray) -> float:
        return btyd.pareto_nbd_loglik(theta, x, tx, T, w, prepared=prep)

    def fg(theta: np.ndarray, h: float = 1e-6) -> tuple[float, np.ndarray]:
        ll = ll_at(theta)
        g = np.empty(4)
        for k in range(4):  # central differences in log space, returned as d/dtheta
            up, dn = theta.copy(), theta.copy()
            up[k] *= math.exp(h)
            dn[k] *= math.exp(-h)
            g[k] = (ll_at(up) - ll_at(dn)) / (2 * h) / theta[k]
        return ll, g

    W = float(w.sum())
    mx = float(np.average(x, weights=w))
    mT = float(np.average(T, weights=w))
    x0 = np.log([1.0, max(mT / max(mx, 0.05), 1e-3), 1.0, max(mT, 1e-3)])
    with numba_threads(1 if x.size < _SERIAL_BELOW else None):
        lp, ll, it, ok, _ = _minimize("pareto-nbd", fg, x0, W, penalty, numeric=True, warm=warm)
        se, cov = _standard_errors("pareto-nbd", _penalised_total_grad(lambda th: fg(th, 1e-5), penalty, W), lp, 1e-4)
    return FitResult("pareto-nbd", dict(zip(PARAM_NAMES["pareto-nbd"], (float(v) for v in np.exp(lp)),
                                            strict=True)), se, float(ll), ok, it, n, x.size, penalty, cov)


def fit_gamma_gamma(x: Any, m: Any, *, weights: Any = None, penalty: float = 0.0,
                    collapse: bool = False) -> FitResult:
    """Fit the Gamma-Gamma spend model (Fader & Hardie 2013) on repeat buyers.

    ``x`` is the number of repeat transactions (> 0) and ``m`` their mean value (> 0).
    Arguments and errors as :func:`fit_bgnbd`; ``collapse`` is off by default because
    mean spends rarely repeat.
    """
    from centile.kernels import btyd

    x, m = btyd.check_spend(x, m)
    if x.size < 2:
        raise FitError(f"Gamma-Gamma fit: {x.size} repeat buyer(s) with a positive mean spend; need more")
    warm = _warm_start(fit_gamma_gamma, (x, m), weights, penalty)
    w = btyd.check_weights(weights, x.size)
    n = int(round(w.sum()))
    if collapse:
        (x, m), w = _collapse([x, m], w)
    prep = btyd.gamma_gamma_prepare(x, m, w)
    grad = np.empty(3)

    def fg(theta: np.ndarray) -> tuple[float, np.ndarray]:
        ll = btyd.gamma_gamma_loglik_grad(theta, prep, grad)
        return ll, grad.copy()

    W = float(w.sum())
    x0 = np.log([1.0, 2.0, float(np.average(m, weights=w))])
    with numba_threads(1 if x.size < _SERIAL_BELOW else None):
        lp, ll, it, ok, _ = _minimize("gamma-gamma", fg, x0, W, penalty, numeric=False, warm=warm)
        se, cov = _standard_errors("gamma-gamma", _penalised_total_grad(fg, penalty, W), lp, 1e-5)
    return FitResult("gamma-gamma", dict(zip(PARAM_NAMES["gamma-gamma"], (float(v) for v in np.exp(lp)),
                                             strict=True)), se, float(ll), ok, it, n, x.size, penalty, cov)


# ---------------------------------------------------------------------------
# predictions

def discount_steps(horizon: float, time_unit: str, rate_monthly: float) -> tuple[np.ndarray, np.ndarray]:
    """Month ends (in time units, the last one cut at the horizon) and their discount factors
    ``(1 + rate) ** -(months elapsed)``."""
    month = MONTH_DAYS / TIME_UNITS[time_unit]
    k = max(int(math.ceil(horizon / month - 1e-9)), 1)
    steps = np.minimum(np.arange(1, k + 1) * month, horizon)
    return steps, (1.0 + rate_monthly) ** -(steps / month)


def _pairs(x: np.ndarray, T: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Distinct (x, T) pairs and each row's index into them; None when pairs would barely
    repeat (T continuous) or x is not a small whole number."""
    if x.size < 1000 or x.max() > 1e5 or not np.array_equal(x, np.floor(x)):
        return None
    uT, iT = np.unique(T, return_inverse=True)
    if uT.size > x.size // 4:
        return None
    key = x.astype(np.int64) * uT.size + iT.ravel()
    span = (int(x.max()) + 1) * uT.size
    if span <= 4 * x.size + 1_000_000:
        present = np.bincount(key, minlength=span) > 0
        ukey = np.flatnonzero(present)
        dense = np.cumsum(present) - 1
        idx = dense[key]
    else:
        ukey, idx = np.unique(key, return_inverse=True)
    return (ukey // uT.size).astype(np.float64), uT[ukey % uT.size], idx.astype(np.int64).ravel()


def predict(purchase: FitResult, spend: FitResult | None, x: Any, tx: Any, T: Any, m: Any, *,
            horizon: float, time_unit: str = "week", discount_rate_monthly: float = 0.01, margin: float = 1.0,
            interval: float | None = 0.9, fallback_spend: float = math.nan) -> dict[str, np.ndarray]:
    """Per-customer predictions over ``(T, T + horizon]`` as NumPy arrays.

    Keys: ``p_alive``, ``churn_risk`` (1 - p_alive), ``expected_transactions``,
    ``p_repurchase`` (at least one purchase in the horizon), ``expected_order_value``
    (Gamma-Gamma; ``fallback_spend`` without a spend model), ``expected_revenue``
    (undiscounted), ``clv`` (margin x expected order value x monthly discounted expected
    transactions) and, for BG/NBD with ``interval``, ``transactions_lo``/``transactions_hi``.
    """
    from centile.kernels import btyd

    steps, disc = discount_steps(horizon, time_unit, discount_rate_monthly)
    with numba_threads(1 if np.size(x) < _SERIAL_BELOW else None):
        if purchase.model == "bgnbd":
            out = btyd.bgnbd_predict(purchase.values, x, tx, T, horizon, steps, disc, interval,
                                     pairs=_pairs(np.asarray(x, np.float64), np.asarray(T, np.float64)))
        else:
            out = btyd.pareto_nbd_predict(purchase.values, x, tx, T, horizon, steps, disc)
    n = out["p_alive"].size
    if spend is not None and spend.params["q"] > 1.0:
        ev = btyd.gamma_gamma_expected(spend.values, x, np.asarray(m, dtype=np.float64))
    elif spend is not None:  # q <= 1: the population mean spend is infinite; only repeat buyers get one
        ev = btyd.gamma_gamma_expected(spend.values, x, np.asarray(m, dtype=np.float64))
        ev[~np.isfinite(ev)] = fallback_spend
    else:
        ev = np.full(n, fallback_spend)
    res = {"p_alive": out["p_alive"], "churn_risk": 1.0 - out["p_alive"],
           "expected_transactions": out["expected"], "p_repurchase": out["p_any"],
           "expected_order_value": ev, "expected_revenue": out["expected"] * ev,
           "clv": margin * ev * out["discounted"]}
    if "lo" in out:
        res["transactions_lo"], res["transactions_hi"] = out["lo"], out["hi"]
    return res
