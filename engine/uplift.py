"""``centile uplift``: what each campaign arm changed against its control group.

Input is a *unit table*, one row per (customer, campaign): the arm, the
contact cost, outcome columns, optional pre-period columns ``pre__<outcome>``
(CUPED), an optional uplift score and segment columns. It is built either from
the ``contacts`` and ``orders`` tables (:func:`units_from_session`: outcomes in
a response window after ``sent_ts``) or from a flat per-customer results table
mapped in ``[uplift]`` (:func:`units_from_table`).

Per campaign, breakdown (``overall`` and each segment column), segment and arm
against control, and per outcome, :func:`compute_uplift` reports ``n``, means,
absolute and relative uplift with 95 % intervals and p-values by these
methods (``method`` column):

* ``newcombe`` -- 0/1 outcomes: Newcombe's hybrid score interval for the
  difference of proportions, pooled two-proportion z-test;
* ``welch`` -- other outcomes: Welch t interval and test;
* ``bootstrap`` -- skewed outcomes and ratio metrics (sum of a numerator over
  sum of a denominator per arm, e.g. revenue per order): percentile intervals
  from a Poisson bootstrap (``centile.kernels.bootstrap``), relative uplift
  from the same replicates;
* ``cuped`` -- when a pre-period value of the outcome exists: Welch on ``y -
  theta (x - mean x)``, ``theta`` pooled over the arms of the cell, with the
  variance reduction achieved.

Relative-uplift intervals for ``newcombe``/``welch``/``cuped`` are delta-method
intervals on ``log(mean_arm / mean_control)``. ``p_holm`` and ``p_bh`` adjust
within each family (campaign, breakdown, outcome, method) across segments and
arms. ``incremental`` = uplift x ``n_arm`` (the outcome the arm added);
``roi`` = (incremental margin - contact cost) / contact cost on margin rows.
The sample-ratio-mismatch check compares the arm counts of every (campaign,
breakdown, segment) with the planned split (chi-square); a p-value below
``srm_alpha`` is flagged in ``srm_flag``, logged as a warning and noted.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from . import uplift_stats as st
from .config import Config
from .errors import ConfigError, InputError

log = logging.getLogger(__name__)

PRE = "pre__"
UPLIFT_COLUMNS = ("campaign", "breakdown", "segment", "arm", "outcome", "method", "n_arm", "n_control",
                  "mean_arm", "mean_control", "uplift", "uplift_ci_low", "uplift_ci_high", "rel_uplift",
                  "rel_ci_low", "rel_ci_high", "p_value", "p_holm", "p_bh", "variance_reduction",
                  "incremental", "contact_cost", "roi", "srm_p_value", "srm_flag")


@dataclass(frozen=True)
class UpliftSpec:
    """The ``[uplift]`` config section, validated (see README for every key)."""

    window_days: int = 14
    pre_window_days: int = 90
    control: str = "control"
    alpha: float = 0.05
    replicates: int = 1000
    bootstrap: tuple[str, ...] | None = None  # None: every non-0/1 outcome and every ratio
    ratios: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    planned: Mapping[str, float] = field(default_factory=dict)
    srm_alpha: float = 0.001
    segments: tuple[str, ...] = ()
    score: str | None = None
    uplift_at: tuple[float, ...] = (0.1, 0.2, 0.3)
    margin: str | None = "margin"
    cost_per_contact: float | None = None
    campaigns: tuple[str, ...] = ()
    # flat results table
    path: str | None = None
    arm: str = "arm"
    campaign: str | None = None
    customer_id: str = "customer_id"
    cost: str | None = None
    outcomes: tuple[str, ...] = ()
    pre: Mapping[str, str] = field(default_factory=dict)


def _strs(v: Any, key: str) -> tuple[str, ...]:
    if isinstance(v, str):
        return (v,)
    if not isinstance(v, list | tuple) or not all(isinstance(x, str) for x in v):
        raise ConfigError(f"[uplift] {key} must be a list of column names, got {v!r}")
    return tuple(v)


def _num(v: Any, key: str, lo: float, hi: float) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
        raise ConfigError(f"[uplift] {key} must be a number in [{lo}, {hi}], got {v!r}")
    return float(v)


def parse_uplift_spec(section: Mapping[str, Any]) -> UpliftSpec:
    """Validate the raw ``[uplift]`` section into an :class:`UpliftSpec` (ConfigError naming the key)."""
    known = set(UpliftSpec.__dataclass_fields__)
    bad = sorted(set(section) - known)
    if bad:
        raise ConfigError(f"[uplift] unknown key(s) {', '.join(bad)}; known: {', '.join(sorted(known))}")
    kw: dict[str, Any] = {}
    for key in ("window_days", "pre_window_days", "replicates"):
        if key in section:
            v = section[key]
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if key == "replicates" else 1):
                raise ConfigError(f"[uplift] {key} must be a whole number >= "
                                  f"{0 if key == 'replicates' else 1}, got {v!r}")
            kw[key] = v
    for key, lo, hi in (("alpha", 1e-6, 0.5), ("srm_alpha", 1e-12, 0.5), ("cost_per_contact", 0.0, 1e9)):
        if key in section:
            kw[key] = _num(section[key], key, lo, hi)
    for key in ("control", "score", "margin", "path", "arm", "campaign", "customer_id", "cost"):
        if key in section:
            if not isinstance(section[key], str) or not section[key]:
                raise ConfigError(f"[uplift] {key} must be a non-empty string, got {section[key]!r}")
            kw[key] = section[key]
    for key in ("bootstrap", "segments", "outcomes", "campaigns"):
        if key in section:
            kw[key] = tuple(str(x) for x in section[key]) if key == "campaigns" and isinstance(
                section[key], list) else _strs(section[key], key)
    if "uplift_at" in section:
        v = section["uplift_at"]
        kw["uplift_at"] = tuple(_num(x, "uplift_at", 1e-9, 1.0) for x in (v if isinstance(v, list) else [v]))
    if "ratios" in section:
        r = section["ratios"]
        if not isinstance(r, Mapping) or not all(
                isinstance(x, list) and len(x) == 2 and all(isinstance(c, str) for c in x) for x in r.values()):
            raise ConfigError('[uplift] ratios must map a name to [numerator, denominator], e.g. '
                              f'ratios = {{ revenue_per_order = ["revenue", "orders"] }}; got {r!r}')
        kw["ratios"] = {k: (v[0], v[1]) for k, v in r.items()}
    if "pre" in section:
        p = section["pre"]
        if not isinstance(p, Mapping) or not all(isinstance(v, str) for v in p.values()):
            raise ConfigError(f'[uplift] pre must map an outcome to its pre-period column, got {p!r}')
        kw["pre"] = dict(p)
    if "planned" in section:
        p = section["planned"]
        if not isinstance(p, Mapping) or not p:
            raise ConfigError(f"[uplift] planned must map arm names to shares, e.g. "
                              f"planned = {{ control = 0.1, treatment = 0.9 }}; got {p!r}")
        kw["planned"] = {str(k): _num(v, f"planned.{k}", 0.0, 1.0) for k, v in p.items()}
        total = sum(kw["planned"].values())
        if not 0.999 <= total <= 1.001:
            raise ConfigError(f"[uplift] planned shares must sum to 1, got {total:g}")
    return UpliftSpec(**kw)


@dataclass(frozen=True)
class UpliftResult:
    """Everything :func:`compute_uplift` found (Polars frames; see module docstring)."""

    uplift: pl.DataFrame
    srm: pl.DataFrame
    qini: pl.DataFrame | None
    qini_summary: pl.DataFrame | None
    notes: tuple[str, ...]
    summary: dict[str, Any]


# --------------------------------------------------------------------------- inputs


def units_from_session(s: Any, spec: UpliftSpec, segments: pl.DataFrame | None = None) -> tuple[pl.DataFrame, list[str]]:
    """The unit table from ``contacts`` + ``orders``: one row per (customer, campaign).

    Outcomes per contact over orders with ``sent_ts <= order_ts < sent_ts +
    window_days``: ``response`` (any order), ``orders``, ``revenue`` (net of
    returns) and ``margin`` ((unit_price - unit_cost) x net quantity; only when
    ``unit_cost`` is in orders or products), each with its pre-period value over
    the ``pre_window_days`` before ``sent_ts``. Campaigns whose window ends after
    ``as_of`` are left out (noted). Contacts without a group are treated.
    ``segments`` (customer_id + columns) is left-joined; ``spec.segments`` names
    the breakdown columns, looked up there first, then in ``customers``.
    """
    if not s.has("contacts"):
        raise InputError("uplift needs the contacts table (customer_id, campaign_id, sent_ts, group); "
                         "or map a flat results table in [uplift] path = ...")
    notes: list[str] = []
    has_cost = s.has("orders", "unit_cost") or s.has("products", "unit_cost")
    if has_cost:
        join = "LEFT JOIN products AS p USING (product_id)" if s.has("products", "unit_cost") and s.has(
            "orders", "product_id") else ""
        cost = ("coalesce(o.unit_cost, p.unit_cost, 0)" if join else "coalesce(o.unit_cost, 0)") if s.has(
            "orders", "unit_cost") else "coalesce(p.unit_cost, 0)"
    else:
        join, cost = "", "0"
        notes.append("no unit_cost in orders or products: margin per customer and ROI are not computed")
    pre_days = spec.pre_window_days
    sql = f"""
    WITH c AS (
      SELECT customer_id, CAST(campaign_id AS VARCHAR) AS campaign, min(sent_ts) AS sent_ts,
             coalesce(min("group"), 'treatment') AS arm, sum(coalesce(cost, 0)) AS cost
      FROM contacts GROUP BY customer_id, campaign_id),
    o AS (
      SELECT o.customer_id, o.order_id, min(o.order_ts) AS ts, bool_or(o.quantity > 0) AS is_order,
             sum(o.unit_price * CASE WHEN o.quantity > 0 THEN o.quantity - o.returned_quantity
                                     ELSE o.quantity END) AS revenue,
             sum((o.unit_price - {cost}) * CASE WHEN o.quantity > 0 THEN o.quantity - o.returned_quantity
                                                 ELSE o.quantity END) AS margin
      FROM orders AS o {join}
      WHERE o.customer_id IN (SELECT customer_id FROM c)
      GROUP BY o.customer_id, o.order_id)
    SELECT c.customer_id, c.campaign, c.arm, CAST(c.cost AS DOUBLE) AS cost, c.sent_ts,
      CAST(count(*) FILTER (WHERE o.is_order AND o.ts >= c.sent_ts) AS DOUBLE) AS orders,
      CAST(coalesce(sum(o.revenue) FILTER (WHERE o.ts >= c.sent_ts), 0) AS DOUBLE) AS revenue,
      CAST(coalesce(sum(o.margin) FILTER (WHERE o.ts >= c.sent_ts), 0) AS DOUBLE) AS margin,
      CAST(count(*) FILTER (WHERE o.is_order AND o.ts < c.sent_ts) AS DOUBLE) AS {PRE}orders,
      CAST(coalesce(sum(o.revenue) FILTER (WHERE o.ts < c.sent_ts), 0) AS DOUBLE) AS {PRE}revenue,
      CAST(coalesce(sum(o.margin) FILTER (WHERE o.ts < c.sent_ts), 0) AS DOUBLE) AS {PRE}margin
    FROM c LEFT JOIN o ON o.customer_id = c.customer_id
      AND o.ts >= c.sent_ts - to_days(CAST($pre AS INTEGER))
      AND o.ts < c.sent_ts + to_days(CAST($win AS INTEGER))
    GROUP BY ALL
    """
    units = s.frame(sql, {"pre": pre_days, "win": spec.window_days})
    as_of = dt.datetime.combine(s.as_of, dt.time())
    late = units.filter(pl.col("sent_ts") + pl.duration(days=spec.window_days) > as_of)["campaign"].unique().sort()
    if late.len():
        notes.append(f"campaign(s) {', '.join(late.to_list())} left out: their {spec.window_days}-day response "
                     f"window ends after as_of {s.as_of}")
        units = units.filter(~pl.col("campaign").is_in(late.implode()))
    units = units.with_columns(
        response=(pl.col("orders") > 0).cast(pl.Float64),
        **{f"{PRE}response": (pl.col(f"{PRE}orders") > 0).cast(pl.Float64)}).drop("sent_ts")
    outcomes = ["response", "orders", "revenue"] + (["margin"] if has_cost else [])
    units = units.select(["customer_id", "campaign", "arm", "cost", *outcomes, *(PRE + o for o in outcomes)])
    units = _join_segments(units, spec, segments, s)
    return units.sort("campaign", "customer_id"), notes


def auto_segments(segments: pl.DataFrame, max_levels: int = 100) -> tuple[str, ...]:
    """Breakdown columns of a segments frame when ``[uplift] segments`` is not set: its text,
    categorical and boolean columns, and integer columns with at most ``max_levels`` values."""
    out = []
    for c, t in segments.schema.items():
        if c == "customer_id":
            continue
        if t in (pl.String, pl.Categorical, pl.Boolean) or isinstance(t, pl.Enum) or (
                t.is_integer() and segments[c].n_unique() <= max_levels):
            out.append(c)
    return tuple(out)


def _join_segments(units: pl.DataFrame, spec: UpliftSpec, segments: pl.DataFrame | None, s: Any) -> pl.DataFrame:
    want = list(spec.segments) + ([spec.score] if spec.score else [])
    have = set(units.columns)
    if segments is not None:
        if "customer_id" not in segments.columns:
            raise InputError("the segments frame needs a customer_id column")
        cols = [c for c in segments.columns if c != "customer_id" and c not in have and c in want]
        seg = segments.select("customer_id", *cols).unique("customer_id", keep="first", maintain_order=True)
        units = units.join(seg.with_columns(pl.col("customer_id").cast(units["customer_id"].dtype)),
                           on="customer_id", how="left")
    missing = [c for c in want if c not in units.columns]
    for c in list(missing):
        if s is not None and s.has("customers", c):
            from .sqlfiles import ident

            extra = s.frame(f"SELECT customer_id, {ident(c)} FROM customers")
            units = units.join(extra.unique("customer_id", keep="first"), on="customer_id", how="left")
            missing.remove(c)
    if missing:
        raise InputError(f"[uplift] segments/score column(s) {', '.join(missing)} not found in the segments "
                         "frame (--segments) or the customers table")
    return units


def units_from_table(spec: UpliftSpec, segments: pl.DataFrame | None = None,
                     frame: pl.DataFrame | None = None) -> tuple[pl.DataFrame, list[str]]:
    """The unit table from a flat per-customer results table (``[uplift] path``, or ``frame``)."""
    if frame is None:
        if not spec.path:
            raise ConfigError("[uplift] path is not set: name the results table (Parquet or CSV)")
        p = Path(spec.path)
        try:
            frame = pl.read_csv(p, infer_schema_length=10_000) if p.suffix.lower() == ".csv" else pl.read_parquet(p)
        except Exception as exc:  # polars raises several error types for unreadable files
            raise InputError(f"[uplift] path {p}: cannot read it: {exc}") from None
    if not spec.outcomes:
        raise ConfigError("[uplift] outcomes must list the outcome columns of the results table")
    need = [spec.arm, *spec.outcomes, *spec.pre.values()] + ([spec.campaign] if spec.campaign else []) + (
        [spec.cost] if spec.cost else [])
    missing = [c for c in need if c not in frame.columns]
    if missing:
        raise InputError(f"[uplift] results table lacks column(s) {', '.join(missing)} "
                         f"(it has {', '.join(frame.columns[:20])})")
    bad_pre = [k for k in spec.pre if k not in spec.outcomes]
    if bad_pre:
        raise ConfigError(f"[uplift] pre names outcome(s) {', '.join(bad_pre)} not in outcomes")
    cols = [
        (pl.col(spec.customer_id) if spec.customer_id in frame.columns else pl.int_range(pl.len())).alias(
            "customer_id"),
        (pl.col(spec.campaign).cast(pl.String) if spec.campaign else pl.lit("all")).alias("campaign"),
        pl.col(spec.arm).cast(pl.String).alias("arm"),
        (pl.col(spec.cost).cast(pl.Float64) if spec.cost else pl.lit(0.0)).alias("cost"),
        *(pl.col(o).cast(pl.Float64) for o in spec.outcomes),
        *(pl.col(c).cast(pl.Float64).alias(PRE + o) for o, c in spec.pre.items()),
    ]
    extra = [c for c in (*spec.segments, *([spec.score] if spec.score else [])) if c in frame.columns]
    units = frame.select(*cols, *(pl.col(c) for c in extra if c not in spec.outcomes))
    return _join_segments(units, spec, segments, None), []


# --------------------------------------------------------------------------- computation


def _codes(col: pl.Series) -> tuple[np.ndarray, list[str]]:
    """Dense codes of a segment column in sorted label order (null -> '(missing)')."""
    s = col.cast(pl.String).fill_null("(missing)")
    labels = s.unique().sort()
    codes = s.cast(pl.Enum(labels)).to_physical().to_numpy().astype(np.int64)
    return codes, labels.to_list()


@dataclass
class _Cell:
    """Per (segment, arm) sums of one outcome: n, sum, sum of squares (and pre-period sums)."""

    n: np.ndarray
    s: np.ndarray
    ss: np.ndarray
    sx: np.ndarray | None = None
    sxx: np.ndarray | None = None
    sxy: np.ndarray | None = None


def _cells(code: np.ndarray, n_cells: int, y: np.ndarray, x: np.ndarray | None) -> _Cell:
    bc = np.bincount
    c = _Cell(bc(code, minlength=n_cells).astype(np.float64), bc(code, y, n_cells), bc(code, y * y, n_cells))
    if x is not None:
        c.sx, c.sxx, c.sxy = bc(code, x, n_cells), bc(code, x * x, n_cells), bc(code, x * y, n_cells)
    return c


def compute_uplift(units: pl.DataFrame, spec: UpliftSpec, *, seed: int = 0,
                   notes: list[str] | None = None) -> UpliftResult:
    """The uplift table, SRM checks and (with a score) Qini curves from a unit table."""
    notes = list(notes or [])
    # outcomes: the numeric columns that are not ids, cost, pre-period values, segments or the score
    outcomes = [c for c in units.columns if c not in ("customer_id", "campaign", "arm", "cost")
                and not c.startswith(PRE) and c not in spec.segments and c != spec.score
                and units[c].dtype.is_numeric()]
    for name, (num, den) in spec.ratios.items():
        if num not in outcomes or den not in outcomes:
            raise ConfigError(f"[uplift] ratio {name}: {num} and {den} must both be outcomes "
                              f"(have {', '.join(outcomes)})")
    binary = {o: bool(units[o].cast(pl.Float64).fill_null(0.0).is_in([0.0, 1.0]).all()) for o in outcomes}
    boot = list(spec.bootstrap) if spec.bootstrap is not None else [o for o in outcomes if not binary[o]]
    boot = [o for o in boot if o in outcomes] if spec.replicates else []
    ratios = dict(spec.ratios) if spec.replicates else {}
    if spec.ratios and not spec.replicates:
        notes.append("replicates = 0: ratio metrics need the bootstrap and are not reported")
    campaigns = units["campaign"].unique().sort().to_list()
    if spec.campaigns:
        campaigns = [c for c in campaigns if c in spec.campaigns]
    rows: list[dict[str, Any]] = []
    srm_rows: list[dict[str, Any]] = []
    qini_parts: list[pl.DataFrame] = []
    qsum: list[dict[str, Any]] = []
    for ci, camp in enumerate(campaigns):
        u = units if len(campaigns) == 1 and units["campaign"].n_unique() == 1 else units.filter(
            pl.col("campaign") == camp)
        arm_codes, arms = _codes(u["arm"])
        if spec.control not in arms:
            notes.append(f"campaign {camp}: no '{spec.control}' arm (arms: {', '.join(arms)}); skipped")
            continue
        ctrl = arms.index(spec.control)
        n_arms = len(arms)
        y_all = {o: u[o].fill_null(0.0).to_numpy().astype(np.float64) for o in outcomes}
        x_all = {o: u[PRE + o].fill_null(0.0).to_numpy().astype(np.float64) if PRE + o in u.columns else None
                 for o in outcomes}
        cost = u["cost"].fill_null(0.0).to_numpy().astype(np.float64)
        if spec.cost_per_contact is not None:
            cost = np.where(arm_codes == ctrl, 0.0, spec.cost_per_contact)
        boot_overall = None
        breakdowns = [("overall", None)] + [(c, c) for c in spec.segments]
        for bi, (bname, col) in reversed(list(enumerate(breakdowns))):
            seg_codes, labels = (np.zeros(u.height, np.int64), ["all"]) if col is None else _codes(u[col])
            n_seg = len(labels)
            code = seg_codes * n_arms + arm_codes
            n_cells = n_seg * n_arms
            counts = np.bincount(code, minlength=n_cells).reshape(n_seg, n_arms)
            srm_p = _srm(camp, bname, labels, arms, counts, spec, srm_rows, notes)
            costs = np.bincount(code, cost, n_cells).reshape(n_seg, n_arms)
            reps = None
            if boot or ratios:
                if col is None and boot_overall is not None:
                    reps = boot_overall  # overall = sum over any segmentation's cells
                else:
                    reps = _bootstrap(code, n_cells, y_all, boot, ratios, (seed, ci, bi), spec.replicates)
                    if col is not None and boot_overall is None:
                        boot_overall = _collapse(reps, n_seg, n_arms)
            ctx = dict(camp=camp, bname=bname, labels=labels, arms=arms, ctrl=ctrl, counts=counts,
                       costs=costs, srm_p=srm_p)
            for o in outcomes:
                cell = _cells(code, n_cells, y_all[o], x_all[o])
                rows += _analytic(o, binary[o], cell, ctx, spec)
                if reps is not None and o in boot:
                    rows += _boot_rows(o, reps, ("mean", o, None), st._div(cell.s, cell.n), ctx, spec)
            for name, (num, den) in ratios.items():
                point = st._div(np.bincount(code, y_all[num], n_cells), np.bincount(code, y_all[den], n_cells))
                rows += _boot_rows(name, reps, ("ratio", num, den), point, ctx, spec)
        if spec.score:
            _qini(camp, u, arms, ctrl, arm_codes, outcomes, y_all, spec, qini_parts, qsum)
    table = _finish(rows, spec.srm_alpha)
    srm = pl.DataFrame(srm_rows, schema={"campaign": pl.String, "breakdown": pl.String, "segment": pl.String,
                                         "arm": pl.String, "n": pl.Int64, "observed_share": pl.Float64,
                                         "planned_share": pl.Float64, "chi2": pl.Float64, "p_value": pl.Float64,
                                         "flag": pl.Boolean})
    qini = pl.concat(qini_parts) if qini_parts else None
    qs = pl.DataFrame(qsum) if qsum else None
    flagged = srm.filter(pl.col("flag")).select("campaign", "breakdown", "segment").unique().height
    summary = {"campaigns": len(campaigns), "rows": table.height, "units": units.height,
               "outcomes": outcomes, "bootstrap": boot + list(ratios), "replicates": spec.replicates,
               "srm_failed": flagged, "window_days": spec.window_days}
    return UpliftResult(table, srm, qini, qs, tuple(notes), summary)


def _srm(camp: str, bname: str, labels: list[str], arms: list[str], counts: np.ndarray, spec: UpliftSpec,
         out: list[dict[str, Any]], notes: list[str]) -> np.ndarray:
    """SRM p-value per segment; against ``planned`` or, without a plan, the campaign's overall split."""
    if spec.planned:
        missing = [a for a in arms if a not in spec.planned]
        if missing:
            raise ConfigError(f"[uplift] planned has no share for arm(s) {', '.join(missing)} of campaign {camp}")
        # a planned arm with no rows at all is a mismatch too: count it as 0
        absent = [a for a, sh in spec.planned.items() if a not in arms and sh > 0]
        arms = arms + absent
        counts = np.hstack([counts, np.zeros((counts.shape[0], len(absent)), counts.dtype)])
        shares = np.array([spec.planned[a] for a in arms])
    else:
        tot = counts.sum(axis=0).astype(np.float64)
        shares = tot / tot.sum() if tot.sum() else np.full(len(arms), np.nan)
    p = np.full(len(labels), np.nan)
    for j, lab in enumerate(labels):
        if not spec.planned and bname == "overall":
            chi, pv = float("nan"), float("nan")  # nothing to compare with
        else:
            chi, pv = st.srm_test(counts[j], shares)
        p[j] = pv
        flag = bool(pv < spec.srm_alpha) if not math.isnan(pv) else False
        n = counts[j].sum()
        for a, arm in enumerate(arms):
            out.append({"campaign": camp, "breakdown": bname, "segment": lab, "arm": arm, "n": int(counts[j, a]),
                        "observed_share": float(counts[j, a] / n) if n else None,
                        "planned_share": float(shares[a]), "chi2": chi, "p_value": pv, "flag": flag})
        if flag:
            split = ", ".join(f"{arm} {counts[j, a] / n:.1%} (planned {shares[a]:.1%})" for a, arm in enumerate(arms))
            msg = (f"SAMPLE RATIO MISMATCH: campaign {camp}, {bname} = {lab}: p = {pv:.2g} < {spec.srm_alpha:g}; "
                   f"{split}. The assignment or the data is broken; do not trust these uplifts.")
            log.warning(msg)
            notes.append(msg)
    return p


