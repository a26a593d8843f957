"""Customer value: BG/NBD or Pareto/NBD purchase models plus Gamma-Gamma spend, fitted by
maximum likelihood; per-customer repurchase, churn risk and CLV (``centile clv``).

Data flow: the ``orders`` view → ``sql/clv_days.sql`` (purchase days as transactions, or the
refresh state's, :mod:`centile.refresh.clv`) → ``sql/clv_summary.sql`` (frequency, recency, T,
mean repeat spend per customer) → fits on
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import polars as pl

from centile.backend.partitions import Kept
from centile.backend.session import Session, add_by_key
from centile.clv.models import (
    LABELS,
    MONTH_DAYS,
    PARAM_NAMES,
    TIME_UNITS,
    FitError,
    FitResult,
    discount_steps,
    fit_bgnbd,
    fit_gamma_gamma,
    fit_pareto_nbd,
    predict,
)
from centile.config import Config, as_date, check_keys
from centile.errors import ConfigError, InputError
from centile.io.sqlfiles import read_sql
from centile.runtime import Progress

log = logging.getLogger(__name__)

MODELS = ("bgnbd", "pareto-nbd")
#: ``[clv] model = "auto"``: fit every model of MODELS and keep the better (:func:`choose_model`)
AUTO = "auto"
__all__ = ["MODELS", "AUTO", "choose_model", "TIME_UNITS", "MONTH_DAYS", "PARAM_NAMES", "LABELS", "FitError", "FitResult",
           "ClvSettings", "ClvResult", "Summary", "PurchaseDays", "OrderDays", "summary_sql", "mean_value",
           "clv_settings", "summarize", "fit_bgnbd", "fit_pareto_nbd",
           "fit_gamma_gamma", "predict", "predictions", "discount_steps", "compute_clv", "holdout_table", "group_table",
           "clv_features", "write_clv", "clv_summary_doc", "model_doc"]


# ---------------------------------------------------------------------------
# settings

@dataclass(frozen=True)
class ClvSettings:
    """The ``[clv]`` config section, validated, with CLI overrides applied.

    ``model`` is ``"bgnbd"``, ``"pareto-nbd"`` or ``"auto"`` (both fitted, the better kept:
    :func:`choose_model`).

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
    return as_date(value, f"[clv] {key}")


def clv_settings(cfg: Config | None = None, **overrides: Any) -> ClvSettings:
    """Parse and validate ``[clv]`` of ``cfg``; keyword overrides (CLI options) win when not None.

    Raises
    ------
    ConfigError
        An unknown key or an invalid value, naming the key.
    """
    doc = dict(cfg.section("clv")) if cfg is not None else {}
    check_keys("[clv]", doc, _KEYS)
    unknown = set(overrides) - set(_KEYS)
    if unknown:
        raise TypeError(f"clv_settings: unknown override(s) {sorted(unknown)}")
    doc.update({k: v for k, v in overrides.items() if v is not None})
    d = ClvSettings()
    model = str(doc.get("model", d.model)).lower().replace("_", "-").replace("/", "-")
    model = {"bg-nbd": "bgnbd", "paretonbd": "pareto-nbd", "pnbd": "pareto-nbd"}.get(model, model)
    if model not in (*MODELS, AUTO):
        raise ConfigError(f"[clv] model = {doc.get('model')!r}: use 'bgnbd', 'pareto-nbd' or 'auto' (fit both "
                          "and keep the better: holdout error with holdout_end, else log-likelihood)")
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
    #: on a cluster, where the workers kept each partition's summary rows (the predictions' tasks
    #: read them there); None when the rows were not computed by partition tasks
    kept: Kept | None = None


def summary_sql(days: str) -> str:
    """The BTYD summary query (``sql/clv_summary.sql``) over the purchase days the query ``days``
    returns (``customer_id``, ``day``, ``value`` DECIMAL; no day after ``$hold_end``)."""
    return f"WITH days AS (\n{days}\n)\nSELECT * FROM (\n{read_sql('clv_summary')}\n) AS summary"


