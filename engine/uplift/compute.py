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
  from a Poisson bootstrap (``centile.kernels.bootstrap``; a unit's weight in
  replicate ``b`` is keyed by (seed, ``b``, customer id, campaign), so every
  breakdown sees the same resample and the replicate sums of any partitioning
  add up to the same totals), relative uplift from the same replicates;
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

Everything above is a function of per-cell sums (:mod:`centile.uplift.state`):
the session's units are built and reduced one customer-hash partition at a
time (:func:`uplift_from_session`), and the table is derived from the merged
sums at the end (:func:`finish_uplift`), so it does not depend on the
partition or thread count.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from centile.config import Config
from centile.errors import ConfigError
from centile.runtime import Progress
from centile.uplift import stats as st
from centile.uplift.inputs import (  # noqa: F401  (re-exported: the uplift API in one place)
    PRE,
    UpliftSpec,
    auto_segments,
    has_unit_cost,
    late_campaigns,
    parse_uplift_spec,
    read_segments,
    session_notes,
    session_units,
    units_from_session,
    units_from_table,
)
from centile.uplift.state import UpliftState, make_plan

log = logging.getLogger(__name__)

UPLIFT_COLUMNS = ("campaign", "breakdown", "segment", "arm", "outcome", "method", "n_arm", "n_control",
                  "mean_arm", "mean_control", "uplift", "uplift_ci_low", "uplift_ci_high", "rel_uplift",
                  "rel_ci_low", "rel_ci_high", "p_value", "p_holm", "p_bh", "variance_reduction",
                  "incremental", "contact_cost", "roi", "srm_p_value", "srm_flag")


@dataclass(frozen=True)
class UpliftResult:
    """Everything :func:`compute_uplift` found (Polars frames; see module docstring)."""

    uplift: pl.DataFrame
    srm: pl.DataFrame
    qini: pl.DataFrame | None
    qini_summary: pl.DataFrame | None
    notes: tuple[str, ...]
    summary: dict[str, Any]
    out: Path | None = None  # the folder written by run_uplift


# --------------------------------------------------------------------------- computation


@dataclass
class _Cell:
    """Per (segment, arm) sums of one outcome: n, sum, sum of squares (and pre-period sums)."""

    n: np.ndarray
    s: np.ndarray
    ss: np.ndarray
    sx: np.ndarray | None = None
    sxx: np.ndarray | None = None
    sxy: np.ndarray | None = None


def compute_uplift(units: pl.DataFrame, spec: UpliftSpec, *, seed: int = 0,
                   notes: list[str] | None = None) -> UpliftResult:
    """The uplift table, SRM checks and (with a score) Qini curves from a unit table.

    Parameters
    ----------
    units : polars.DataFrame
        One row per (customer, campaign): ``customer_id``, ``campaign``, ``arm``,
        ``cost``, numeric outcome columns, optional ``pre__<outcome>`` columns, the
        ``spec.segments`` columns and ``spec.score`` (see :mod:`centile.uplift.inputs`).
        Integer and decimal outcomes are summed exactly, floats in row order.
    spec : UpliftSpec
        The parsed ``[uplift]`` section.
    seed : int
        Seeds the bootstrap: replicate ``b``'s weight of a unit is keyed by (seed, ``b``,
        customer id, campaign).
    notes : list of str, optional
        Notes from building the units, carried into the result.

    Returns
    -------
    UpliftResult
        ``uplift`` (long table, columns ``UPLIFT_COLUMNS``), ``srm`` (per campaign,
        breakdown, segment and arm), ``qini`` / ``qini_summary`` (None without a
        score), ``notes`` (SRM failures first-class) and a JSON-friendly ``summary``.

    Raises
    ------
    ConfigError
        A ratio names a column that is not an outcome, or ``planned`` lacks an arm.
    """
    binary = {c: bool(units[c].cast(pl.Float64).fill_null(0.0).is_in([0.0, 1.0]).all())
              for c, t in units.schema.items() if t.is_numeric()}
    state = UpliftState(make_plan(units.schema, spec, seed, binary))
    state.add(units)
    return finish_uplift(state, spec, notes)