def _bootstrap(code: np.ndarray, n_cells: int, y: dict[str, np.ndarray], boot: list[str],
               ratios: Mapping[str, tuple[str, str]], seed: tuple[int, ...], replicates: int) -> dict[str, Any]:
    """Poisson-bootstrap replicate sums per cell for the bootstrapped outcomes and ratio parts."""
    from centile.kernels.bootstrap import poisson_bootstrap_sums, replicate_seeds

    names = list(dict.fromkeys([*boot, *(c for pair in ratios.values() for c in pair)]))
    # rows whose bootstrapped outcomes are all 0 (non-responders) are collapsed into one
    # Poisson(count) weight per cell (see centile.kernels.bootstrap): same estimator, less work
    nonzero = np.zeros(code.size, bool)
    for nm in names:
        nonzero |= y[nm] != 0
    idx = np.flatnonzero(nonzero)
    sub = code[idx]
    # stable sort by cell; 16-bit keys take NumPy's radix sort (10x faster than a merge sort)
    order = idx[np.argsort(sub.astype(np.uint16) if n_cells <= 65536 else sub, kind="stable")]
    offsets = np.zeros(n_cells + 1, np.int64)
    np.cumsum(np.bincount(sub, minlength=n_cells), out=offsets[1:])
    zeros = np.bincount(code, minlength=n_cells) - np.diff(offsets)
    values = np.empty((len(names), order.size))
    for k, nm in enumerate(names):
        np.take(y[nm], order, out=values[k])
    sums = poisson_bootstrap_sums(values, offsets, replicate_seeds(list(seed), replicates), zeros=zeros)
    return {"names": names, "sums": sums}