class PurchaseDays(Protocol):
    """Where the summary's purchase days come from: the ``orders`` view (:class:`OrderDays`) or
    a refresh state (:class:`centile.refresh.clv.StateDays`). Both give the same exact decimals."""

    def summary(self, params: dict[str, Any]) -> pl.DataFrame:
        """The rows of ``sql/clv_summary.sql`` with ``params`` (any row order)."""
        ...

    def value_total(self, cal_end: dt.date) -> tuple[Decimal | None, int]:
        """The exact sum of the values of the purchase days up to ``cal_end`` and their number."""
        ...


def _summary_of_partition(s: Session, part: int, sql: str, params: dict[str, Any]) -> pl.DataFrame:
    return s.frame(sql, params)


@dataclass(frozen=True)
class OrderDays:
    """The purchase days of the ``orders`` view of session ``s`` (``sql/clv_days.sql``)."""

    s: Session

    def summary(self, params: dict[str, Any]) -> pl.DataFrame:
        return self.rows(params)[0]

    def rows(self, params: dict[str, Any]) -> tuple[pl.DataFrame, Kept | None]:
        """:meth:`summary` in ``customer_id`` order, and where a cluster's workers kept each
        partition's rows (:meth:`~centile.backend.session.Session.map_rows`)."""
        # per customer: one partition at a time when partitions are configured (a DuckDB query,
        # which spills by itself: one pass otherwise, as the features), or on a cluster's workers
        return self.s.map_rows(self.s.work_partitions(), "clv", _summary_of_partition,
                               summary_sql(read_sql("clv_days")), params, tables=("orders",))

    def value_total(self, cal_end: dt.date) -> tuple[Decimal | None, int]:
        # on a cluster each partition's exact sum and count come from its worker, added there
        return self.s.everywhere("clv: mean value", _days_total, add_by_key, cal_end, tables=("orders",))[None]


def _days_total(s: Session, cal_end: dt.date) -> dict[None, tuple[Decimal | None, int]]:
    """The exact sum of the purchase days' values up to ``cal_end`` and their number, of the customers
    the session's views hold (one key: a state :func:`~centile.backend.session.add_by_key` merges)."""
    total, n = s.con.execute(f"WITH days AS (\n{read_sql('clv_days')}\n)\n"
                             "SELECT sum(value), count(*) FROM days", {"hold_end": cal_end}).fetchall()[0]
    return {None: (total, int(n))}


def mean_value(days: PurchaseDays, cal_end: dt.date) -> float:
    """The mean value of all purchase days up to ``cal_end`` (NaN without any): from the exact
    decimal sum, so the same float whichever way the days were added up."""
    total, n = days.value_total(cal_end)
    return float(total) / n if n else math.nan


