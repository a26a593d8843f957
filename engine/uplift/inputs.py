"""Inputs of ``centile uplift``: the ``[uplift]`` config section and the unit table.

The unit table has one row per (customer, campaign): ``customer_id``,
``campaign``, ``arm``, ``cost``, the outcome columns, optional pre-period
columns ``pre__<outcome>`` (CUPED), an optional uplift score and segment
columns. It is built from ``contacts`` + ``orders`` (:func:`units_from_session`)
or from a flat per-customer results table (:func:`units_from_table`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from centile.config import check_keys
from centile.errors import ConfigError, InputError

PRE = "pre__"


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
    check_keys("[uplift]", section, known)
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


def units_from_session(s: Any, spec: UpliftSpec, segments: pl.DataFrame | None = None) -> tuple[pl.DataFrame, list[str]]:
    """The unit table from ``contacts`` + ``orders``: one row per (customer, campaign).

    Outcomes per contact over orders with ``sent_ts <= order_ts < sent_ts +
    window_days``: ``response`` (any order), ``orders``, ``revenue`` (net of
    returns) and ``margin`` ((unit_price - unit_cost) x net quantity; only when
    ``unit_cost`` is in orders or products), each with its pre-period value over
    the ``pre_window_days`` before ``sent_ts``. Counts are integers and money
    DECIMAL(18, 4) (exact sums). Campaigns whose window ends after ``as_of`` are
    left out (noted). Contacts without a group are treated. ``segments``
    (customer_id + columns) is left-joined; ``spec.segments`` names the breakdown
    columns, looked up there first, then in ``customers``.

    Over the customers the session's views hold (all, or one partition: see
    :func:`session_units`).
    """
    notes = session_notes(s, spec)
    late = late_campaigns(s, spec)
    if late:
        notes.append(f"campaign(s) {', '.join(late)} left out: their {spec.window_days}-day response "
                     f"window ends after as_of {s.as_of}")
    return session_units(s, spec, segments, late), notes


def session_notes(s: Any, spec: UpliftSpec) -> list[str]:
    """Notes on what the session's inputs allow (InputError without contacts)."""
    if not s.has("contacts"):
        raise InputError("uplift needs the contacts table (customer_id, campaign_id, sent_ts, group); "
                         "or map a flat results table in [uplift] path = ...")
    if has_unit_cost(s):
        return []
    return ["no unit_cost in orders or products (joined by product_id): margin per customer and ROI are not "
            "computed"]


def has_unit_cost(s: Any) -> bool:
    """Is there a unit cost for the margin: ``unit_cost`` in ``orders``, or in ``products`` with a
    ``product_id`` on the lines to join it by?"""
    return s.has("orders", "unit_cost") or (s.has("products", "unit_cost") and s.has("orders", "product_id"))


def late_campaigns(s: Any, spec: UpliftSpec) -> list[str]:
    """Campaigns with a contact whose response window ends after ``as_of`` (over the customers
    the views hold: call it on the whole session, before any partition)."""
    from centile.backend.session import sorted_union

    # on a cluster each partition's campaigns come from its worker, merged there
    late = s.everywhere("uplift: late campaigns", _late_of, sorted_union, spec.window_days, tables=("contacts",))
    return late.get_column("campaign").to_list()


def _late_of(s: Any, window_days: int) -> pl.DataFrame:
    """:func:`late_campaigns` of the customers the session's views hold."""
    as_of = dt.datetime.combine(s.as_of, dt.time())
    return s.frame(
        "SELECT DISTINCT CAST(campaign_id AS VARCHAR) AS campaign FROM (SELECT customer_id, campaign_id, "
        "min(sent_ts) AS t FROM contacts GROUP BY customer_id, campaign_id) "
        "WHERE t + to_days(CAST($win AS INTEGER)) > $as_of ORDER BY 1", {"win": window_days, "as_of": as_of})