def _collapse(reps: dict[str, Any], n_seg: int, n_arms: int) -> dict[str, Any]:
    s = reps["sums"]
    return {"names": reps["names"], "sums": s.reshape(s.shape[0], n_seg, n_arms, -1).sum(axis=1)}


def _analytic(o: str, binary: bool, c: _Cell, ctx: dict[str, Any], spec: UpliftSpec) -> list[dict[str, Any]]:
    n_seg, n_arms = len(ctx["labels"]), len(ctx["arms"])
    n, s, ss = (a.reshape(n_seg, n_arms) for a in (c.n, c.s, c.ss))
    m, v = st.moments(n, s, ss)
    k = ctx["ctrl"]
    out = []
    t = [a for a in range(n_arms) if a != k]
    if not t:
        return out
    ti = np.array(t)
    n1, n0 = n[:, ti], n[:, [k]] * np.ones((1, ti.size))
    m1, v1 = m[:, ti], v[:, ti]
    m0, v0 = np.broadcast_to(m[:, [k]], m1.shape), np.broadcast_to(v[:, [k]], m1.shape)
    if binary:
        d, lo, hi = st.newcombe_diff(s[:, ti], n1, np.broadcast_to(s[:, [k]], m1.shape), n0, spec.alpha)
        p = st.two_proportion_p(s[:, ti], n1, np.broadcast_to(s[:, [k]], m1.shape), n0)
        method = "newcombe"
    else:
        d, lo, hi, p = st.welch(m1, v1, n1, m0, v0, n0, spec.alpha)
        method = "welch"
    rel, rlo, rhi = st.relative_interval(m1, v1, n1, m0, v0, n0, spec.alpha)
    out += _emit(o, method, ctx, ti, n1, n0, m1, m0, d, lo, hi, rel, rlo, rhi, p, None, spec)
    if c.sx is not None:
        sx, sxx, sxy = (a.reshape(n_seg, n_arms) for a in (c.sx, c.sxx, c.sxy))
        theta = st.cuped_theta(n.sum(1), sx.sum(1), sxx.sum(1), s.sum(1), sxy.sum(1))[:, None]
        mx = st._div(sx.sum(1), n.sum(1))[:, None]
        mean_x = st._div(sx, n)
        vx = np.maximum(st._div(sxx - sx * mean_x, n - 1), 0.0)
        cxy = st._div(sxy - sx * st._div(s, n), n - 1)
        th = np.nan_to_num(theta)
        ma = m - th * (mean_x - mx)
        va = np.maximum(v - 2 * th * cxy + th * th * vx, 0.0)
        a1, a0 = ma[:, ti], np.broadcast_to(ma[:, [k]], m1.shape)
        w1, w0 = va[:, ti], np.broadcast_to(va[:, [k]], m1.shape)
        d, lo, hi, p = st.welch(a1, w1, n1, a0, w0, n0, spec.alpha)
        rel, rlo, rhi = st.relative_interval(a1, w1, n1, a0, w0, n0, spec.alpha)
        # variance of the difference, adjusted vs plain
        red = 1.0 - st._div(w1 / n1 + w0 / n0, v1 / n1 + v0 / n0)
        out += _emit(o, "cuped", ctx, ti, n1, n0, a1, a0, d, lo, hi, rel, rlo, rhi, p, red, spec)
    return out