def _to_float(v: Any, scale: int | None) -> float:
    """An exact sum in units of 10**-scale as a float (correctly rounded), or a float sum as is."""
    if scale is None or not isinstance(v, int):
        return float(v)
    return v / 10**scale if scale else float(v)


def finish_uplift(state: UpliftState, spec: UpliftSpec, notes: list[str] | None = None) -> UpliftResult:
    """The uplift table, SRM checks and Qini curves from the merged state of every partition."""
    p = state.plan
    notes = list(notes or [])
    outcomes = list(p.outcomes)
    binary = {o: state.binary.get(o, True) for o in outcomes}
    if not spec.replicates:
        boot: list[str] = []
    elif spec.bootstrap is not None:
        boot = [o for o in spec.bootstrap if o in outcomes]
    else:
        boot = [o for o in outcomes if not binary[o]]
    ratios = dict(spec.ratios) if spec.replicates else {}
    if spec.ratios and not spec.replicates:
        notes.append("replicates = 0: ratio metrics need the bootstrap and are not reported")
    campaigns = sorted({camp for camp, _b in state.cells})
    rows: list[dict[str, Any]] = []
    srm_rows: list[dict[str, Any]] = []
    qini_parts: list[pl.DataFrame] = []
    qsum: list[dict[str, Any]] = []
    for camp in campaigns:
        arms = sorted({a for _s, a in state.cells[(camp, "overall")]})
        if spec.control not in arms:
            notes.append(f"campaign {camp}: no '{spec.control}' arm (arms: {', '.join(arms)}); skipped")
            continue
        ctrl = arms.index(spec.control)
        n_arms = len(arms)
        raw_overall = None
        for bname, _col in reversed(p.breakdowns):
            blk = state.cells.get((camp, bname), {})
            labels = sorted({s for s, _a in blk})
            n_seg = len(labels)
            grid = [blk.get((s, a)) for s in labels for a in arms]

            def stat(name: str, scale: int | None, grid: list = grid) -> np.ndarray:
                return np.array([_to_float(c[name], scale) if c is not None else 0.0 for c in grid], np.float64)

            counts = np.array([c["n"] if c is not None else 0 for c in grid], np.int64).reshape(n_seg, n_arms)
            srm_p = _srm(camp, bname, labels, arms, counts, spec, srm_rows, notes)
            if spec.cost_per_contact is not None:
                costs = counts * np.where(np.arange(n_arms) == ctrl, 0.0, spec.cost_per_contact)[None, :]
            else:
                costs = stat("cost", state.scales["cost"]).reshape(n_seg, n_arms)
            reps = None
            if boot or ratios:
                if bname == "overall" and raw_overall is not None:
                    raw = raw_overall  # overall = the sum over any segmentation's cells (same weights)
                else:
                    raw = _replicates(state, camp, bname, grid, labels, arms)
                    if bname != "overall" and raw_overall is None:
                        raw_overall = raw.reshape(raw.shape[0], n_seg, n_arms, -1).sum(axis=1)
                reps = {"names": list(p.boot), "sums": _replicate_floats(state, raw)}
            ctx = dict(camp=camp, bname=bname, labels=labels, arms=arms, ctrl=ctrl, counts=counts,
                       costs=costs, srm_p=srm_p)
            n = counts.reshape(-1).astype(np.float64)
            for o in outcomes:
                sc = state.scales[o]
                cell = _Cell(n, stat(f"{o}:s", sc), stat(f"{o}:ss", _sum_scale(sc, sc)))
                if o in p.pre:
                    sx = state.scales[p.pre[o]]
                    cell.sx, cell.sxx = stat(f"{o}:sx", sx), stat(f"{o}:sxx", _sum_scale(sx, sx))
                    cell.sxy = stat(f"{o}:sxy", _sum_scale(sx, sc))
                rows += _analytic(o, binary[o], cell, ctx, spec)
                if reps is not None and o in boot:
                    rows += _boot_rows(o, reps, ("mean", o, None), st.safe_div(cell.s, cell.n), ctx, spec)
            for name, (num, den) in ratios.items():
                point = st.safe_div(stat(f"{num}:s", state.scales[num]), stat(f"{den}:s", state.scales[den]))
                rows += _boot_rows(name, reps, ("ratio", num, den), point, ctx, spec)
        if p.score and camp in state.qini:
            _qini(camp, state.qini_units(camp), arms, ctrl, outcomes, spec, qini_parts, qsum)
    table = _finish(rows, spec.srm_alpha)
    srm = pl.DataFrame(srm_rows, schema={"campaign": pl.String, "breakdown": pl.String, "segment": pl.String,
                                         "arm": pl.String, "n": pl.Int64, "observed_share": pl.Float64,
                                         "planned_share": pl.Float64, "chi2": pl.Float64, "p_value": pl.Float64,
                                         "flag": pl.Boolean})
    qini = pl.concat(qini_parts) if qini_parts else None
    qs = pl.DataFrame(qsum) if qsum else None
    flagged = srm.filter(pl.col("flag")).select("campaign", "breakdown", "segment").unique().height
    summary = {"campaigns": len(campaigns), "rows": table.height, "units": state.units,
               "outcomes": outcomes, "bootstrap": boot + list(ratios), "replicates": spec.replicates,
               "srm_failed": flagged, "window_days": spec.window_days}
    return UpliftResult(table, srm, qini, qs, tuple(notes), summary)