def summarize(s: Session, calibration_end: dt.date | None = None, *, time_unit: str = "week",
              holdout_end: dt.date | None = None, days: PurchaseDays | None = None) -> Summary:
    """Build the BTYD summary from the purchase days ``days`` (default: the ``orders`` view of the
    open session ``s``).

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
    params = {"cal_end": cal, "hold_end": holdout_end or cal, "unit": TIME_UNITS[time_unit]}
    # in customer order: the same rows in the same order for any partitioning
    days = days or OrderDays(s)
    frame, kept = days.rows(params) if isinstance(days, OrderDays) else (days.summary(params).sort("customer_id"), None)
    if frame.height == 0:
        raise InputError(f"orders: no customer purchased on or before the calibration end {cal}; "
                         "pass a later --calibration-end" if calibration_end is not None else
                         f"orders: no order line before as_of {s.as_of}{_valid_range(s)}; pass a later "
                         "--as-of (as_of in the config), or leave it out to use the day after the newest order")
    return Summary(frame, cal, holdout_end, time_unit, kept)


def _valid_range(s: Session) -> str:
    o = s.summaries.get("orders")
    return "" if o is None else f" (the valid lines run from {str(o.date_min)[:10]} to {str(o.date_max)[:10]})"


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
    out: Path | None = None  # the folder written by run_clv
    #: with ``model = "auto"``: the candidates, the chosen model, the criterion and the reason
    selection: Mapping[str, Any] | None = None

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
        joined = customers.join(key, on="customer_id", how="inner").sort("group", "customer_id")
        labels, code = np.unique(joined["group"].to_numpy().astype(str), return_inverse=True)
        n = np.bincount(code, minlength=labels.size).astype(np.float64)

        # np.bincount adds in row order: the same bytes on every run (a threaded group-by may not)
        def total(col: str, joined: pl.DataFrame = joined, code: np.ndarray = code,
                  k: int = labels.size) -> np.ndarray:
            return np.bincount(code, weights=joined[col].cast(pl.Float64).fill_null(0.0).to_numpy(), minlength=k)

        medians = joined.group_by("group").agg(pl.col("clv").median().alias("clv_median"))
        agg = pl.DataFrame({
            "group": labels, "customers": n.astype(np.uint32),
            "p_alive_mean": total("p_alive") / n, "churn_risk_mean": total("churn_risk") / n,
            "p_repurchase_mean": total("p_repurchase") / n,
            "expected_transactions": total("expected_transactions"),
            "expected_revenue": total("expected_revenue"), "clv_total": total("clv"),
            "clv_mean": total("clv") / n,
        }).join(medians, on="group", how="left").with_columns(pl.lit(col).alias("grouping"))
        parts.append(agg)
    if not parts:
        return pl.DataFrame()
    cols = ["grouping", "group", "customers", "p_alive_mean", "churn_risk_mean", "p_repurchase_mean",
            "expected_transactions", "expected_revenue", "clv_total", "clv_mean", "clv_median"]
    return pl.concat([p.select(cols) for p in parts]).sort("grouping", "group")


def compute_clv(s: Session, settings: ClvSettings | None = None, *,
                groups: Sequence[pl.DataFrame] | pl.DataFrame | None = None,
                progress: Progress | None = None, days: PurchaseDays | None = None) -> ClvResult:
    """Summary → purchase model (+ Gamma-Gamma) → per-customer predictions, from an open session.

    Parameters
    ----------
    s : Session
        Needs the ``orders`` view.
    settings : ClvSettings, optional
        Default: :func:`clv_settings` of ``s.cfg``.
    groups : DataFrame or list of DataFrames, optional
        ``customer_id`` plus one group column each (clubs, segments) for ``ClvResult.groups``.
    days : PurchaseDays, optional
        Where the purchase days come from (default: the ``orders`` view of ``s``); ``centile run
        --state`` passes the refresh state's.

    Raises
    ------
    FitError, InputError
    """
    st = settings or clv_settings(s.cfg)
    if progress:
        progress("clv: summarising orders")
    days = days or OrderDays(s)
    summ = summarize(s, st.calibration_end, time_unit=st.time_unit, holdout_end=st.holdout_end, days=days)
    f = summ.frame
    x = f["frequency"].to_numpy()
    tx = f["recency"].to_numpy()
    T = f["T"].to_numpy()
    m = f["monetary_value"].fill_null(np.nan).to_numpy()
    notes: list[str] = []
    selection = None
    if st.model == AUTO:
        if progress:
            progress(f"clv: fitting BG/NBD and Pareto/NBD on {f.height:,} customers")
        hold = None
        if summ.holdout_end is not None:
            hold = ((summ.holdout_end - summ.calibration_end).days / TIME_UNITS[st.time_unit],
                    f["holdout_transactions"].to_numpy().astype(np.float64))
        fit, selection = choose_model(x, tx, T, penalty=st.penalty, time_unit=st.time_unit, holdout=hold)
        notes.append(selection["reason"])
    else:
        if progress:
            progress(f"clv: fitting {LABELS[st.model]} on {f.height:,} customers")
        fit = _FITS[st.model](x, tx, T, penalty=st.penalty)
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
    fallback = mean_value(days, summ.calibration_end)
    if spend is not None and spend.params["q"] <= 1.0:
        notes.append(f"Gamma-Gamma q = {spend.params['q']:.3g} <= 1: customers without repeat purchases get "
                     "the mean transaction value instead of the (infinite) population mean")
    if spend is None:
        notes.append("expected_order_value is the mean transaction value of all customers")
    if progress:
        progress("clv: predicting")
    length = None if summ.holdout_end is None else \
        (summ.holdout_end - summ.calibration_end).days / TIME_UNITS[st.time_unit]
    pred, hp = predictions(s, f, fit, spend, st, fallback, length, kept=summ.kept)
    cols: dict[str, Any] = {"customer_id": f["customer_id"], "frequency": x, "recency": tx, "T": T,
                            "monetary_value": f["monetary_value"]}
    cols.update(pred)
    for k in ("transactions_lo", "transactions_hi"):
        cols.setdefault(k, pl.Series(k, [None] * f.height, dtype=pl.Int64))
    holdout = None
    summary: dict[str, Any] = {"customers": f.height, "calibration_end": summ.calibration_end.isoformat(),
                               "repeat_transactions": float(x.sum()), "repeat_buyers": int((x > 0).sum())}
    if summ.holdout_end is not None:
        assert hp is not None and length is not None
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
        else:
            notes.extend(weakly_identified(fr))
    for note in notes:
        log.info(note)
    if selection is not None:
        summary["selection"] = {k: selection[k] for k in ("chosen", "criterion")}
    return ClvResult(customers, tuple(models), replace(st, calibration_end=summ.calibration_end), summ.calibration_end,
                     holdout, gt, tuple(notes), summary, selection=selection)


#: the summary columns a prediction reads
_PREDICT_INPUT = ("frequency", "recency", "T", "monetary_value")


def _predict_rows(rows: pl.DataFrame, fit: FitResult, spend: FitResult | None, st: ClvSettings, fallback: float,
                  holdout: float | None) -> dict[str, np.ndarray]:
    """:func:`predict` of the summary rows ``rows`` (and, with a holdout length, the holdout's
    expected transactions as ``__holdout``): each customer's values depend on its own row only."""
    x = rows["frequency"].to_numpy()
    tx = rows["recency"].to_numpy()
    T = rows["T"].to_numpy()
    m = rows["monetary_value"].fill_null(np.nan).to_numpy()
    pred = predict(fit, spend, x, tx, T, m, horizon=st.horizon, time_unit=st.time_unit,
                   discount_rate_monthly=st.discount_rate_monthly, margin=st.margin,
                   interval=st.interval if fit.model == "bgnbd" else None, fallback_spend=fallback)
    if holdout is not None:
        pred["__holdout"] = predict(fit, None, x, tx, T, m, horizon=holdout, time_unit=st.time_unit,
                                    interval=None)["expected_transactions"]
    return pred