def _emit(o, method, ctx, ti, n1, n0, m1, m0, d, lo, hi, rel, rlo, rhi, p, red, spec) -> list[dict[str, Any]]:
    out = []
    for j, lab in enumerate(ctx["labels"]):
        for a_i, a in enumerate(ti):
            inc = float(d[j, a_i] * n1[j, a_i])
            cost = float(ctx["costs"][j, a])
            roi = (inc - cost) / cost if (o == spec.margin and cost > 0 and not math.isnan(inc)) else None
            out.append({"campaign": ctx["camp"], "breakdown": ctx["bname"], "segment": lab,
                        "arm": ctx["arms"][a], "outcome": o, "method": method,
                        "n_arm": int(n1[j, a_i]), "n_control": int(n0[j, a_i]),
                        "mean_arm": m1[j, a_i], "mean_control": m0[j, a_i], "uplift": d[j, a_i],
                        "uplift_ci_low": lo[j, a_i], "uplift_ci_high": hi[j, a_i], "rel_uplift": rel[j, a_i],
                        "rel_ci_low": rlo[j, a_i], "rel_ci_high": rhi[j, a_i], "p_value": p[j, a_i],
                        "variance_reduction": None if red is None else red[j, a_i],
                        "incremental": None if method == "ratio" else inc, "contact_cost": cost, "roi": roi,
                        "srm_p_value": ctx["srm_p"][j]})
    return out