def _sum_scale(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else a + b


def _replicates(state: UpliftState, camp: str, bname: str, grid: list, labels: list[str],
                arms: list[str]) -> np.ndarray:
    """The merged replicate sums of a breakdown's cells (segment-major, arm-minor), with the
    weights of the unlisted rows (all bootstrapped outcomes 0) drawn per cell now, from the
    merged counts: one Poisson(count) per cell and replicate."""
    from centile.kernels.bootstrap import poisson_count_draws
    from centile.uplift.holdout import salt_seed

    p = state.plan
    blk = state.boot.get((camp, bname), {})
    exact = all(state.scales[c] is not None for c in p.boot)
    raw = np.zeros((p.seeds.size, len(grid), len(p.boot) + 1), np.int64 if exact else np.float64)
    cells = [(s, a) for s in labels for a in arms]
    for j, cell in enumerate(cells):
        if cell in blk:
            raw[:, j, :] = blk[cell]
    zeros = np.array([c["n"] - c["listed"] if c is not None else 0 for c in grid], np.int64)
    raw[..., 0] += poisson_count_draws(p.seeds, zeros, salt_seed(f"{camp}\x1f{bname}", p.seed))
    return raw


def _replicate_floats(state: UpliftState, raw: np.ndarray) -> np.ndarray:
    """Replicate sums as floats: the weight totals as they are, each outcome divided by its scale."""
    out = raw.astype(np.float64)
    for k, c in enumerate(state.plan.boot):
        sc = state.scales[c]
        if sc:
            out[..., 1 + k] /= 10.0**sc
    return out


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
                   f"{split}. The assignment or the data is broken, or this breakdown was measured after the "
                   f"campaign (then the campaign moved customers between its segments); do not trust these "
                   f"uplifts.")
            log.warning(msg)
            notes.append(msg)
    return p


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
        mx = st.safe_div(sx.sum(1), n.sum(1))[:, None]
        mean_x = st.safe_div(sx, n)
        vx = np.maximum(st.safe_div(sxx - sx * mean_x, n - 1), 0.0)
        cxy = st.safe_div(sxy - sx * st.safe_div(s, n), n - 1)
        th = np.nan_to_num(theta)
        ma = m - th * (mean_x - mx)
        va = np.maximum(v - 2 * th * cxy + th * th * vx, 0.0)
        a1, a0 = ma[:, ti], np.broadcast_to(ma[:, [k]], m1.shape)
        w1, w0 = va[:, ti], np.broadcast_to(va[:, [k]], m1.shape)
        d, lo, hi, p = st.welch(a1, w1, n1, a0, w0, n0, spec.alpha)
        rel, rlo, rhi = st.relative_interval(a1, w1, n1, a0, w0, n0, spec.alpha)
        # variance of the difference, adjusted vs plain
        red = 1.0 - st.safe_div(w1 / n1 + w0 / n0, v1 / n1 + v0 / n0)
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
    stat = st.safe_div(num, den)  # (B, seg, arm)
    k = ctx["ctrl"]
    ti = np.array([a for a in range(n_arms) if a != k])
    if ti.size == 0:
        return []
    diff = stat[:, :, ti] - stat[:, :, [k]]
    relr = st.safe_div(stat[:, :, ti], stat[:, :, [k]]) - 1.0
    lo, hi, p = st.percentile_interval(diff, spec.alpha)
    rlo, rhi, _ = st.percentile_interval(relr, spec.alpha)
    counts = ctx["counts"]
    n1 = counts[:, ti].astype(np.float64)
    n0 = np.broadcast_to(counts[:, [k]], n1.shape).astype(np.float64)
    m = point.reshape(n_seg, n_arms)  # the plain sample estimate (every weight 1)
    m1, m0 = m[:, ti], np.broadcast_to(m[:, [k]], (n_seg, ti.size))
    d = m1 - m0
    rel = st.safe_div(m1, m0) - 1.0
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