def _predict_partition(view: Session | None, part: int, rows: pl.DataFrame, fit: FitResult,
                       spend: FitResult | None, st: ClvSettings, fallback: float,
                       holdout: float | None) -> pl.DataFrame:
    """One partition's predictions (a task on a cluster: ``rows`` are its customers' summary rows
    with their position ``__row`` in the whole summary)."""
    pred = _predict_rows(rows, fit, spend, st, fallback, holdout)
    return pl.DataFrame({"__row": rows["__row"], **pred})


def predictions(s: Session, summary: pl.DataFrame, fit: FitResult, spend: FitResult | None, st: ClvSettings,
                fallback: float, holdout: float | None = None, *, kept: Kept | None = None
                ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
    """Per-customer predictions of ``summary`` (in its row order) with the fitted models, and the
    holdout's (``expected_transactions`` over ``holdout`` time units) when a length is given.

    On a cluster each task predicts its partition's customers (their summary rows go out split by
    partition, the predictions come back and are put in the summary's row order); here in one
    call. The same floats either way: a customer's predictions read only its own row, and the
    kernels compute each row (or each distinct ``(x, T)`` pair) on its own. ``kept``: where the
    workers kept the summary's rows (:attr:`Summary.kept`); the tasks read them there instead."""
    from centile.backend.partitions import per_customer

    back = per_customer(s, summary.select("customer_id", *_PREDICT_INPUT), "clv: predicting", _predict_partition,
                        fit, spend, st, fallback, holdout, kept=kept)
    pred = {c: back[c].to_numpy() for c in back.columns}
    hp = None
    if holdout is not None:
        hp = {"expected_transactions": pred.pop("__holdout")}
    return pred, hp


_FITS = {"bgnbd": fit_bgnbd, "pareto-nbd": fit_pareto_nbd}

#: why comparing the two log-likelihoods is fair (recorded with every choice made by it)
LOGLIK_FAIRNESS = ("both models have four parameters and are fitted to the same (frequency, recency, T) of the "
                   "same customers, so their likelihoods describe the same data; AIC and BIC would differ by "
                   "the log-likelihood difference alone")


def choose_model(x: np.ndarray, tx: np.ndarray, T: np.ndarray, *, penalty: float = 0.0, time_unit: str = "week",
                 holdout: tuple[float, np.ndarray] | None = None) -> tuple[FitResult, dict[str, Any]]:
    """``[clv] model = "auto"``: fit BG/NBD and Pareto/NBD and keep the better one.

    With ``holdout`` = (length in time units, actual holdout transactions per customer) the
    criterion is the holdout error, the mean absolute error per customer of the expected
    transactions; otherwise the (unpenalised) log-likelihood, a fair comparison because both
    models have four parameters and describe the same data (:data:`LOGLIK_FAIRNESS`). A tie
    keeps BG/NBD; a model that does not fit leaves the other.

    Returns
    -------
    (FitResult, dict)
        The chosen fit and the record of the choice (``clv_model.json`` ``selection``):
        ``chosen``, ``criterion``, ``reason`` and per candidate its fit, log-likelihood,
        holdout error and edge-of-parameter-space notes (or the error that stopped it).

    Raises
    ------
    FitError
        Neither model fits (both messages).
    """
    fits: dict[str, FitResult] = {}
    cands: list[dict[str, Any]] = []
    for name in MODELS:
        cand: dict[str, Any] = {"model": name, "name": LABELS[name]}
        try:
            fr = _FITS[name](x, tx, T, penalty=penalty)
        except FitError as exc:
            cand["error"] = str(exc)
        else:
            fits[name] = fr
            cand.update(loglik=fr.loglik, params=dict(fr.params), notes=weakly_identified(fr))
            if holdout is not None:
                length, actual = holdout
                pred = predict(fr, None, x, tx, T, np.full(x.size, np.nan), horizon=length, time_unit=time_unit,
                               interval=None)["expected_transactions"]
                cand["holdout_mae_per_customer"] = float(np.abs(actual - pred).mean())
        cands.append(cand)
    if not fits:
        raise FitError("model 'auto' of the clv section: neither model fits. " +
                       " ".join(f"{c['name']}: {c['error']}" for c in cands))
    if len(fits) == 1:
        (chosen,) = fits
        failed = next(c for c in cands if "error" in c)
        criterion = "the only model that fits"
        reason = (f"model 'auto' chose {LABELS[chosen]}: {failed['name']} did not fit "
                  f"({failed['error']})")
    elif holdout is not None:
        err = {c["model"]: c["holdout_mae_per_customer"] for c in cands}
        chosen = min(MODELS, key=lambda k: (err[k], MODELS.index(k)))
        other = next(k for k in MODELS if k != chosen)
        criterion = "holdout error"
        reason = (f"model 'auto' chose {LABELS[chosen]}: the smaller holdout error, mean absolute "
                  f"error per customer {err[chosen]:.4g} vs {err[other]:.4g} ({LABELS[other]}) over the "
                  f"{holdout[0]:.4g} {time_unit}s after the calibration end")
    else:
        ll = {k: fr.loglik for k, fr in fits.items()}
        chosen = max(MODELS, key=lambda k: (ll[k], -MODELS.index(k)))
        other = next(k for k in MODELS if k != chosen)
        criterion = "log-likelihood"
        reason = (f"model 'auto' chose {LABELS[chosen]}: the larger log-likelihood, {ll[chosen]:,.2f} vs "
                  f"{ll[other]:,.2f} ({LABELS[other]}); a fair comparison, as {LOGLIK_FAIRNESS}. Set "
                  "calibration_end and holdout_end in the clv section of the config to choose by holdout error "
                  "instead")
    for c in cands:
        c["chosen"] = c["model"] == chosen
    return fits[chosen], {"requested": AUTO, "chosen": chosen, "criterion": criterion, "reason": reason,
                          "candidates": cands}


def weakly_identified(fr: FitResult) -> list[str]:
    """Notes for parameters at the edge of their space: a standard error larger than the estimate,
    or an estimate below 1e-3 or above 1e4 (e.g. BG/NBD a → 0: nobody ever drops out, so lapsed
    customers keep P(alive) near 1)."""
    weak = [k for k, v in fr.params.items()
            if (math.isfinite(fr.se.get(k, math.nan)) and fr.se[k] > v) or v < 1e-3 or v > 1e4]
    if not weak:
        return []
    terms = ", ".join(f"{k} = {fr.params[k]:.3g} ± {fr.se[k]:.3g}" for k in weak)
    why = {"a": "dropout is barely identified, so lapsed customers may keep P(alive) near 1",
           "b": "dropout is barely identified, so lapsed customers may keep P(alive) near 1",
           "s": "dropout is barely identified, so lapsed customers may keep P(alive) near 1",
           "beta": "dropout is barely identified, so lapsed customers may keep P(alive) near 1"}
    reason = next((why[k] for k in weak if k in why), "the data barely identify it")
    return [f"{LABELS[fr.model]} at the edge of its parameter space ({terms}): {reason}. Check the holdout "
            "accuracy ([clv] calibration_end and holdout_end), compare the other model ([clv] model), or add a "
            "small penalty"]


FEATURE_COLUMNS = ("p_alive", "churn_risk", "expected_transactions", "p_repurchase", "expected_order_value",
                   "expected_revenue", "clv")


def clv_features(res: ClvResult | pl.DataFrame) -> pl.DataFrame:
    """customer_id plus the predictions as ``clv_``-prefixed columns, to join onto the
    feature table (clubs, segments and budgets can then use them). Takes a
    :class:`ClvResult` or its ``customers`` frame (``clv.parquet``)."""
    customers = res.customers if isinstance(res, ClvResult) else res
    return customers.select("customer_id", *(pl.col(c).alias(f"clv_{c}") for c in FEATURE_COLUMNS))


def model_doc(res: ClvResult) -> dict[str, Any]:
    """The content of ``clv_model.json``."""
    return {"settings": res.settings.as_dict(), "calibration_end": res.calibration_end.isoformat(),
            "models": [m.as_dict() for m in res.models], "notes": list(res.notes), "summary": dict(res.summary),
            **({"selection": dict(res.selection)} if res.selection is not None else {})}


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


def clv_summary_doc(res: ClvResult) -> dict[str, Any]:
    """JSON-friendly account of a CLV run (manifest and ``--json``)."""
    doc = model_doc(res)
    if res.holdout is not None:
        doc["holdout_table"] = res.holdout.to_dicts()
    return doc