def _boot_rows(o: str, reps: dict[str, Any], kind: tuple[str, str, str | None], point: np.ndarray,
               ctx: dict[str, Any], spec: UpliftSpec) -> list[dict[str, Any]]:
    """Rows of one bootstrapped outcome (kind 'mean') or ratio metric (kind 'ratio')."""
    n_seg, n_arms = len(ctx["labels"]), len(ctx["arms"])
    sums = reps["sums"].reshape(reps["sums"].shape[0], n_seg, n_arms, -1)
    names = reps["names"]
    num = sums[..., 1 + names.index(kind[1])]
    den = sums[..., 0] if kind[0] == "mean" else sums[..., 1 + names.index(kind[2])]
    stat = st._div(num, den)  # (B, seg, arm)
    k = ctx["ctrl"]
    ti = np.array([a for a in range(n_arms) if a != k])
    if ti.size == 0:
        return []
    diff = stat[:, :, ti] - stat[:, :, [k]]
    relr = st._div(stat[:, :, ti], stat[:, :, [k]]) - 1.0
    lo, hi, p = st.percentile_interval(diff, spec.alpha)
    rlo, rhi, _ = st.percentile_interval(relr, spec.alpha)
    counts = ctx["counts"]
    n1 = counts[:, ti].astype(np.float64)
    n0 = np.broadcast_to(counts[:, [k]], n1.shape).astype(np.float64)
    m = point.reshape(n_seg, n_arms)  # the plain sample estimate (every weight 1)
    m1, m0 = m[:, ti], np.broadcast_to(m[:, [k]], (n_seg, ti.size))
    d = m1 - m0
    rel = st._div(m1, m0) - 1.0
    method = "bootstrap"
    rows = _emit(o, method, ctx, ti, n1, n0, m1, m0, d, lo, hi, rel, rlo, rhi, p, None, spec)
    if kind[0] == "ratio":
        for r in rows:
            r["incremental"] = None
            r["roi"] = None
    return rows


