"""Customer steering: affinity → budget per customer → contact plan with a certified gap.

Pure functions over an open session and frames; the stage and the job call
:func:`compute_steering`.

* Budget per customer over the horizon (the ``[clv] horizon``, split into
  ``[steering] periods``): forecast revenue = CLV's discounted expected revenue
  (BG/NBD or Pareto/NBD expected purchases x Gamma-Gamma expected spend, monthly
  discounted: ``clv / [clv] margin``); cost of goods = forecast x the customer's
  cost-of-goods ratio (from ``unit_cost`` of their past lines; the overall ratio of
  costed lines, or ``[steering] cost_ratio`` without ``unit_cost``); target margin =
  ``target_margin`` x forecast; budget = max(0, forecast - cost of goods - target
  margin), floored to integer ``cost_unit``s. Customers of the customers table
  without orders (not in ``clv``) get the median budget of the one-time buyers
  (clv frequency 0), the nearest group with history.
* Value of a contact: affinity[i, m] x expected order margin[i] (expected order
  value x (1 - cost ratio)) x seasonality[t] - cost[m].
* Eligibility: global holdout members ([holdout] global_share) are never contacted;
  ``[steering.media.<m>] audience`` names a boolean customers column (opt-in).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from centile.errors import InputError
from centile.steering.affinity import Affinity, fit_affinity
from centile.steering.history import History, OrderHistory
from centile.steering.settings import Medium, SteeringSettings
from centile.steering.solve import Solution, solve_plan
from centile.steering.values import Factored, Values, as_values, blocks

log = logging.getLogger(__name__)

NEVER = 1_000_000  # periods since the last contact of a customer never contacted


@dataclass(frozen=True)
class SteeringResult:
    """Outputs of :func:`compute_steering` (``out``: the folder written by the job)."""

    affinity: pl.DataFrame | Affinity
    priors: pl.DataFrame
    budgets: pl.DataFrame
    plan: pl.DataFrame
    summary_table: pl.DataFrame
    solution: Solution
    summary: dict[str, Any]
    notes: tuple[str, ...] = ()
    contacts: pl.DataFrame | None = None
    out: Path | None = field(default=None, compare=False)


def media_from_contacts(s: Any) -> tuple[Medium, ...]:
    """Without ``[steering.media.*]``: every medium of the contacts table at its median
    treatment cost (media without a positive cost are left out)."""
    from centile.backend.session import add_by_key

    # how many contacts of each (medium, cost): counts add up exactly across partitions (on a cluster
    # on the workers), and the median is read off them
    counts = s.everywhere("steering: media", _cost_counts, add_by_key, tables=("contacts",))
    costs: dict[str, list[tuple[float, int]]] = {}
    for (medium, cost), n in counts.items():
        costs.setdefault(medium, []).append((cost, n))
    return tuple(Medium(m, median_of_counts(costs[m])) for m in sorted(costs))


def _cost_counts(s: Any) -> dict[tuple[str, float], int]:
    return {(m, c): n for m, c, n in s.con.execute(
        "SELECT CAST(medium AS VARCHAR), CAST(cost AS DOUBLE), count(*) FROM contacts "
        "WHERE coalesce(\"group\", 'treatment') <> 'control' AND medium IS NOT NULL AND cost > 0 "
        "GROUP BY 1, 2").fetchall()}


def median_of_counts(counts: list[tuple[float, int]]) -> float:
    """The median of the values ``counts`` holds (value, how many times), as SQL's ``median``: the
    middle value, or the mean of the two middle ones for an even count."""
    values = sorted(counts)
    n = sum(c for _, c in values)

    def at(i: int) -> float:  # the i-th value (0-based) in sorted order
        for v, c in values:
            if i < c:
                return v
            i -= c
        raise IndexError(i)

    return at(n // 2) if n % 2 else (at(n // 2 - 1) + at(n // 2)) / 2


def cost_units(media: tuple[Medium, ...], unit: float) -> np.ndarray:
    """Media costs in integer units of ``unit`` (at least 1)."""
    return np.array([max(1, round(m.cost / unit)) for m in media], np.int64)


def budget_table(clv: pl.DataFrame, spend: pl.DataFrame | None, st: SteeringSettings, *,
                 clv_margin: float = 1.0, model: str = "bgnbd+gamma_gamma",
                 new_customers: pl.Series | None = None) -> tuple[pl.DataFrame, list[str]]:
    """Budget per customer (see the module docstring).

    ``clv``: customer_id, frequency, expected_order_value, clv (``clv.parquet``);
    ``spend``: customer_id, revenue, costed_revenue, cost (``sql/steering_spend.sql``) or None.
    Returns customer_id, forecast_revenue, cost_ratio, cost_of_goods, target_margin,
    budget, budget_units, expected_order_margin, model, sorted by customer_id.
    """
    notes: list[str] = []
    df = clv.select("customer_id", "frequency", "expected_order_value", "clv")
    if spend is not None and spend["costed_revenue"].sum() > 0:
        # exactly rounded sums (math.fsum): the spend rows come from a parallel GROUP BY in no fixed
        # order, and a float sum in row order changed the last bits of the fallback ratio between runs
        overall = (math.fsum(spend["cost"].fill_null(0.0).to_numpy())
                   / math.fsum(spend["costed_revenue"].fill_null(0.0).to_numpy()))
        df = df.join(spend.select("customer_id", "costed_revenue", "cost"), on="customer_id", how="left")
        ratio = (pl.when(pl.col("costed_revenue") > 0).then(pl.col("cost") / pl.col("costed_revenue"))
                 .otherwise(overall).clip(0.0, 1.0))
        df = df.with_columns(cost_ratio=ratio).drop("costed_revenue", "cost")
    else:
        notes.append(f"no unit_cost in orders: cost of goods = [steering] cost_ratio = {st.cost_ratio}")
        df = df.with_columns(cost_ratio=pl.lit(st.cost_ratio))
    margin = clv_margin if clv_margin > 0 else 1.0
    df = df.with_columns(forecast_revenue=(pl.col("clv") / margin).fill_nan(0.0).fill_null(0.0).clip(0.0))
    df = df.with_columns(cost_of_goods=pl.col("forecast_revenue") * pl.col("cost_ratio"),
                         target_margin=pl.col("forecast_revenue") * st.target_margin)
    df = df.with_columns(budget=(pl.col("forecast_revenue") - pl.col("cost_of_goods") - pl.col("target_margin"))
                         .clip(0.0),
                         expected_order_margin=(pl.col("expected_order_value") * (1 - pl.col("cost_ratio")))
                         .fill_nan(0.0).fill_null(0.0),
                         model=pl.lit(model))
    if new_customers is not None:
        fresh = new_customers.filter(~new_customers.is_in(df["customer_id"].implode()))
        if fresh.len():
            base = df.filter(pl.col("frequency") == 0)
            base = base if base.height else df
            med = {c: float(base[c].median() or 0.0) for c in
                   ("forecast_revenue", "cost_ratio", "cost_of_goods", "target_margin", "budget",
                    "expected_order_margin", "expected_order_value")}
            new = pl.DataFrame({"customer_id": fresh, "frequency": pl.Series([None] * fresh.len(), dtype=pl.Float64),
                                **{c: [v] * fresh.len() for c, v in med.items()},
                                "clv": [None] * fresh.len(), "model": ["new: median of one-time buyers"] * fresh.len()})
            df = pl.concat([df, new.select(df.columns).cast(dict(df.schema))])
            notes.append(f"{fresh.len():,} customers without orders get the median budget of the one-time buyers")
    # integer cost units: floor, with a relative epsilon so 1.0 / 0.01 is 100 units, not 99
    df = df.with_columns(budget_units=(pl.col("budget") / st.cost_unit * (1 + 1e-12)).floor().cast(pl.Int64))
    return (df.select("customer_id", "forecast_revenue", "cost_ratio", "cost_of_goods", "target_margin", "budget",
                      "budget_units", "expected_order_margin", "model").sort("customer_id"), notes)


def _since(responses: pl.DataFrame, ids: pl.Series, as_of: dt.date, period_days: float) -> np.ndarray:
    last = (responses.filter(~pl.col("control")).group_by("customer_id").agg(pl.col("last_sent").max()))
    a = pl.DataFrame({"customer_id": ids}).join(last, on="customer_id", how="left")
    start = dt.datetime.combine(as_of, dt.time())
    age = a.select((pl.lit(start) - pl.col("last_sent")).dt.total_seconds() / 86400.0)[:, 0].to_numpy()
    since = np.floor(np.nan_to_num(age, nan=np.inf) / period_days) + 1
    return np.where(np.isfinite(since), np.minimum(since, NEVER), NEVER).astype(np.int64)


def contact_values(budgets: pl.DataFrame, affinity: Affinity | np.ndarray, media: tuple[Medium, ...],
                   st: SteeringSettings, eligible: np.ndarray) -> Factored:
    """v[i, m, t] = affinity x expected order margin x season[t] - cost[m]; NaN where not eligible.

    ``budgets`` sorted by customer_id; ``affinity``: the fitted :class:`Affinity` of the same
    customers (its scores computed one block of customers at a time) or their (n, M) scores;
    ``eligible`` (n, M) bool. Returned as its factors (:class:`~centile.steering.values.Factored`:
    (n, M) rather than (n, M, T)); the solver builds the values one block of customers at a
    time, with the same operations as the dense array (``.block(0, n)``).
    """
    n, M = budgets.height, len(media)
    om = budgets["expected_order_margin"].to_numpy()
    scale = np.empty((n, M))
    for a, b in blocks(n):
        aff = affinity.scores(a, b) if isinstance(affinity, Affinity) else affinity[a:b]
        scale[a:b] = aff * om[a:b, None]
    season = np.asarray(st.season(), float)
    cost = np.array([m.cost for m in media])
    scale[~eligible] = np.nan
    return Factored(scale, season, cost)


def compute_steering(s: Any, st: SteeringSettings, clv: pl.DataFrame, *, clv_horizon_days: float,
                     clv_margin: float = 1.0, global_holdout: pl.Series | None = None,
                     segments: pl.DataFrame | None = None, progress: Any = None,
                     history: History | None = None) -> SteeringResult:
    """Affinity, budgets and the plan from an open session and the CLV frame.

    Parameters
    ----------
    s : Session
        Needs ``orders`` and ``contacts`` (with ``medium``); ``customers`` adds new
        customers and audiences.
    clv : DataFrame
        The CLV stage's frame (``clv.parquet``).
    clv_horizon_days : float
        The CLV horizon in days; the plan's horizon.
    global_holdout : Series, optional
        Ids of the global holdout members: never contacted.
    segments : DataFrame, optional
        customer_id and ``rfm_segment`` for the summary by segment.
    history : History, optional
        Where the spend, category spend and order times come from (default: the ``orders``
        view of ``s``, :class:`~centile.steering.history.OrderHistory`); ``centile run --state``
        passes the refresh state's.
    """
    say = progress or (lambda _m: None)
    history = history or OrderHistory(s)
    notes: list[str] = []
    if not s.has("contacts"):
        raise InputError("steering needs the contacts table (customer_id, campaign_id, sent_ts, medium, cost, "
                         "group) for medium affinity")
    if not s.has("contacts", "medium"):
        raise InputError("steering: the contacts table has no medium column; add it (catalogue, email, ...)")
    media = st.media or media_from_contacts(s)
    if not st.media:
        notes.append("media from the contacts table at their median cost: " +
                     ", ".join(f"{m.name} {m.cost:g}" for m in media))
    if not media:
        raise InputError("steering: no media: add [steering.media.<name>] cost = ... or contacts with medium and "
                         "a positive cost")
    period_days = clv_horizon_days / st.periods
    say("steering: budgets")
    # in one order whatever order the rows were read in (the float sums below depend on it)
    spend = history.spend().sort("customer_id")
    new = None
    if s.has("customers"):
        new = s.frame("SELECT DISTINCT customer_id FROM customers WHERE customer_id IS NOT NULL")["customer_id"]
    budgets, bnotes = budget_table(clv, spend, st, clv_margin=clv_margin, new_customers=new)
    notes.extend(bnotes)
    ids = budgets["customer_id"]
    say("steering: medium affinity (empirical Bayes)")
    resp = history.responses(s.as_of, st.response_days).sort("customer_id", "medium", "control")
    shares = None
    if any(m.categories for m in media):
        cat = history.category_spend().sort("customer_id", "category")
        total = cat.group_by("customer_id").agg(total=pl.col("revenue").sum())
        shares = {}
        for m in media:
            if not m.categories:
                continue
            inm = (cat.filter(pl.col("category").is_in(list(m.categories))).group_by("customer_id")
                   .agg(inm=pl.col("revenue").sum()))
            overall = float(inm["inm"].sum()) / max(float(total["total"].sum()), 1e-12)
            a = (pl.DataFrame({"customer_id": ids}).join(total, on="customer_id", how="left")
                 .join(inm, on="customer_id", how="left"))
            shares[m.name] = a.select(
                pl.when(pl.col("total") > 0).then(pl.col("inm").fill_null(0.0) / pl.col("total"))
                .otherwise(overall).clip(0.0, 1.0))[:, 0].to_numpy()
    labels = prior_segments(s, st, ids, segments)
    aff = fit_affinity(resp, ids, [m.name for m in media], shares, labels, st.prior_min_customers)
    priors = aff.priors
    if labels is not None:
        own = priors.filter(pl.col("segment").is_not_null())
        notes.append(f"priors by {st.prior_by}: {int((~own['fallback']).sum())} of {own.height} (medium, arm, "
                     f"segment) priors fitted, the rest use the medium's prior (fewer than "
                     f"{st.prior_min_customers} contacted customers, or no convergence)")
    eligible = np.ones((ids.len(), len(media)), bool)
    if global_holdout is not None:
        eligible[ids.is_in(global_holdout.implode()).to_numpy()] = False
    for j, m in enumerate(media):
        if m.audience:
            if not has_column(s, "customers", m.audience):
                raise InputError(f"[steering.media.{m.name}] audience = {m.audience!r}: the customers table has no "
                                 "such column; add it (true = may be contacted) or remove the key")
            a = s.frame(f'SELECT customer_id, CAST({_q(m.audience)} AS BOOLEAN) AS ok FROM customers')
            ok = pl.DataFrame({"customer_id": ids}).join(a, on="customer_id", how="left")["ok"].fill_null(False)
            eligible[:, j] &= ok.to_numpy()
    values = contact_values(budgets, aff, media, st, eligible)
    since = _since(resp, ids, s.as_of, period_days)
    del resp, spend, eligible  # per-customer frames the solve does not read: not held through it
    say(f"steering: planning {ids.len():,} customers x {len(media)} media x {st.periods} periods")
    return plan_from_values(ids, values, media, st, budgets, since, aff, priors, notes, segments, period_days)


def prior_segments(s: Any, st: SteeringSettings, ids: pl.Series,
                   segments: pl.DataFrame | None) -> pl.Series | None:
    """The ``[steering] prior_by`` segment of every customer of ``ids`` (None without the key):
    a column of the segments frame (``rfm_segment``, ...) when the segments stage ran, else a
    column of the customers table."""
    col = st.prior_by
    if col is None:
        return None
    if segments is not None and col in segments.columns:
        src = segments.select("customer_id", pl.col(col).cast(pl.String).alias("_seg"))
    elif has_column(s, "customers", col):
        src = s.frame(f"SELECT customer_id, CAST({_q(col)} AS VARCHAR) AS _seg FROM customers")
    else:
        where = "the segments stage's columns or " if segments is not None else ""
        raise InputError(f"[steering] prior_by = {col!r}: no such column in {where}the customers table; name a "
                         "customers column, or use rfm_segment in `centile run` with the segments stage")
    src = src.unique("customer_id", keep="first").with_columns(pl.col("customer_id").cast(ids.dtype))
    return pl.DataFrame({"customer_id": ids}).join(src, on="customer_id", how="left")["_seg"]


def has_column(s: Any, table: str, col: str) -> bool:
    """Does the table's view have the column (a contract column present in the inputs, or
    any other column the view passes through)?"""
    if not s.has(table):
        return False
    reg = s.tables[table]
    if col in reg.columns:
        return reg.has(col)
    return col in s.frame(f"SELECT * FROM {table} LIMIT 0").columns


def _q(name: str) -> str:
    from centile.io.sqlfiles import ident

    return ident(name)


def plan_from_values(ids: pl.Series, values: np.ndarray | Values, media: tuple[Medium, ...], st: SteeringSettings,
                     budgets: pl.DataFrame, since: np.ndarray, aff: pl.DataFrame | Affinity, priors: pl.DataFrame,
                     notes: list[str], segments: pl.DataFrame | None, period_days: float | None) -> SteeringResult:
    """Solve and tabulate (customers sorted by id, so the plan does not depend on input order)."""
    vals = as_values(values)
    costs = cost_units(media, st.cost_unit)
    for m, c in zip(media, costs, strict=True):
        if abs(c * st.cost_unit - m.cost) > 1e-9 * max(1.0, m.cost):
            notes.append(f"{m.name}: cost {m.cost:g} rounded to {c} units of {st.cost_unit:g}")
    capacity = np.array([-1 if m.capacity is None else m.capacity for m in media], np.int64)
    pcap = np.array([-1 if m.capacity_per_period is None else m.capacity_per_period for m in media], np.int64)
    mcap = np.array([-1 if m.cap is None else m.cap for m in media], np.int64)
    gb = None if st.global_budget is None else int(math.floor(st.global_budget / st.cost_unit * (1 + 1e-12)))
    sol = solve_plan(vals, costs, budgets["budget_units"].to_numpy(), since, cap=st.cap, gap=st.gap,
                     global_budget=gb, capacity=capacity, iterations=st.iterations,
                     medium_cap=mcap if (mcap >= 0).any() else None,
                     period_capacity=pcap if (pcap >= 0).any() else None)
    ii, tt = np.nonzero(sol.medium >= 0)
    mm = sol.medium[ii, tt]
    names = pl.Series([m.name for m in media], dtype=pl.String)
    plan = pl.DataFrame({"customer_id": ids.gather(ii), "period": (tt + 1).astype(np.int32),
                         "medium": names.gather(mm), "value": vals.at(ii, mm.astype(np.int64), tt),
                         "cost": (costs[mm] * st.cost_unit)})
    table = summary_table(plan, media, sol, st, segments)
    spent = sol.spend * st.cost_unit
    summary = {"customers": int(ids.len()), "media": [m.name for m in media], "periods": st.periods,
               "period_days": period_days, "contacts": plan.height,
               "customers_contacted": int((sol.medium >= 0).any(axis=1).sum()), "value": sol.value,
               "bound": sol.bound, "gap": sol.gap, "lambda": sol.lam,
               "mu": {m.name: float(x) for m, x in zip(media, sol.mu, strict=True)},
               "nu": {m.name: [float(x) for x in sol.nu[j]] for j, m in enumerate(media)
                      if m.capacity_per_period is not None and sol.nu is not None},
               "spend": spent,
               "global_budget": st.global_budget, "budget_total": float(budgets["budget"].sum()),
               "evaluations": sol.evaluations, "settings": st.as_dict()}
    return SteeringResult(aff, priors, budgets, plan, table, sol, summary, tuple(notes))


def summary_table(plan: pl.DataFrame, media: tuple[Medium, ...], sol: Solution, st: SteeringSettings,
                  segments: pl.DataFrame | None) -> pl.DataFrame:
    """Contacts, cost and expected incremental margin by medium, by period and by segment
    (``level`` / ``key``), with lambda, mu (medium rows) and the certified gap; for a medium
    with a capacity per period also ``medium_period`` rows (key ``<medium>@<period>``)
    with that capacity and its multiplier nu in the ``capacity`` and ``mu`` columns."""
    mu = {m.name: float(x) for m, x in zip(media, sol.mu, strict=True)}
    cap = {m.name: m.capacity for m in media}
    for j, m in enumerate(media):
        if m.capacity_per_period is not None and sol.nu is not None:
            for t in range(sol.nu.shape[1]):
                mu[f"{m.name}@{t + 1}"] = float(sol.nu[j, t])
                cap[f"{m.name}@{t + 1}"] = m.capacity_per_period

    # float sums over sorted values: the same bits whatever order a join or thread count gives the rows
    def agg(df: pl.DataFrame, col: str, level: str) -> pl.DataFrame:
        return (df.group_by(col).agg(contacts=pl.len(), cost=pl.col("cost").sort().sum(),
                                     value=pl.col("value").sort().sum())
                .with_columns(level=pl.lit(level), key=pl.col(col).cast(pl.String)).drop(col))

    parts = [agg(plan, "medium", "medium"), agg(plan, "period", "period")]
    per = [m.name for m in media if m.capacity_per_period is not None]
    if per:
        grid = pl.DataFrame({"medium": [m for m in per for _ in range(st.periods)],
                             "period": [t + 1 for _ in per for t in range(st.periods)]},
                            schema={"medium": pl.String, "period": pl.Int32})
        mp = grid.join(plan.with_columns(pl.col("medium").cast(pl.String)), on=["medium", "period"], how="left")
        parts.append(mp.group_by("medium", "period").agg(
            contacts=pl.col("value").count(), cost=pl.col("cost").sort().sum(), value=pl.col("value").sort().sum())
            .select(level=pl.lit("medium_period"), key=pl.format("{}@{}", "medium", "period"), contacts="contacts",
                    cost="cost", value="value"))
    if segments is not None and "rfm_segment" in segments.columns:
        seg = plan.join(segments.select("customer_id", "rfm_segment"), on="customer_id", how="left")
        parts.append(agg(seg.with_columns(pl.col("rfm_segment").fill_null("(none)")), "rfm_segment", "segment"))
    parts.append(plan.select(contacts=pl.len().cast(pl.UInt32), cost=pl.col("cost").sum(),
                             value=pl.col("value").sum()).with_columns(level=pl.lit("total"), key=pl.lit("all")))
    out = pl.concat([p.select("level", "key", pl.col("contacts").cast(pl.Int64), "cost", "value") for p in parts])
    out = out.with_columns(
        capacity=pl.when(pl.col("level").is_in(["medium", "medium_period"])).then(pl.col("key").replace_strict(
            cap, default=None, return_dtype=pl.Int64)),
        mu=pl.when(pl.col("level").is_in(["medium", "medium_period"])).then(pl.col("key").replace_strict(
            mu, default=None, return_dtype=pl.Float64)),
        **{"lambda": pl.lit(sol.lam), "gap": pl.lit(sol.gap), "bound": pl.lit(sol.bound)})
    order = {"total": 0, "medium": 1, "period": 2, "medium_period": 3, "segment": 4}
    num = pl.col("key").str.split("@").list.last().cast(pl.Int64, strict=False)
    return (out.with_columns(_o=pl.col("level").replace_strict(order, return_dtype=pl.Int32),
                             _m=pl.when(pl.col("level") == "medium_period").then(
                                 pl.col("key").str.split("@").list.first()),
                             _k=pl.when(pl.col("level").is_in(["period", "medium_period"])).then(num))
            .sort("_o", "_m", "_k", "key", nulls_last=False).drop("_o", "_m", "_k"))


def write_steering(res: SteeringResult, staging: Any) -> dict[str, int]:
    """affinity, affinity_priors, budgets, plan, plan_summary, plan_contacts (Parquet) and steering.json."""
    files = {"affinity": res.affinity, "affinity_priors": res.priors, "budgets": res.budgets, "plan": res.plan,
             "plan_summary": res.summary_table}
    if res.contacts is not None:
        files["plan_contacts"] = res.contacts
    for name, df in files.items():
        if isinstance(df, Affinity):
            _write_blocks(df, staging.path(f"{name}.parquet"))
        else:
            df.write_parquet(staging.path(f"{name}.parquet"), compression="zstd")
    Path(staging.path("steering.json")).write_text(
        json.dumps({**res.summary, "notes": list(res.notes)}, indent=2, default=str) + "\n")
    return {k: v.height for k, v in files.items()}


def _write_blocks(aff: Affinity, path: Any) -> None:
    """The affinity table written one block of customers at a time (never held whole)."""
    import pyarrow.parquet as pq

    writer = None
    try:
        for df in aff.frames():
            table = df.to_arrow()
            if writer is None:
                writer = pq.ParquetWriter(str(path), table.schema, compression="zstd")
            writer.write_table(table)
        if writer is None:
            aff.block(0, 0).write_parquet(path, compression="zstd")
    finally:
        if writer is not None:
            writer.close()


def plan_contacts(plan: pl.DataFrame, start: dt.date, period_days: float, spec: Any, seed: int) -> pl.DataFrame:
    """The plan as a ``contacts`` table with control groups, closing the loop: send the
    treatment rows, keep the control rows, and the next ``centile uplift`` measures what the
    plan achieved.

    One campaign per period and medium (``campaign_id`` 1, 2, ... in period then medium
    order; salt ``steering-p<period>-<medium>``); arms drawn by :func:`centile.uplift.holdout.assign`
    with the ``[holdout]`` arms (default treatment 0.9 / control 0.1) among the planned
    customers (the global holdout is already out of the plan). ``sent_ts`` is the start of
    the period (08:00); control rows cost 0, as in the contacts data contract.
    """
    from dataclasses import replace

    from centile.uplift.holdout import assign

    camps = plan.select("period", "medium").unique().sort("period", "medium")
    parts = []
    for cid, (period, medium) in enumerate(camps.iter_rows(), start=1):
        rows = plan.filter((pl.col("period") == period) & (pl.col("medium") == medium)).sort("customer_id")
        name = f"steering-p{period}-{medium}"
        arms = assign(rows.select("customer_id"), replace(spec, campaigns=(name,), stratify_by=None,
                                                           global_share=0.0), seed=seed).assignments
        sent = dt.datetime.combine(start, dt.time(8)) + dt.timedelta(days=(period - 1) * period_days)
        parts.append(rows.join(arms.select("customer_id", "arm"), on="customer_id").select(
            "customer_id", campaign_id=pl.lit(cid, dtype=pl.Int64), sent_ts=pl.lit(sent, dtype=pl.Datetime("us")),
            medium=pl.col("medium"), cost=pl.when(pl.col("arm") == "control").then(0.0).otherwise(pl.col("cost")),
            group=pl.col("arm")))
    if not parts:
        return pl.DataFrame(schema={"customer_id": plan["customer_id"].dtype, "campaign_id": pl.Int64,
                                    "sent_ts": pl.Datetime("us"), "medium": pl.String, "cost": pl.Float64,
                                    "group": pl.String})
    return pl.concat(parts)