def _qini(camp: str, u: pl.DataFrame, arms: list[str], ctrl: int, outcomes: list[str], spec: UpliftSpec,
          parts: list[pl.DataFrame], summary: list[dict[str, Any]]) -> None:
    """Qini curve, AUUC and uplift@k of the score for each arm against control and outcome
    (``u``: one campaign's units with ``arm``, ``score`` and the outcomes as floats)."""
    score = u["score"].to_numpy()
    arm_codes = u["arm"].replace_strict({a: i for i, a in enumerate(arms)}, return_dtype=pl.Int64).to_numpy()
    for a, arm in enumerate(arms):
        if a == ctrl:
            continue
        keep = (arm_codes == a) | (arm_codes == ctrl)
        for o in outcomes:
            y = u[o].to_numpy()
            phi, q, up = st.qini_curve(score[keep], arm_codes[keep] == a, y[keep])
            parts.append(pl.DataFrame({"campaign": camp, "arm": arm, "outcome": o, "fraction": phi,
                                       "qini": q, "uplift_at": up}))
            area, coef = st.auuc(phi, q)
            row = {"campaign": camp, "arm": arm, "outcome": o, "auuc": area, "qini_coefficient": coef}
            for k in spec.uplift_at:
                row[f"uplift_at_{k:g}"] = float(np.interp(k, phi, np.nan_to_num(up)))
            summary.append(row)


# --------------------------------------------------------------------------- job