def _finish(rows: list[dict[str, Any]], srm_alpha: float) -> pl.DataFrame:
    schema = {c: pl.Float64 for c in UPLIFT_COLUMNS}
    schema.update({c: pl.String for c in ("campaign", "breakdown", "segment", "arm", "outcome", "method")})
    schema.update(n_arm=pl.Int64, n_control=pl.Int64, srm_flag=pl.Boolean)
    if not rows:
        return pl.DataFrame(schema=schema)
    df = pl.DataFrame(rows, schema={k: v for k, v in schema.items() if k not in ("p_holm", "p_bh", "srm_flag")},
                      nan_to_null=False)
    fam = ["campaign", "breakdown", "outcome", "method"]
    keys = df.select(fam).with_row_index("_i")
    gid = keys.group_by(fam, maintain_order=True).agg(pl.col("_i"))
    p = df["p_value"].to_numpy().astype(np.float64)
    holm, bh = np.full(p.size, np.nan), np.full(p.size, np.nan)
    for idx in gid["_i"].to_list():
        ii = np.asarray(idx, dtype=np.int64)
        holm[ii] = st.holm(p[ii])
        bh[ii] = st.benjamini_hochberg(p[ii])
    return df.with_columns(p_holm=pl.Series(holm), p_bh=pl.Series(bh),
                           srm_flag=(pl.col("srm_p_value") < srm_alpha).fill_null(False)).select(
        UPLIFT_COLUMNS)