def order_rows_sql(s: Any, has_cost: bool) -> str:
    """One row per (customer, order) of the ``orders`` view of session ``s``: ``customer_id``,
    ``order_id``, ``ts`` (first line), ``is_order`` (a line of positive quantity), ``revenue`` and
    ``margin`` (net of returns, each line rounded to DECIMAL(18, 4), summed exactly). A refresh
    state keeps the same rows (``sql/refresh_order_totals.sql``)."""
    if has_cost:
        join = "LEFT JOIN products AS p USING (product_id)" if s.has("products", "unit_cost") and s.has(
            "orders", "product_id") else ""
        cost = ("coalesce(o.unit_cost, p.unit_cost, 0)" if join else "coalesce(o.unit_cost, 0)") if s.has(
            "orders", "unit_cost") else "coalesce(p.unit_cost, 0)"
    else:
        join, cost = "", "0"
    money = "DECIMAL(18, 4)"
    return f"""
      SELECT o.customer_id, o.order_id, min(o.order_ts) AS ts, bool_or(o.quantity > 0) AS is_order,
             -- money summed as DECIMAL: exact, so the same sums whatever order threads and partitions add in
             sum((o.unit_price * CASE WHEN o.quantity > 0 THEN o.quantity - o.returned_quantity
                                      ELSE o.quantity END)::{money}) AS revenue,
             sum(((o.unit_price - {cost}) * CASE WHEN o.quantity > 0 THEN o.quantity - o.returned_quantity
                                                  ELSE o.quantity END)::{money}) AS margin
      FROM orders AS o {join}  -- no semi-join on c's customers: the LEFT JOIN below drops the others,
      GROUP BY o.customer_id, o.order_id  -- and the semi-join cost as much as the rest of the query
    """


def session_units(s: Any, spec: UpliftSpec, segments: pl.DataFrame | None, late: list[str],
                  orders: str | None = None, has_cost: bool | None = None) -> pl.DataFrame:
    """The unit table of the customers the session's views hold (the whole session or one
    partition), the ``late`` campaigns left out, ordered by campaign and customer id.

    ``orders``: a query of the rows of :func:`order_rows_sql` for those customers (a refresh
    state's, :mod:`centile.refresh.order_totals`) instead of the ``orders`` view; ``has_cost``:
    whether the margin is computed (default: from the session's tables, :func:`has_unit_cost`)."""
    has_cost = has_unit_cost(s) if has_cost is None else has_cost
    money = "DECIMAL(18, 4)"
    sql = f"""
    WITH c AS (
      SELECT customer_id, CAST(campaign_id AS VARCHAR) AS campaign, min(sent_ts) AS sent_ts,
             coalesce(min("group"), 'treatment') AS arm, sum(coalesce(cost, 0)::{money}) AS cost
      FROM contacts WHERE NOT list_contains(CAST($late AS VARCHAR[]), CAST(campaign_id AS VARCHAR))
      GROUP BY customer_id, campaign_id),
    o AS ({order_rows_sql(s, has_cost) if orders is None else orders})
    SELECT c.customer_id, c.campaign, c.arm, CAST(c.cost AS {money}) AS cost,
      count(*) FILTER (WHERE o.is_order AND o.ts >= c.sent_ts) AS orders,
      CAST(coalesce(sum(o.revenue) FILTER (WHERE o.ts >= c.sent_ts), 0) AS {money}) AS revenue,
      CAST(coalesce(sum(o.margin) FILTER (WHERE o.ts >= c.sent_ts), 0) AS {money}) AS margin,
      count(*) FILTER (WHERE o.is_order AND o.ts < c.sent_ts) AS {PRE}orders,
      CAST(coalesce(sum(o.revenue) FILTER (WHERE o.ts < c.sent_ts), 0) AS {money}) AS {PRE}revenue,
      CAST(coalesce(sum(o.margin) FILTER (WHERE o.ts < c.sent_ts), 0) AS {money}) AS {PRE}margin
    FROM c LEFT JOIN o ON o.customer_id = c.customer_id
      AND o.ts >= c.sent_ts - to_days(CAST($pre AS INTEGER))
      AND o.ts < c.sent_ts + to_days(CAST($win AS INTEGER))
    GROUP BY ALL
    """
    units = s.frame(sql, {"pre": spec.pre_window_days, "win": spec.window_days, "late": list(late)})
    units = units.with_columns(
        response=(pl.col("orders") > 0).cast(pl.Int64),
        **{f"{PRE}response": (pl.col(f"{PRE}orders") > 0).cast(pl.Int64)})
    outcomes = ["response", "orders", "revenue"] + (["margin"] if has_cost else [])
    units = units.select(["customer_id", "campaign", "arm", "cost", *outcomes, *(PRE + o for o in outcomes)])
    units = _join_segments(units, spec, segments, s)
    return units.sort("campaign", "customer_id")


def auto_segments(segments: pl.DataFrame) -> tuple[str, ...]:
    """Breakdown columns of a segments frame when ``[uplift] segments`` is not set: its text,
    categorical and boolean columns (numeric codes such as RFM scores or tiers must be named)."""
    return tuple(c for c, t in segments.schema.items() if c != "customer_id" and (
        t in (pl.String, pl.Categorical, pl.Boolean) or isinstance(t, pl.Enum)))


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
            from centile.io.sqlfiles import ident

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