def uplift_from_session(s: Any, cfg: Config, segments: pl.DataFrame | None = None,
                        progress: Progress | None = None, orders: Any = None) -> UpliftResult:
    """The uplift job on an open session: ``[uplift] path`` (a flat results table, read whole)
    if set, else ``contacts`` + ``orders`` per customer-hash partition (``s.partitioning()``):
    each partition's units are reduced to mergeable state (:mod:`centile.uplift.state`) and
    dropped before the next, so the table is the same for any partition and thread count.
    ``segments`` (customer_id + columns) for the breakdowns. ``orders``: a refresh state's order
    totals (:class:`centile.refresh.order_totals.StateOrders`) read instead of the ``orders``
    view (``centile run --state``): the same units."""
    from centile.backend.partitions import PerCustomer
    from centile.runtime import numba_threads

    spec = parse_uplift_spec(cfg.section("uplift"))
    if not spec.segments and segments is not None:
        spec = replace(spec, segments=auto_segments(segments))
    if spec.path:
        units, notes = units_from_table(spec, segments)
        with numba_threads(cfg.threads):
            return compute_uplift(units, spec, seed=cfg.seed, notes=notes)
    notes = session_notes(s, spec)
    late = late_campaigns(s, spec)
    if late:
        notes.append(f"campaign(s) {', '.join(late)} left out: their {spec.window_days}-day response "
                     f"window ends after as_of {s.as_of}")
    # on a cluster, enough partitions for every worker (their count does not change the result)
    parts = s.work_partitions() if s.distributed() else s.partitioning()
    with numba_threads(cfg.threads):
        # each partition's units reduced to its state and merged in partition order (here, one
        # partition at a time, or on a cluster's workers)
        # a partition's units join only its own customers' segments
        seg = PerCustomer(segments) if segments is not None else None
        if orders is None:
            state = s.map_reduce(parts, "uplift: units", _uplift_state_of_partition, _merged_states, spec,
                                 seg, late, cfg.seed, progress=progress, tables=UNIT_TABLES)
        else:  # the order rows from the state: the lines are not read
            with orders.reading():
                state = s.map_reduce(parts, "uplift: units", _uplift_state_of_partition, _merged_states, spec,
                                     seg, late, cfg.seed, (parts, orders, has_unit_cost(s)), progress=progress,
                                     tables=tuple(t for t in UNIT_TABLES if t != "orders"))
        return finish_uplift(state, spec, notes)


#: the input tables of a partition's unit table (:func:`session_units`)
UNIT_TABLES = ("contacts", "orders", "products", "customers")


def _merged_states(a: UpliftState, b: UpliftState) -> UpliftState:
    a.merge(b)
    return a


def _uplift_state_of_partition(s: Any, part: int, spec: UpliftSpec, segments: pl.DataFrame | None,
                               late: list[str], seed: int, state_orders: tuple[Any, Any, bool] | None = None
                               ) -> UpliftState:
    """One partition's units, reduced to mergeable state and dropped (``state_orders``: the
    partitioning, a refresh state's order totals and whether there is a unit cost)."""
    from centile.backend import partitions

    if state_orders is None:
        units = session_units(s, spec, segments, late)
    else:
        parts, orders, has_cost = state_orders
        with orders.registered(s, parts, part) as rows:
            units = session_units(s, spec, segments, late, rows, has_cost)
    if partitions.observe is not None:
        partitions.observe("uplift", part, units)
    # response is 0/1 by construction; every other outcome is a candidate
    state = UpliftState(make_plan(units.schema, spec, seed, {"response": True}), sort_by_customer=True)
    state.add(units)
    return state


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


def uplift_summary_doc(res: UpliftResult) -> dict[str, Any]:
    """JSON-friendly summary: counts, notes and the overall rows (for ``--json`` and the manifest)."""
    overall = res.uplift.filter(pl.col("breakdown") == "overall").select(
        "campaign", "arm", "outcome", "method", "n_arm", "n_control", "uplift", "uplift_ci_low",
        "uplift_ci_high", "rel_uplift", "p_value", "roi", "srm_p_value", "srm_flag")
    return {**res.summary, "notes": list(res.notes), "overall": overall.to_dicts()}


#: the interval shown per outcome when several methods exist (the first available)
PREFERRED_METHODS = ("bootstrap", "newcombe", "welch")


def preferred_rows(uplift: pl.DataFrame, methods: tuple[str, ...] = PREFERRED_METHODS) -> pl.DataFrame:
    """One row per (campaign, breakdown, segment, arm, outcome) of ``uplift.parquet``: the first
    available method of ``methods``, in the table's own row order."""
    rank = {m: i for i, m in enumerate(methods)}
    return (uplift.filter(pl.col("method").is_in(list(methods)))
            .with_columns(_r=pl.col("method").replace_strict(rank, return_dtype=pl.Int32))
            .with_row_index("_i").sort("campaign", "breakdown", "segment", "arm", "outcome", "_r", "_i")
            .unique(["campaign", "breakdown", "segment", "arm", "outcome"], keep="first", maintain_order=True)
            .sort("_i").drop("_r", "_i"))