def _qini(camp: str, u: pl.DataFrame, arms: list[str], ctrl: int, arm_codes: np.ndarray, outcomes: list[str],
          y: dict[str, np.ndarray], spec: UpliftSpec, parts: list[pl.DataFrame], summary: list[dict[str, Any]]) -> None:
    """Qini curve, AUUC and uplift@k of ``spec.score`` for each arm against control and outcome."""
    score = u[spec.score].cast(pl.Float64).to_numpy()
    for a, arm in enumerate(arms):
        if a == ctrl:
            continue
        keep = (arm_codes == a) | (arm_codes == ctrl)
        for o in outcomes:
            phi, q, up = st.qini_curve(score[keep], arm_codes[keep] == a, y[o][keep])
            parts.append(pl.DataFrame({"campaign": camp, "arm": arm, "outcome": o, "fraction": phi,
                                       "qini": q, "uplift_at": up}))
            area, coef = st.auuc(phi, q)
            row = {"campaign": camp, "arm": arm, "outcome": o, "auuc": area, "qini_coefficient": coef}
            for k in spec.uplift_at:
                row[f"uplift_at_{k:g}"] = float(np.interp(k, phi, np.nan_to_num(up)))
            summary.append(row)


# --------------------------------------------------------------------------- job


def uplift_from_session(s: Any, cfg: Config, segments: pl.DataFrame | None = None) -> UpliftResult:
    """The uplift job on an open session: ``[uplift] path`` (a flat results table) if set,
    else ``contacts`` + ``orders``; ``segments`` (customer_id + columns) for the breakdowns."""
    spec = parse_uplift_spec(cfg.section("uplift"))
    from .clubs import numba_threads

    if not spec.segments and segments is not None:
        spec = replace(spec, segments=auto_segments(segments))
    if spec.path:
        units, notes = units_from_table(spec, segments)
    else:
        units, notes = units_from_session(s, spec, segments)
    with numba_threads(cfg.threads):
        return compute_uplift(units, spec, seed=cfg.seed, notes=notes)


def write_uplift(res: UpliftResult, staging: Any) -> dict[str, int]:
    """Write ``uplift.parquet``, ``uplift_srm.parquet`` (and ``uplift_qini*.parquet``) into ``staging``."""
    rows = {}
    res.uplift.write_parquet(staging.path("uplift.parquet"), compression="zstd")
    rows["uplift"] = res.uplift.height
    res.srm.write_parquet(staging.path("uplift_srm.parquet"), compression="zstd")
    rows["uplift_srm"] = res.srm.height
    if res.qini is not None and res.qini_summary is not None:
        res.qini.write_parquet(staging.path("uplift_qini.parquet"), compression="zstd")
        res.qini_summary.write_parquet(staging.path("uplift_qini_summary.parquet"), compression="zstd")
        rows["uplift_qini"] = res.qini.height
        rows["uplift_qini_summary"] = res.qini_summary.height
    return rows


