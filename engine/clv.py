"""Customer value: BG/NBD or Pareto/NBD purchase models plus Gamma-Gamma spend, fitted by
maximum likelihood; per-customer repurchase, churn risk and CLV (``centile clv``).

Data flow: the ``orders`` view → ``sql/clv_summary.sql`` (purchase days as
transactions; frequency, recency, T, mean repeat spend per customer) → fits on
identical ``(x, tx, T)`` patterns collapsed into weights (``kernels/btyd.py``
log-likelihoods, scipy L-BFGS-B on log-parameters) → predictions per customer →
``clv.parquet``, ``clv_model.json`` (and ``clv_holdout.parquet``,
``clv_groups.parquet`` when asked).

Example
-------
>>> from centile.config import load_config                   # doctest: +SKIP
>>> from centile.session import open_session                 # doctest: +SKIP
>>> cfg = load_config(data="demo/data")                      # doctest: +SKIP
>>> with open_session(cfg, only=("orders",)) as s:           # doctest: +SKIP
...     res = compute_clv(s, clv_settings(cfg, horizon=26))
>>> res.customers.sort("clv", descending=True).head()        # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from .clubs import numba_threads
from .config import Config
from .errors import CentileError, ConfigError, InputError
from .outputs import staged_output, write_manifest
from .session import Progress, Session, open_session
from .sqlfiles import read_sql

log = logging.getLogger(__name__)

MODELS = ("bgnbd", "pareto-nbd")
TIME_UNITS = {"day": 1.0, "week": 7.0}
MONTH_DAYS = 365.25 / 12
PARAM_NAMES = {"bgnbd": ("r", "alpha", "a", "b"), "pareto-nbd": ("r", "alpha", "s", "beta"),
               "gamma-gamma": ("p", "q", "gamma")}
LABELS = {"bgnbd": "BG/NBD", "pareto-nbd": "Pareto/NBD", "gamma-gamma": "Gamma-Gamma"}
_SERIAL_BELOW = 20_000
_WARM_ABOVE = 200_000  # rows: above this, a fit starts from the fit on an evenly spaced 1-in-k subsample  # rows: below this, one numba thread beats the parallel start-up cost
_LOG_BOUND = 25.0  # log-parameters live in [-25, 25]; an optimum on the bound is a failed fit


class FitError(CentileError):
    """A model could not be fitted (no convergence, degenerate data, parameters diverging)."""


# ---------------------------------------------------------------------------
# settings

@dataclass(frozen=True)
class ClvSettings:
    """The ``[clv]`` config section, validated, with CLI overrides applied.

    ``horizon`` is in ``time_unit``s; ``penalty`` adds ``penalty * sum(theta**2)`` to the
    mean negative log-likelihood (lifetimes' ``penalizer_coef`` convention).
    """

    model: str = "bgnbd"
    horizon: float = 52.0
    time_unit: str = "week"
    discount_rate_monthly: float = 0.01
    margin: float = 1.0
    penalty: float = 0.0
    calibration_end: dt.date | None = None
    holdout_end: dt.date | None = None
    interval: float = 0.9

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "horizon": self.horizon, "time_unit": self.time_unit,
                "discount_rate_monthly": self.discount_rate_monthly, "margin": self.margin,
                "penalty": self.penalty, "interval": self.interval,
                "calibration_end": self.calibration_end.isoformat() if self.calibration_end else None,
                "holdout_end": self.holdout_end.isoformat() if self.holdout_end else None}


_KEYS = ("model", "horizon", "time_unit", "discount_rate_monthly", "margin", "penalty", "calibration_end",
         "holdout_end", "interval")


def _num(value: Any, key: str, lo: float, hi: float, *, lo_open: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"[clv] {key} = {value!r}: expected a number") from None
    if not math.isfinite(v) or v < lo or v > hi or (lo_open and v == lo):
        rng = f"{'(' if lo_open else '['}{lo}, {hi}]"
        raise ConfigError(f"[clv] {key} = {value!r}: must be in {rng}")
    return v


def _date(value: Any, key: str) -> dt.date | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise ConfigError(f"[clv] {key} = {value!r}: expected a date YYYY-MM-DD") from None


def clv_settings(cfg: Config | None = None, **overrides: Any) -> ClvSettings:
    """Parse and validate ``[clv]`` of ``cfg``; keyword overrides (CLI options) win when not None.

    Raises
    ------
    ConfigError
        An unknown key or an invalid value, naming the key.
    """
    doc = dict(cfg.section("clv")) if cfg is not None else {}
    extra = set(doc) - set(_KEYS)
    if extra:
        raise ConfigError(f"[clv]: unknown key(s) {sorted(extra)}; allowed: {', '.join(_KEYS)}")
    unknown = set(overrides) - set(_KEYS)
    if unknown:
        raise TypeError(f"clv_settings: unknown override(s) {sorted(unknown)}")
    doc.update({k: v for k, v in overrides.items() if v is not None})
    d = ClvSettings()
    model = str(doc.get("model", d.model)).lower().replace("_", "-").replace("/", "-")
    model = {"bg-nbd": "bgnbd", "paretonbd": "pareto-nbd", "pnbd": "pareto-nbd"}.get(model, model)
    if model not in MODELS:
        raise ConfigError(f"[clv] model = {doc.get('model')!r}: use 'bgnbd' or 'pareto-nbd'")
    unit = str(doc.get("time_unit", d.time_unit)).lower().rstrip("s")
    if unit not in TIME_UNITS:
        raise ConfigError(f"[clv] time_unit = {doc.get('time_unit')!r}: use 'day' or 'week'")
    s = ClvSettings(
        model=model,
        horizon=_num(doc.get("horizon", d.horizon), "horizon", 0.0, 1e5, lo_open=True),
        time_unit=unit,
        discount_rate_monthly=_num(doc.get("discount_rate_monthly", d.discount_rate_monthly),
                                   "discount_rate_monthly", 0.0, 1.0),
        margin=_num(doc.get("margin", d.margin), "margin", 0.0, 1.0),
        penalty=_num(doc.get("penalty", d.penalty), "penalty", 0.0, 1e6),
        calibration_end=_date(doc.get("calibration_end"), "calibration_end"),
        holdout_end=_date(doc.get("holdout_end"), "holdout_end"),
        interval=_num(doc.get("interval", d.interval), "interval", 0.0, 1.0, lo_open=True),
    )
    if s.holdout_end and s.calibration_end and s.holdout_end <= s.calibration_end:
        raise ConfigError(f"[clv] holdout_end {s.holdout_end} must be after calibration_end {s.calibration_end}")
    if s.holdout_end and not s.calibration_end:
        raise ConfigError("[clv] holdout_end needs calibration_end (the day the calibration period ends)")
    return s


# ---------------------------------------------------------------------------
# summary data

@dataclass(frozen=True)
class Summary:
    """Per-customer summary (``frequency``, ``recency``, ``T`` in time units, ``monetary_value``)."""

    frame: pl.DataFrame
    calibration_end: dt.date
    holdout_end: dt.date | None
    time_unit: str


def summarize(s: Session, calibration_end: dt.date | None = None, *, time_unit: str = "week",
              holdout_end: dt.date | None = None) -> Summary:
    """Build the BTYD summary from the ``orders`` view of an open session.

    ``calibration_end`` (included) defaults to the day before ``as_of``; the holdout
    period is ``(calibration_end, holdout_end]``.

    Raises
    ------
    InputError
        The calibration or holdout period reaches past the data, or no customer
        purchased before the calibration end.
    """
    last_day = s.as_of - dt.timedelta(days=1)
    cal = calibration_end or last_day
    if cal > last_day:
        raise InputError(f"calibration end {cal} is after the last day with data ({last_day}, the day before "
                         f"as_of); pass an earlier --calibration-end or a later --as-of")
    if holdout_end is not None and holdout_end > last_day:
        raise InputError(f"holdout end {holdout_end} is after the last day with data ({last_day}); "
                         "pass an earlier --holdout-end")
    if holdout_end is not None and holdout_end <= cal:
        raise InputError(f"holdout end {holdout_end} must be after the calibration end {cal}")
    frame = s.frame(read_sql("clv_summary"), {"cal_end": cal, "hold_end": holdout_end or cal,
                                              "unit": TIME_UNITS[time_unit]})
    if frame.height == 0:
        raise InputError(f"orders: no customer purchased on or before the calibration end {cal}; "
                         "pass a later --calibration-end")
    return Summary(frame.sort("customer_id"), cal, holdout_end, time_unit)


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
                       "pass a later --calibration-end")
    if not np.any(T > 0):
        raise FitError(f"{label} fit: every customer is new on the calibration end (T = 0); pass a later "
                       "--calibration-end")


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
    from .kernels import btyd

    x, tx, T = btyd._rfm(x, tx, T)
    _check_rfm(x, tx, T, "BG/NBD")
    warm = _warm_start(fit_bgnbd, (x, tx, T), weights, penalty)
    w = btyd._weights(weights, x.size)
    n = int(round(w.sum()))
    if collapse:
        x, tx, T, w = _collapse_rfm(x, tx, T, w)
    prep = btyd.bgnbd_prepare(x, tx, T, w)
    grad = np.empty(4)

    def fg(theta: np.ndarray) -> tuple[float, np.ndarray]:
        ll = btyd._bgnbd_ll_grad(theta[0], theta[1], theta[2], theta[3], *prep, grad)
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
    from .kernels import btyd

    x, tx, T = btyd._rfm(x, tx, T)
    _check_rfm(x, tx, T, "Pareto/NBD")
    warm = _warm_start(fit_pareto_nbd, (x, tx, T), weights, penalty)
    w = btyd._weights(weights, x.size)
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
    from .kernels import btyd

    x, m = btyd._spend(x, m)
    if x.size < 2:
        raise FitError(f"Gamma-Gamma fit: {x.size} repeat buyer(s) with a positive mean spend; need more")
    warm = _warm_start(fit_gamma_gamma, (x, m), weights, penalty)
    w = btyd._weights(weights, x.size)
    n = int(round(w.sum()))
    if collapse:
        (x, m), w = _collapse([x, m], w)
    ux, wx = btyd._by_x(x, w)
    lm = np.log(m)
    grad = np.empty(3)

    def fg(theta: np.ndarray) -> tuple[float, np.ndarray]:
        ll = btyd._gg_ll_grad(theta[0], theta[1], theta[2], ux, wx, x, lm, m, w, grad)
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
    from .kernels import btyd

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


# ---------------------------------------------------------------------------
# the job

@dataclass(frozen=True)
class ClvResult:
    """Everything ``centile clv`` computes.

    ``customers``: one row per customer (clv.parquet); ``models``: the fitted models;
    ``holdout``: predicted vs actual by calibration frequency (with a holdout period);
    ``groups``: aggregates per club / segment (when group frames were given).
    """

    customers: pl.DataFrame
    models: tuple[FitResult, ...]
    settings: ClvSettings
    calibration_end: dt.date
    holdout: pl.DataFrame | None = None
    groups: pl.DataFrame | None = None
    notes: tuple[str, ...] = ()
    summary: Mapping[str, Any] = field(default_factory=dict)

    def model(self, name: str) -> FitResult | None:
        return next((f for f in self.models if f.model == name), None)


def holdout_table(freq: np.ndarray, actual: np.ndarray, predicted: np.ndarray, cap: int = 7) -> pl.DataFrame:
    """Actual vs predicted holdout transactions by calibration frequency (0 .. cap-1, cap+),
    then an ``all`` row, as in FHL (2005) Figure 3."""
    bins = np.minimum(freq.astype(np.int64), cap)
    labels = [str(k) for k in range(cap)] + [f"{cap}+"]
    rows = []
    for k, lab in enumerate(labels):
        sel = bins == k
        if sel.any():
            rows.append((lab, int(sel.sum()), float(actual[sel].sum()), float(predicted[sel].sum())))
    rows.append(("all", int(freq.size), float(actual.sum()), float(predicted.sum())))
    df = pl.DataFrame(rows, schema={"frequency": pl.String, "customers": pl.Int64, "actual": pl.Float64,
                                    "predicted": pl.Float64}, orient="row")
    return df.with_columns(actual_mean=pl.col("actual") / pl.col("customers"),
                           predicted_mean=pl.col("predicted") / pl.col("customers"),
                           error_pct=100.0 * (pl.col("predicted") - pl.col("actual")) / pl.col("actual"))


def group_table(customers: pl.DataFrame, groups: Sequence[pl.DataFrame]) -> pl.DataFrame:
    """Aggregates per group: each frame holds ``customer_id`` and one group column whose name
    is the grouping (``club``, ``segment`` ...)."""
    parts = []
    for g in groups:
        cols = [c for c in g.columns if c != "customer_id"]
        if "customer_id" not in g.columns or len(cols) != 1:
            raise InputError(f"groups: expected columns customer_id and one group column, got {g.columns}")
        col = cols[0]
        key = g.select(pl.col("customer_id").cast(customers.schema["customer_id"], strict=False),
                       pl.col(col).cast(pl.String).alias("group")).drop_nulls().unique("customer_id")
        agg = (customers.join(key, on="customer_id", how="inner").group_by("group").agg(
            pl.len().alias("customers"), pl.col("p_alive").mean().alias("p_alive_mean"),
            pl.col("churn_risk").mean().alias("churn_risk_mean"),
            pl.col("p_repurchase").mean().alias("p_repurchase_mean"),
            pl.col("expected_transactions").sum().alias("expected_transactions"),
            pl.col("expected_revenue").sum().alias("expected_revenue"),
            pl.col("clv").sum().alias("clv_total"), pl.col("clv").mean().alias("clv_mean"),
            pl.col("clv").median().alias("clv_median"))
            .with_columns(pl.lit(col).alias("grouping")))
        parts.append(agg)
    if not parts:
        return pl.DataFrame()
    cols = ["grouping", "group", "customers", "p_alive_mean", "churn_risk_mean", "p_repurchase_mean",
            "expected_transactions", "expected_revenue", "clv_total", "clv_mean", "clv_median"]
    return pl.concat([p.select(cols) for p in parts]).sort("grouping", "group")


def compute_clv(s: Session, settings: ClvSettings | None = None, *,
                groups: Sequence[pl.DataFrame] | pl.DataFrame | None = None,
                progress: Progress | None = None) -> ClvResult:
    """Summary → purchase model (+ Gamma-Gamma) → per-customer predictions, from an open session.

    Parameters
    ----------
    s : Session
        Needs the ``orders`` view.
    settings : ClvSettings, optional
        Default: :func:`clv_settings` of ``s.cfg``.
    groups : DataFrame or list of DataFrames, optional
        ``customer_id`` plus one group column each (clubs, segments) for ``ClvResult.groups``.

    Raises
    ------
    FitError, InputError
    """
    st = settings or clv_settings(s.cfg)
    if progress:
        progress("clv: summarising orders")
    summ = summarize(s, st.calibration_end, time_unit=st.time_unit, holdout_end=st.holdout_end)
    f = summ.frame
    x = f["frequency"].to_numpy()
    tx = f["recency"].to_numpy()
    T = f["T"].to_numpy()
    m = f["monetary_value"].fill_null(np.nan).to_numpy()
    if progress:
        progress(f"clv: fitting {LABELS[st.model]} on {f.height:,} customers")
    fit = (fit_bgnbd if st.model == "bgnbd" else fit_pareto_nbd)(x, tx, T, penalty=st.penalty)
    notes: list[str] = []
    models = [fit]
    spend = None
    rep = (x > 0) & (m > 0)
    if int(rep.sum()) < 10:
        notes.append(f"Gamma-Gamma skipped: only {int(rep.sum())} repeat buyers with a positive mean spend")
    else:
        try:
            spend = fit_gamma_gamma(x[rep], m[rep], penalty=st.penalty)
            models.append(spend)
        except FitError as exc:
            notes.append(f"Gamma-Gamma skipped: {exc}")
    fallback = float(s.con.execute(
        "SELECT avg(v) FROM (SELECT sum((quantity - returned_quantity) * unit_price) AS v FROM orders "
        "WHERE quantity > 0 AND CAST(order_ts AS DATE) <= $c GROUP BY customer_id, CAST(order_ts AS DATE))",
        {"c": summ.calibration_end}).fetchall()[0][0] or math.nan)
    if spend is not None and spend.params["q"] <= 1.0:
        notes.append(f"Gamma-Gamma q = {spend.params['q']:.3g} <= 1: customers without repeat purchases get "
                     "the mean transaction value instead of the (infinite) population mean")
    if spend is None:
        notes.append("expected_order_value is the mean transaction value of all customers")
    if progress:
        progress("clv: predicting")
    pred = predict(fit, spend, x, tx, T, m, horizon=st.horizon, time_unit=st.time_unit,
                   discount_rate_monthly=st.discount_rate_monthly, margin=st.margin,
                   interval=st.interval if st.model == "bgnbd" else None, fallback_spend=fallback)
    cols: dict[str, Any] = {"customer_id": f["customer_id"], "frequency": x, "recency": tx, "T": T,
                            "monetary_value": f["monetary_value"]}
    cols.update(pred)
    for k in ("transactions_lo", "transactions_hi"):
        cols.setdefault(k, pl.Series(k, [None] * f.height, dtype=pl.Int64))
    holdout = None
    summary: dict[str, Any] = {"customers": f.height, "calibration_end": summ.calibration_end.isoformat(),
                               "repeat_transactions": float(x.sum()), "repeat_buyers": int((x > 0).sum())}
    if summ.holdout_end is not None:
        length = (summ.holdout_end - summ.calibration_end).days / TIME_UNITS[st.time_unit]
        hp = predict(fit, None, x, tx, T, m, horizon=length, time_unit=st.time_unit, interval=None)
        actual = f["holdout_transactions"].to_numpy().astype(np.float64)
        cols["holdout_transactions"] = actual
        cols["holdout_predicted"] = hp["expected_transactions"]
        holdout = holdout_table(x, actual, hp["expected_transactions"])
        summary["holdout"] = {"end": summ.holdout_end.isoformat(), "length": length,
                              "actual": float(actual.sum()), "predicted": float(hp["expected_transactions"].sum()),
                              "mae_per_customer": float(np.abs(actual - hp["expected_transactions"]).mean()),
                              "correlation": float(np.corrcoef(actual, hp["expected_transactions"])[0, 1])
                              if actual.std() > 0 else None}
    customers = pl.DataFrame(cols).with_columns(pl.col("transactions_lo", "transactions_hi").cast(pl.Int64))
    gt = None
    if groups is not None:
        gt = group_table(customers, [groups] if isinstance(groups, pl.DataFrame) else list(groups))
    summary.update({"expected_transactions": float(pred["expected_transactions"].sum()),
                    "clv_total": float(np.nansum(pred["clv"])), "p_alive_mean": float(pred["p_alive"].mean())})
    if rep.sum() > 2:
        summary["spend_frequency_correlation"] = float(np.corrcoef(x[rep], m[rep])[0, 1])
    for fr in models:
        if not all(math.isfinite(v) for v in fr.se.values()):
            notes.append(f"{LABELS[fr.model]}: no standard errors (the Hessian is not positive definite: "
                         "some parameter is drifting towards 0 or infinity, the data barely identify it; "
                         "a small penalty helps)")
    for note in notes:
        log.info(note)
    return ClvResult(customers, tuple(models), replace(st, calibration_end=summ.calibration_end), summ.calibration_end,
                     holdout, gt, tuple(notes), summary)


FEATURE_COLUMNS = ("p_alive", "churn_risk", "expected_transactions", "p_repurchase", "expected_order_value",
                   "expected_revenue", "clv")


def clv_features(res: ClvResult) -> pl.DataFrame:
    """customer_id plus the predictions as ``clv_``-prefixed columns, to join onto the
    feature table (clubs, segments and budgets can then use them)."""
    return res.customers.select("customer_id", *(pl.col(c).alias(f"clv_{c}") for c in FEATURE_COLUMNS))


def model_doc(res: ClvResult) -> dict[str, Any]:
    """The content of ``clv_model.json``."""
    return {"settings": res.settings.as_dict(), "calibration_end": res.calibration_end.isoformat(),
            "models": [m.as_dict() for m in res.models], "notes": list(res.notes), "summary": dict(res.summary)}


def write_clv(res: ClvResult, staging: Any) -> dict[str, int]:
    """Write clv.parquet, clv_model.json (and clv_holdout.parquet, clv_groups.parquet) into ``staging``."""
    res.customers.write_parquet(staging.path("clv.parquet"), compression="zstd")
    Path(staging.path("clv_model.json")).write_text(json.dumps(model_doc(res), indent=2) + "\n")
    rows = {"clv": res.customers.height}
    if res.holdout is not None:
        res.holdout.write_parquet(staging.path("clv_holdout.parquet"), compression="zstd")
        rows["clv_holdout"] = res.holdout.height
    if res.groups is not None:
        res.groups.write_parquet(staging.path("clv_groups.parquet"), compression="zstd")
        rows["clv_groups"] = res.groups.height
    return rows


def read_groups(spec: str) -> pl.DataFrame:
    """``FILE[:COLUMN]`` → a frame of customer_id and the group column (default: ``club``,
    then ``segment``, else the second column)."""
    path, _, col = spec.partition(":") if not Path(spec).exists() else (spec, "", "")
    p = Path(path)
    try:
        df = pl.read_parquet(p) if p.suffix != ".csv" else pl.read_csv(p)
    except Exception as exc:  # polars raises several error types for unreadable files
        raise InputError(f"--groups {spec}: cannot read {p}: {exc}") from None
    if "customer_id" not in df.columns:
        raise InputError(f"--groups {spec}: {p} has no customer_id column")
    if not col:
        col = next((c for c in ("club", "segment") if c in df.columns),
                   next((c for c in df.columns if c != "customer_id"), ""))
    if col not in df.columns or col == "customer_id":
        raise InputError(f"--groups {spec}: no column {col!r} in {p}; columns: {', '.join(df.columns)}")
    return df.select("customer_id", col)


def run_clv(cfg: Config, out: str | Path, *, settings: ClvSettings | None = None,
            groups: Sequence[pl.DataFrame] | None = None, progress: Progress | None = None) -> ClvResult:
    """Open the session, compute CLV and write it atomically into ``out`` with a manifest."""
    from .features import manifest

    st = settings or clv_settings(cfg)
    with staged_output(out) as staging, open_session(cfg, progress, only=("orders",)) as s:
        with staging.timed("clv"), numba_threads(cfg.threads):
            res = compute_clv(s, st, groups=groups, progress=progress)
        rows = write_clv(res, staging)
        rows["rejects"] = s.total_rejects
        write_manifest(staging, manifest(s, "clv", {"clv": clv_summary_doc(res)}, rows))
    return res


def clv_summary_doc(res: ClvResult) -> dict[str, Any]:
    """JSON-friendly account of a CLV run (manifest and ``--json``)."""
    doc = model_doc(res)
    if res.holdout is not None:
        doc["holdout_table"] = res.holdout.to_dicts()
    return doc


def print_clv(console: Any, res: ClvResult) -> None:
    """Render the fitted models, the holdout table and the top customers with rich."""
    from rich.table import Table

    t = Table(title=f"Models (calibration end {res.calibration_end}, time unit {res.settings.time_unit})")
    for c in ("model", "parameters (± SE)", "log-lik", "n", "converged"):
        t.add_column(c)
    for m in res.models:
        ps = ", ".join(f"{k} = {v:.4g} ± {m.se[k]:.2g}" for k, v in m.params.items())
        t.add_row(LABELS[m.model], ps, f"{m.loglik:,.2f}", f"{m.n:,}", "yes" if m.converged else "no")
    console.print(t)
    sm = res.summary
    console.print(f"{sm['customers']:,} customers; horizon {res.settings.horizon:g} {res.settings.time_unit}s: "
                  f"{sm['expected_transactions']:,.0f} expected transactions, mean P(alive) "
                  f"{sm['p_alive_mean']:.3f}, total CLV {sm['clv_total']:,.0f}")
    if res.holdout is not None:
        h = Table(title="Holdout: transactions by calibration frequency")
        for c in res.holdout.columns:
            h.add_column(c, justify="right")
        for row in res.holdout.iter_rows():
            h.add_row(*(f"{v:,.2f}" if isinstance(v, float) else str(v) for v in row))
        console.print(h)
    for note in res.notes:
        console.print(f"note: {note}")