def read_segments(path: str | Path | None) -> pl.DataFrame | None:
    """A customer_id -> segment columns frame from a Parquet/CSV file (``--segments``)."""
    if path is None:
        return None
    p = Path(path)
    try:
        df = pl.read_csv(p) if p.suffix.lower() == ".csv" else pl.read_parquet(p)
    except Exception as exc:  # polars raises several error types for unreadable files
        raise InputError(f"--segments {p}: cannot read it: {exc}") from None
    if "customer_id" not in df.columns:
        raise InputError(f"--segments {p}: needs a customer_id column (has {', '.join(df.columns[:12])})")
    return df


def run_uplift(cfg: Config, out: str | Path, *, segments: str | Path | pl.DataFrame | None = None,
               progress: Any = None) -> tuple[Path, UpliftResult]:
    """``centile uplift``: compute and write the uplift tables atomically with a manifest."""
    from .features import manifest
    from .outputs import staged_output, write_manifest
    from .session import open_session

    seg = segments if isinstance(segments, pl.DataFrame) or segments is None else read_segments(segments)
    spec = parse_uplift_spec(cfg.section("uplift"))
    if spec.path:  # a flat results table: no other input is read
        import datetime as _dt

        from .outputs import fingerprint, versions

        with staged_output(out) as staging:
            with staging.timed("uplift"):
                res = uplift_from_session(None, cfg, seg)
            rows = write_uplift(res, staging)
            write_manifest(staging, {
                "job": "uplift", "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                "inputs": {"uplift": [fingerprint(Path(spec.path))]}, "config": cfg.as_dict(), "rows": rows,
                "summary": {"uplift": uplift_summary_doc(res)}, "versions": versions()})
            return staging.target, res
    with staged_output(out) as staging:
        with open_session(cfg, progress, only=("orders", "products", "contacts", "customers")) as s:
            if progress:
                progress("measuring uplift")
            with staging.timed("uplift"):
                res = uplift_from_session(s, cfg, seg)
            rows = write_uplift(res, staging)
            write_manifest(staging, manifest(s, "uplift", {"uplift": uplift_summary_doc(res)}, rows))
        return staging.target, res


def uplift_summary_doc(res: UpliftResult) -> dict[str, Any]:
    """JSON-friendly summary: counts, notes and the overall rows (for ``--json`` and the manifest)."""
    overall = res.uplift.filter(pl.col("breakdown") == "overall").select(
        "campaign", "arm", "outcome", "method", "n_arm", "n_control", "uplift", "uplift_ci_low",
        "uplift_ci_high", "rel_uplift", "p_value", "roi", "srm_p_value", "srm_flag")
    return {**res.summary, "notes": list(res.notes), "overall": overall.to_dicts()}


def print_uplift(console: Any, res: UpliftResult, *, methods: tuple[str, ...] = ("bootstrap", "newcombe", "welch"),
                 limit: int = 60) -> None:
    """Rich table of the overall rows (one method per outcome) and the notes (SRM failures in red)."""
    from rich.table import Table

    # one row per (campaign, arm, outcome): the first available method of ``methods``
    rank = {m: i for i, m in enumerate(methods)}
    df = (res.uplift.filter(pl.col("breakdown") == "overall", pl.col("method").is_in(list(methods)))
          .with_columns(_r=pl.col("method").replace_strict(rank, return_dtype=pl.Int32))
          .with_row_index("_i").sort("campaign", "arm", "_r", "_i")
          .unique(["campaign", "arm", "outcome"], keep="first", maintain_order=True).sort("_i"))
    t = Table(title=f"Uplift vs control (overall; {res.summary['units']:,} contacts, "
                    f"{res.summary['campaigns']} campaigns; all rows in uplift.parquet)", title_justify="left",
              padding=(0, 1), collapse_padding=True)
    for c in ("campaign", "arm", "outcome", "method", "n arm / ctrl", "uplift", "95 % CI", "rel", "p", "ROI",
              "SRM p"):
        t.add_column(c, justify="left" if c in ("campaign", "arm", "outcome", "method") else "right", no_wrap=True)

    def f(v: Any, pct: bool = False) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "—"
        return f"{v:+.1%}" if pct else f"{v:.3g}"

    for r in df.head(limit).iter_rows(named=True):
        srm = f(r["srm_p_value"]) + (" FAIL" if r["srm_flag"] else "")
        t.add_row(r["campaign"], r["arm"], r["outcome"], r["method"], f"{r['n_arm']:,} / {r['n_control']:,}",
                  f(r["uplift"]), f"{f(r['uplift_ci_low'])} .. {f(r['uplift_ci_high'])}", f(r["rel_uplift"], True),
                  f(r["p_value"]), f(r["roi"]), srm,
                  style="bold red" if r["srm_flag"] else None)
    console.print(t)
    if df.height > limit:
        console.print(f"... {df.height - limit} more rows in uplift.parquet")
    for note in res.notes:
        console.print(f"[bold red]{note}[/]" if note.startswith("SAMPLE RATIO") else f"Note: {note}",
                      highlight=False)
