"""Synthetic retail data with planted truth, for tests, benchmarks and demos.

:func:`generate` writes every table of the data contract (customers, products,
orders, email events, contacts, touchpoints) as Parquet, plus ``truth/``: the
parameters and every per-customer latent value the data were drawn from, so
later stages can be checked for recovering them.

The processes, per customer (time unit: weeks):

* purchases follow BG/NBD (Fader, Hardie & Lee 2005): ``lambda ~ Gamma(r,
  rate alpha)``, ``p ~ Beta(a, b)``; the first purchase falls uniformly in the
  window, repeat purchases arrive as Poisson(``lambda``) until the end of the
  window, and after each *repeat* purchase the customer drops out with
  probability ``p`` (so ``E[X(T)] = (1 - exp(-lambda p T)) / p`` repeats);
* order values follow Gamma-Gamma (Fader, Hardie & Lee 2005b): ``nu ~
  Gamma(q, rate gamma)``, each order worth ``Gamma(p, rate nu)``; an order is
  split into 1-6 lines over products chosen by Dirichlet category affinities;
* campaigns (``contacts``) have a random control group; a treated customer
  gets one extra, campaign-induced order within ``effect_window_days`` with
  probability equal to the effect of their segment (age band), so the effect
  is additive on expected orders and exactly zero in control. Induced orders
  come on top of the BG/NBD process and are listed in
  ``truth/induced_orders.parquet``.

Customers are simulated in chunks of ``SynthParams.chunk_size``, each from its
own ``SeedSequence(seed, spawn_key=(1, chunk))``, so the output depends on the
seed, the size and the parameters only: not on threads or timing.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from time import perf_counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from centile import __version__
from centile.errors import ConfigError
from centile.io.outputs import staged_output
from centile.kernels import synth

__all__ = ["SynthParams", "GenerateResult", "generate", "SCHEMAS"]

logger = logging.getLogger(__name__)

WEEK_S = 7 * 86400
_TS = pa.timestamp("us")
_STR = pa.string()

# name, popularity, cheapest and dearest list price
CATEGORIES = (("fashion", 0.16, 2.99, 300.0), ("shoes", 0.08, 9.99, 250.0),
              ("accessories", 0.08, 0.99, 150.0), ("home", 0.10, 1.99, 500.0),
              ("kitchen", 0.08, 0.99, 300.0), ("garden", 0.05, 1.99, 800.0),
              ("toys", 0.07, 0.99, 200.0), ("books", 0.07, 1.99, 80.0),
              ("electronics", 0.09, 2.99, 2000.0), ("beauty", 0.08, 0.99, 120.0),
              ("sports", 0.07, 1.99, 600.0), ("food", 0.07, 0.49, 60.0))
# name, share, leading digits of the postal code
REGIONS = (("east", 0.12, (0, 1)), ("north", 0.12, (2,)), ("northwest", 0.10, (3,)),
           ("west", 0.20, (4, 5)), ("central", 0.10, (6,)), ("southwest", 0.14, (7,)),
           ("south", 0.14, (8,)), ("southeast", 0.08, (9,)))
GENDERS = (("f", 0.51), ("m", 0.47), ("d", 0.02))
ORDER_CHANNELS = (("web", 0.55), ("app", 0.25), ("phone", 0.07), ("store", 0.13))
MEDIA = (("catalogue", 1.20), ("voucher", 0.80), ("sale", 0.35), ("free_shipping", 0.45),
         ("email", 0.01))
TOUCH_CHANNELS = ("search", "social", "display", "email", "affiliate", "direct")
SEGMENTS = (("18-29", 18, 29), ("30-44", 30, 44), ("45-59", 45, 59), ("60+", 60, 200))
EVENTS = ("sent", "open", "click")
GROUPS = ("treatment", "control")
EMAIL_CAMPAIGN_BASE = 1000  # monthly newsletters get ids 1001.., contact campaigns 1..K

SCHEMAS: dict[str, pa.Schema] = {
    "customers": pa.schema([("customer_id", pa.int64()), ("signup_ts", _TS),
                            ("birth_year", pa.int32()), ("gender", _STR), ("region", _STR),
                            ("postal_code", _STR)]),
    "products": pa.schema([("product_id", pa.int64()), ("category", _STR),
                           ("list_price", pa.float64()), ("market_price", pa.float64()),
                           ("unit_cost", pa.float64())]),
    "orders": pa.schema([("customer_id", pa.int64()), ("order_id", pa.int64()),
                         ("order_ts", _TS), ("product_id", pa.int64()), ("category", _STR),
                         ("quantity", pa.int32()), ("unit_price", pa.float64()),
                         ("unit_cost", pa.float64()), ("returned_quantity", pa.int32()),
                         ("channel", _STR)]),
    "email_events": pa.schema([("customer_id", pa.int64()), ("campaign_id", pa.int64()),
                               ("ts", _TS), ("event", _STR)]),
    "contacts": pa.schema([("customer_id", pa.int64()), ("campaign_id", pa.int64()),
                           ("sent_ts", _TS), ("medium", _STR), ("cost", pa.float64()),
                           ("group", _STR)]),
    "touchpoints": pa.schema([("customer_id", pa.int64()), ("ts", _TS), ("channel", _STR)]),
    "truth_customers": pa.schema([
        ("customer_id", pa.int64()), ("engaged_nonbuyer", pa.bool_()), ("signup_ts", _TS),
        ("first_purchase_ts", _TS), ("T_weeks", pa.float64()), ("bgnbd_lambda", pa.float64()),
        ("bgnbd_p", pa.float64()), ("n_purchases", pa.int32()), ("n_repeat", pa.int32()),
        ("expected_repeat", pa.float64()), ("death_ts", _TS), ("alive_at_end", pa.bool_()),
        ("n_induced", pa.int32()), ("gg_nu", pa.float64()), ("gg_mean_spend", pa.float64()),
        ("return_propensity", pa.float64()), ("open_propensity", pa.float64()),
        ("click_propensity", pa.float64()), ("email_subscribed", pa.bool_()),
        ("price_insensitive", pa.bool_()), ("top_category", _STR), ("segment", _STR),
        ("campaign_effect", pa.float64()), ("preferred_channel", _STR)]),
    "truth_induced_orders": pa.schema([("customer_id", pa.int64()), ("campaign_id", pa.int64()),
                                       ("order_id", pa.int64()), ("order_ts", _TS)]),
}
# single-file tables written a row group per chunk: table -> path in the output folder
_CHUNKED_FILES = {"customers": "customers.parquet", "email_events": "email_events.parquet",
                  "contacts": "contacts.parquet", "touchpoints": "touchpoints.parquet",
                  "truth_customers": "truth/customers.parquet",
                  "truth_induced_orders": "truth/induced_orders.parquet"}


@dataclass(frozen=True)
class SynthParams:
    """Every planted parameter of :func:`generate`; all are written to ``truth/params.json``.

    Defaults give about 6.5 BG/NBD orders and 20 order lines per customer over
    three years. Rates and times are per week unless the name says otherwise.
    """

    # BG/NBD purchase process: lambda ~ Gamma(r, rate alpha) per week, p ~ Beta(a, b)
    r: float = 0.75
    alpha: float = 4.0
    a: float = 0.8
    b: float = 4.0
    # Gamma-Gamma spend: nu ~ Gamma(gg_q, rate gg_gamma), order value ~ Gamma(gg_p, rate nu)
    gg_p: float = 6.0
    gg_q: float = 4.0
    gg_gamma: float = 30.0
    # order lines: 1 + Binomial(lines_max - 1, lines_p), at most one per line_min_value of
    # the order's value; the value is split by Dirichlet(line_concentration, ..)
    lines_max: int = 6
    lines_p: float = 0.6
    line_min_value: float = 10.0
    line_concentration: float = 4.0
    quantity_probs: tuple[float, ...] = (0.80, 0.13, 0.05, 0.02)
    discount_share: float = 0.15
    discounts: tuple[float, ...] = (0.1, 0.2, 0.3, 0.5)
    free_item_share: float = 0.01
    channel_loyalty: float = 0.75
    # returns: propensity ~ Beta; returned units ~ Binomial(quantity, propensity)
    return_a: float = 1.0
    return_b: float = 7.0
    negative_return_share: float = 0.10
    # customers
    nonbuyer_share: float = 0.03
    price_insensitive_share: float = 0.05
    affinity_concentration: float = 3.0
    presignup_share: float = 0.3
    presignup_weeks: float = 4.0
    age_mean: float = 44.0
    age_sd: float = 14.0
    # products: priced above market with this share; who buys from which price pool
    n_products: int = 4000
    above_market_share: float = 0.25
    insensitive_above_share: float = 0.85
    sensitive_below_share: float = 0.5
    # monthly e-mail newsletters; click propensity is P(click | open)
    email_subscribed_share: float = 0.85
    open_a: float = 2.0
    open_b: float = 8.0
    click_a: float = 2.0
    click_b: float = 6.0
    nonbuyer_open_a: float = 8.0
    nonbuyer_open_b: float = 3.0
    nonbuyer_click_a: float = 6.0
    nonbuyer_click_b: float = 4.0
    # contact campaigns with a random control group; effect per segment (age band)
    n_campaigns: int = 8
    campaign_target_share: float = 0.6
    control_share: float = 0.15
    effect_window_days: int = 30
    segment_effects: tuple[float, ...] = (0.02, 0.04, 0.07, 0.10)
    # touchpoints: a few before a share of orders, plus browsing without an order
    touch_order_share: float = 0.25
    touch_extra_max: int = 3
    touch_extra_p: float = 0.4
    touch_gap_days: float = 1.5
    converting_channel_weights: tuple[float, ...] = (0.30, 0.10, 0.08, 0.17, 0.12, 0.23)
    browse_per_year: float = 0.7
    browse_channel_weights: tuple[float, ...] = (0.20, 0.30, 0.25, 0.08, 0.07, 0.10)
    # simulation
    chunk_size: int = 50_000


@dataclass(frozen=True)
class GenerateResult:
    """What :func:`generate` wrote: the output folder, rows per table and wall time."""

    out: Path
    rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class _Plan:
    """Everything shared by the chunks: parameters, calendar, catalogue, schedules."""

    seed: int
    params: SynthParams
    start: date
    end: date
    start_us: int
    weeks: float  # window length
    email_weeks: np.ndarray  # monthly send times
    campaign_weeks: np.ndarray
    campaign_media: np.ndarray  # index into MEDIA
    products: pa.Table
    product_category: np.ndarray
    product_cost: np.ndarray
    product_list: np.ndarray
    pool_offsets: np.ndarray
    pool_log_price: np.ndarray
    pool_product: np.ndarray


def _window(end: date, years: int) -> tuple[date, date]:
    try:
        first = end.replace(year=end.year - years)
    except ValueError:  # 29 February
        first = end.replace(year=end.year - years, day=28)
    return first + timedelta(days=1), end + timedelta(days=1)


def _make_plan(seed: int, end: date, years: int, prm: SynthParams) -> _Plan:
    start, stop = _window(end, years)
    weeks = (stop - start).days / 7.0
    origin = datetime(start.year, start.month, start.day)

    def wk(dt: datetime) -> float:
        return (dt - origin).total_seconds() / WEEK_S

    sends, y, m = [], start.year, start.month
    while (y, m) <= (end.year, end.month):
        dt = datetime(y, m, 5, 9)
        if start <= dt.date() < stop:
            sends.append(wk(dt))
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    # contact campaigns: evenly spaced days at 08:00, from day 91 to one effect window before the end
    first_day = 91
    last_day = max((stop - start).days - prm.effect_window_days - 1, first_day)
    k = prm.n_campaigns
    camp = [wk(origin + timedelta(days=first_day + round((last_day - first_day) * i / max(k - 1, 1)),
                                  hours=8)) for i in range(k)]

    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    w = np.array([c[1] for c in CATEGORIES])
    counts = np.maximum(np.round(w / w.sum() * prm.n_products).astype(np.int64), 20)
    cat = np.repeat(np.arange(len(CATEGORIES)), counts)
    lo = np.log([c[2] for c in CATEGORIES])[cat]
    hi = np.log([c[3] for c in CATEGORIES])[cat]
    raw = np.exp(lo + rng.random(cat.size) * (hi - lo))
    list_price = np.where(raw >= 2.0, np.ceil(raw) - 0.01, np.round(raw, 2))
    above = rng.random(cat.size) < prm.above_market_share
    market = np.round(list_price * np.where(above, rng.uniform(0.80, 0.97, cat.size),
                                            rng.uniform(1.00, 1.20, cat.size)), 2)
    above = market < list_price  # rounding may have closed a tiny gap
    cost = np.round(list_price * rng.uniform(0.35, 0.70, cat.size), 2)
    products = pa.Table.from_arrays(
        [pa.array(np.arange(1, cat.size + 1, dtype=np.int64)),
         _labels(cat, [c[0] for c in CATEGORIES]), pa.array(list_price), pa.array(market),
         pa.array(cost)], schema=SCHEMAS["products"])

    # price pools: 0 all products, 1 priced above market, 2 at or below market
    logp = np.log(list_price)
    offsets, parts_p, parts_i, pos = [], [], [], 0
    for member in (np.ones(cat.size, bool), above, ~above):
        row = [pos]
        for c in range(len(CATEGORIES)):
            idx = np.flatnonzero(member & (cat == c))
            idx = idx[np.argsort(logp[idx], kind="stable")]
            parts_p.append(logp[idx])
            parts_i.append(idx)
            pos += idx.size
            row.append(pos)
        offsets.append(row)
    return _Plan(seed=seed, params=prm, start=start, end=end,
                 start_us=(start - date(1970, 1, 1)).days * 86_400_000_000, weeks=weeks,
                 email_weeks=np.array(sends), campaign_weeks=np.array(camp),
                 campaign_media=np.arange(k) % len(MEDIA), products=products,
                 product_category=cat, product_cost=cost, product_list=list_price,
                 pool_offsets=np.array(offsets, dtype=np.int64),
                 pool_log_price=np.concatenate(parts_p), pool_product=np.concatenate(parts_i))


# --------------------------------------------------------------------------- helpers


def _labels(codes: np.ndarray, labels) -> pa.Array:
    return pc.take(pa.array(list(labels), _STR), pa.array(np.asarray(codes, dtype=np.int32)))


def _categorical(rng: np.random.Generator, weights, n: int) -> np.ndarray:
    cum = np.cumsum(np.asarray(weights, dtype=np.float64))
    idx = np.searchsorted(cum / cum[-1], rng.random(n), side="right")
    return np.minimum(idx, cum.size - 1)


def _ts(plan: _Plan, weeks: np.ndarray, mask: np.ndarray | None = None) -> pa.Array:
    """Weeks since the window start -> timestamps, floored to whole seconds."""
    w = np.where(np.isnan(weeks), 0.0, weeks) if mask is not None else weeks
    us = plan.start_us + np.floor(w * WEEK_S).astype(np.int64) * 1_000_000
    return pa.array(us, type=_TS, mask=mask)


def _iso(plan: _Plan, weeks: float) -> str:
    origin = datetime(plan.start.year, plan.start.month, plan.start.day)
    return (origin + timedelta(seconds=math.floor(weeks * WEEK_S))).isoformat()


def _rank(*keys: np.ndarray) -> np.ndarray:
    """0-based rank of each row under the lexicographic order of ``keys`` (first key major)."""
    order = np.lexsort(keys[::-1])
    rank = np.empty(order.size, dtype=np.int64)
    rank[order] = np.arange(order.size)
    return rank


# --------------------------------------------------------------------------- one chunk


@dataclass
class _Chunk:
    index: int
    n_customers: int
    n_orders: int
    orders: pa.Table  # order_id still 0-based within the chunk
    tables: dict[str, pa.Table]  # truth_induced_orders order_id likewise


def _customers(rng: np.random.Generator, n: int, plan: _Plan) -> dict[str, np.ndarray]:
    """Per-customer latent values and demographics (times in weeks since the window start)."""
    prm = plan.params
    nonbuyer = rng.random(n) < prm.nonbuyer_share
    t0 = rng.random(n) * plan.weeks
    delay = np.where(rng.random(n) < prm.presignup_share,
                     rng.exponential(prm.presignup_weeks, n), 0.0)
    signup = np.where(nonbuyer, t0, np.maximum(t0 - delay, 0.0))
    lam = rng.gamma(prm.r, 1.0 / prm.alpha, n)
    p = np.clip(rng.beta(prm.a, prm.b, n), 1e-9, 1.0)
    nu = rng.gamma(prm.gg_q, 1.0 / prm.gg_gamma, n)
    rho = rng.beta(prm.return_a, prm.return_b, n)
    opn = np.where(nonbuyer, rng.beta(prm.nonbuyer_open_a, prm.nonbuyer_open_b, n),
                   rng.beta(prm.open_a, prm.open_b, n))
    clk = np.where(nonbuyer, rng.beta(prm.nonbuyer_click_a, prm.nonbuyer_click_b, n),
                   rng.beta(prm.click_a, prm.click_b, n))
    subscribed = nonbuyer | (rng.random(n) < prm.email_subscribed_share)
    insensitive = rng.random(n) < prm.price_insensitive_share
    base = np.array([c[1] for c in CATEGORIES]) * prm.affinity_concentration
    aff = rng.gamma(base, 1.0, (n, base.size)) + 1e-12
    aff /= aff.sum(axis=1, keepdims=True)
    channel = _categorical(rng, [c[1] for c in ORDER_CHANNELS], n)
    age = np.clip(np.rint(rng.normal(prm.age_mean, prm.age_sd, n)), 18, 90).astype(np.int64)
    gender = _categorical(rng, [g[1] for g in GENDERS], n)
    region = _categorical(rng, [r[1] for r in REGIONS], n)
    lead = np.array([r[2][0] for r in REGIONS])
    second = np.array([r[2][-1] for r in REGIONS])
    digit = np.where(rng.random(n) < 0.5, lead[region], second[region])
    postal = digit * 10_000 + rng.integers(0, 10_000, n)
    segment = np.searchsorted(np.array([s[1] for s in SEGMENTS]), age, side="right") - 1
    return dict(nonbuyer=nonbuyer, t0=t0, signup=signup, lam=lam, p=p, nu=nu, rho=rho, opn=opn,
                clk=clk, subscribed=subscribed, insensitive=insensitive, aff=aff,
                channel=channel, birth_year=plan.end.year - age, gender=gender, region=region,
                postal=postal, segment=segment,
                effect=np.asarray(prm.segment_effects, dtype=np.float64)[segment])


def _purchases(rng: np.random.Generator, cu: dict, plan: _Plan) -> dict[str, np.ndarray]:
    """BG/NBD repeat purchases; the first purchase is at ``t0``."""
    buyer = ~cu["nonbuyer"]
    horizon = np.where(buyer, plan.weeks - cu["t0"], 0.0)
    n_pois = rng.poisson(cu["lam"] * horizon)
    drop_after = rng.geometric(cu["p"])  # drops out after this many repeat purchases
    m = np.where(buyer, np.minimum(n_pois, drop_after), 0)
    dead = buyer & (drop_after <= n_pois)
    times = synth.repeat_purchase_times(cu["t0"], horizon, m, rng.standard_exponential(m.sum()),
                                        rng.gamma(n_pois - m + 1.0))
    last = np.cumsum(m) - 1
    death = np.full(m.size, np.nan)
    death[dead] = times[last[dead]]
    return dict(horizon=horizon, m=m, dead=dead, death=death, times=times)


def _contacts(rng: np.random.Generator, cu: dict, plan: _Plan) -> dict[str, np.ndarray]:
    """Who got which campaign, control groups, and the campaign-induced orders."""
    prm = plan.params
    n = cu["t0"].size
    buyer = ~cu["nonbuyer"]
    rows, induced = [], []
    for k, t_send in enumerate(plan.campaign_weeks):
        u = rng.random((4, n))
        target = buyer & (cu["t0"] < t_send) & (u[0] < prm.campaign_target_share)
        control = u[1] < prm.control_share
        idx = np.flatnonzero(target)
        rows.append((idx, np.full(idx.size, k), control[idx]))
        hit = np.flatnonzero(target & ~control & (u[2] < cu["effect"]))
        induced.append((hit, np.full(hit.size, k),
                        t_send + u[3, hit] * prm.effect_window_days / 7.0))
    cat = [np.concatenate(x) for x in zip(*rows, strict=True)]
    ind = [np.concatenate(x) for x in zip(*induced, strict=True)]
    return dict(cust=cat[0], campaign=cat[1], control=cat[2],
                ind_cust=ind[0], ind_campaign=ind[1], ind_t=ind[2])


def _orders(cu: dict, pu: dict, co: dict) -> dict[str, np.ndarray]:
    """All orders of the chunk, sorted by customer then time."""
    n = cu["t0"].size
    buyers = np.flatnonzero(~cu["nonbuyer"])
    cust = np.concatenate([buyers, np.repeat(np.arange(n), pu["m"]), co["ind_cust"]])
    t = np.concatenate([cu["t0"][buyers], pu["times"], co["ind_t"]])
    campaign = np.concatenate([np.full(buyers.size + pu["times"].size, -1), co["ind_campaign"]])
    order = np.lexsort((t, cust))
    return dict(cust=cust[order], t=t[order], campaign=campaign[order])


def _lines(rng: np.random.Generator, cu: dict, od: dict, plan: _Plan) -> dict[str, np.ndarray]:
    """Order values (Gamma-Gamma), their lines, returns and free items."""
    prm = plan.params
    n_orders = od["cust"].size
    value = rng.gamma(prm.gg_p, 1.0 / cu["nu"][od["cust"]])
    n_lines = np.minimum(1 + rng.binomial(prm.lines_max - 1, prm.lines_p, n_orders),
                         np.maximum(1, np.floor(value / prm.line_min_value)).astype(np.int64))
    loyal = rng.random(n_orders) < prm.channel_loyalty
    channel = np.where(loyal, cu["channel"][od["cust"]],
                       _categorical(rng, [c[1] for c in ORDER_CHANNELS], n_orders))
    free = rng.random(n_orders) < prm.free_item_share

    line_order = np.repeat(np.arange(n_orders), n_lines)
    k = line_order.size
    share = rng.gamma(prm.line_concentration, 1.0, k)
    share /= np.bincount(line_order, weights=share, minlength=n_orders)[line_order]
    cust = od["cust"][line_order]
    discount = np.where(rng.random(k) < prm.discount_share,
                        np.asarray(prm.discounts)[rng.integers(0, len(prm.discounts), k)], 0.0)
    qty0 = 1 + _categorical(rng, prm.quantity_probs, k)
    u_pool = rng.random(k)
    insensitive = cu["insensitive"][cust]
    pool = np.where(insensitive, np.where(u_pool < prm.insensitive_above_share, 1, 0),
                    np.where(u_pool < prm.sensitive_below_share, 2, 0))
    product, qty = synth.choose_line_products(
        line_order, cust, value[line_order] * share, discount, qty0, rng.random(k), pool,
        np.cumsum(cu["aff"], axis=1), plan.pool_offsets, plan.pool_log_price, plan.pool_product,
        plan.product_list)
    price = np.round(plan.product_list[product] * (1.0 - discount), 2)
    returned = rng.binomial(qty, cu["rho"][cust]).astype(np.int32)
    separate = (returned > 0) & (rng.random(k) < prm.negative_return_share)
    free_orders = np.flatnonzero(free)
    free_product = rng.integers(0, plan.product_list.size, free_orders.size)

    row_order = np.concatenate([line_order, line_order[separate], free_orders])
    perm = np.argsort(row_order, kind="stable")
    ones = np.ones(free_orders.size, dtype=np.int32)
    return _merge_lines(dict(
        value=value, channel=channel, row_order=row_order[perm],
        product=np.concatenate([product, product[separate], free_product])[perm],
        qty=np.concatenate([qty, -returned[separate], ones])[perm],
        returned=np.concatenate([np.where(separate, 0, returned), 0 * returned[separate],
                                 0 * ones])[perm].astype(np.int32),
        price=np.concatenate([price, price[separate], np.zeros(free_orders.size)])[perm]))


def _merge_lines(li: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One line per (order, product, price, sale or return): lines of one order that would repeat
    each other are merged by adding their quantities, as a shop's order system books them (the
    data contract has no line number, so two equal lines would read as a duplicate)."""
    sign = np.sign(li["qty"])
    key = np.lexsort((sign, li["price"], li["product"], li["row_order"]))
    o, p, c, s = li["row_order"][key], li["product"][key], li["price"][key], sign[key]
    new = np.ones(key.size, dtype=bool)
    new[1:] = (o[1:] != o[:-1]) | (p[1:] != p[:-1]) | (c[1:] != c[:-1]) | (s[1:] != s[:-1])
    if new.all():
        return li
    group = np.cumsum(new) - 1
    first = key[new]
    keep = np.sort(first)  # the merged line takes the place of its group's first line
    total = np.zeros(first.size, dtype=np.int64)
    np.add.at(total, group, li["qty"][key])
    back = np.zeros(first.size, dtype=np.int64)
    np.add.at(back, group, li["returned"][key])
    at = np.empty(li["qty"].size, dtype=np.int64)
    at[first] = np.arange(first.size)
    idx = at[keep]
    return dict(value=li["value"], channel=li["channel"], row_order=li["row_order"][keep],
                product=li["product"][keep], qty=total[idx].astype(li["qty"].dtype),
                returned=back[idx].astype(np.int32), price=li["price"][keep])


def _emails(rng: np.random.Generator, cu: dict, plan: _Plan) -> dict[str, np.ndarray]:
    """Monthly newsletters to subscribers after signup; opens and clicks by propensity."""
    sends = plan.email_weeks
    n_m = sends.size
    first = np.searchsorted(sends, cu["signup"], side="right")
    count = np.where(cu["subscribed"], n_m - first, 0)
    cust = np.repeat(np.arange(count.size), count)
    month = np.arange(cust.size) - np.repeat(np.cumsum(count) - count - first, count)
    sent = sends[month] + rng.random(cust.size) * (3 / 168)
    opened = rng.random(cust.size) < cu["opn"][cust]
    t_open = sent + rng.exponential(8 / 168, cust.size)
    opened &= t_open < plan.weeks
    clicked = opened & (rng.random(cust.size) < cu["clk"][cust])
    t_click = t_open + rng.exponential(0.25 / 168, cust.size)
    clicked &= t_click < plan.weeks
    ev_cust = np.concatenate([cust, cust[opened], cust[clicked]])
    ev_month = np.concatenate([month, month[opened], month[clicked]])
    ev_code = np.repeat(np.arange(3), [cust.size, opened.sum(), clicked.sum()])
    ev_t = np.concatenate([sent, t_open[opened], t_click[clicked]])
    order = np.argsort((ev_cust * n_m + ev_month) * 3 + ev_code, kind="stable")
    return dict(cust=ev_cust[order], month=ev_month[order], code=ev_code[order], t=ev_t[order])


def _touchpoints(rng: np.random.Generator, cu: dict, od: dict, plan: _Plan) -> dict:
    """A few touchpoints before a share of orders, plus browsing that led to no order."""
    prm = plan.params
    sel = np.flatnonzero(rng.random(od["cust"].size) < prm.touch_order_share)
    count = 1 + rng.binomial(prm.touch_extra_max, prm.touch_extra_p, sel.size)
    back = synth.segmented_cumsum(rng.exponential(prm.touch_gap_days / 7.0, count.sum()), count)
    conv_t = np.repeat(od["t"][sel], count) - back
    conv_cust = np.repeat(od["cust"][sel], count)
    conv_ch = _categorical(rng, prm.converting_channel_weights, conv_t.size)
    active = plan.weeks - cu["signup"]
    n_browse = rng.poisson(prm.browse_per_year * active / (365.25 / 7))
    br_cust = np.repeat(np.arange(active.size), n_browse)
    br_t = cu["signup"][br_cust] + rng.random(br_cust.size) * active[br_cust]
    br_ch = _categorical(rng, prm.browse_channel_weights, br_t.size)
    cust = np.concatenate([conv_cust, br_cust])
    t = np.concatenate([conv_t, br_t])
    ch = np.concatenate([conv_ch, br_ch])
    keep = np.flatnonzero(t >= 0.0)
    keep = keep[np.lexsort((t[keep], cust[keep]))]
    return dict(cust=cust[keep], t=t[keep], channel=ch[keep])


def _simulate_chunk(plan: _Plan, index: int, first_id: int, n: int) -> _Chunk:
    ss = np.random.SeedSequence(plan.seed, spawn_key=(1, index))
    r_cust, r_buy, r_con, r_line, r_mail, r_touch = (np.random.default_rng(s)
                                                    for s in ss.spawn(6))
    cu = _customers(r_cust, n, plan)
    pu = _purchases(r_buy, cu, plan)
    co = _contacts(r_con, cu, plan)
    od = _orders(cu, pu, co)
    li = _lines(r_line, cu, od, plan)
    em = _emails(r_mail, cu, plan)
    tp = _touchpoints(r_touch, cu, od, plan)
    ids = first_id + np.arange(n, dtype=np.int64)
    rank = _rank(np.floor(od["t"] * WEEK_S), od["cust"])  # order ids follow time
    return _Chunk(index=index, n_customers=n, n_orders=od["cust"].size,
                  orders=_orders_table(plan, ids, od, li, rank),
                  tables=_chunk_tables(plan, ids, cu, pu, co, od, em, tp, rank))


def _orders_table(plan: _Plan, ids, od, li, rank) -> pa.Table:
    ro = li["row_order"]
    prod = li["product"]
    return pa.Table.from_arrays([
        pa.array(ids[od["cust"][ro]]), pa.array(rank[ro]), _ts(plan, od["t"][ro]),
        pa.array(prod + 1), _labels(plan.product_category[prod], [c[0] for c in CATEGORIES]),
        pa.array(li["qty"].astype(np.int32)), pa.array(li["price"]),
        pa.array(plan.product_cost[prod]), pa.array(li["returned"]),
        _labels(li["channel"][ro], [c[0] for c in ORDER_CHANNELS])], schema=SCHEMAS["orders"])


def _chunk_tables(plan: _Plan, ids, cu, pu, co, od, em, tp, rank) -> dict[str, pa.Table]:
    prm = plan.params
    nb = cu["nonbuyer"]
    n_induced = np.bincount(co["ind_cust"], minlength=ids.size)
    lam_p_t = cu["lam"] * cu["p"] * pu["horizon"]
    expected = -np.expm1(-lam_p_t) / cu["p"]

    def buyers_only(x: np.ndarray) -> pa.Array:
        return pa.array(x, mask=nb)

    truth = pa.Table.from_arrays([
        pa.array(ids), pa.array(nb), _ts(plan, cu["signup"]),
        _ts(plan, np.where(nb, np.nan, cu["t0"]), nb), buyers_only(pu["horizon"]),
        buyers_only(cu["lam"]), buyers_only(cu["p"]),
        pa.array(np.where(nb, 0, 1 + pu["m"]).astype(np.int32)),
        pa.array(pu["m"].astype(np.int32)), buyers_only(expected),
        _ts(plan, pu["death"], np.isnan(pu["death"])), pa.array(~pu["dead"], mask=nb),
        pa.array(n_induced.astype(np.int32)), pa.array(cu["nu"]),
        pa.array(prm.gg_p / cu["nu"]), pa.array(cu["rho"]), pa.array(cu["opn"]),
        pa.array(cu["clk"]), pa.array(cu["subscribed"]), pa.array(cu["insensitive"]),
        _labels(np.argmax(cu["aff"], axis=1), [c[0] for c in CATEGORIES]),
        _labels(cu["segment"], [s[0] for s in SEGMENTS]), pa.array(cu["effect"]),
        _labels(cu["channel"], [c[0] for c in ORDER_CHANNELS])],
        schema=SCHEMAS["truth_customers"])
    customers = pa.Table.from_arrays([
        pa.array(ids), _ts(plan, cu["signup"]), pa.array(cu["birth_year"].astype(np.int32)),
        _labels(cu["gender"], [g[0] for g in GENDERS]),
        _labels(cu["region"], [r[0] for r in REGIONS]),
        pc.utf8_lpad(pc.cast(pa.array(cu["postal"]), _STR), 5, "0")],
        schema=SCHEMAS["customers"])
    media = plan.campaign_media[co["campaign"]]
    contacts = pa.Table.from_arrays([
        pa.array(ids[co["cust"]]), pa.array(co["campaign"].astype(np.int64) + 1),
        _ts(plan, plan.campaign_weeks[co["campaign"]]), _labels(media, [m[0] for m in MEDIA]),
        pa.array(np.where(co["control"], 0.0, np.array([m[1] for m in MEDIA])[media])),
        _labels(co["control"].astype(np.int8), GROUPS)], schema=SCHEMAS["contacts"])
    emails = pa.Table.from_arrays([
        pa.array(ids[em["cust"]]), pa.array(em["month"].astype(np.int64) + EMAIL_CAMPAIGN_BASE + 1),
        _ts(plan, em["t"]), _labels(em["code"], EVENTS)], schema=SCHEMAS["email_events"])
    touch = pa.Table.from_arrays([
        pa.array(ids[tp["cust"]]), _ts(plan, tp["t"]), _labels(tp["channel"], TOUCH_CHANNELS)],
        schema=SCHEMAS["touchpoints"])
    ind = np.flatnonzero(od["campaign"] >= 0)
    induced = pa.Table.from_arrays([
        pa.array(ids[od["cust"][ind]]), pa.array(od["campaign"][ind].astype(np.int64) + 1),
        pa.array(rank[ind]), _ts(plan, od["t"][ind])], schema=SCHEMAS["truth_induced_orders"])
    return {"customers": customers, "email_events": emails, "contacts": contacts,
            "touchpoints": touch, "truth_customers": truth, "truth_induced_orders": induced}


# --------------------------------------------------------------------------- driver


def _chunks(plan: _Plan, total: int, workers: int) -> Iterator[_Chunk]:
    """Chunks in index order; up to ``workers`` are simulated ahead of the consumer."""
    size = plan.params.chunk_size
    n_chunks = -(-total // size)

    def job(i: int) -> _Chunk:
        return _simulate_chunk(plan, i, i * size + 1, min(size, total - i * size))

    if workers <= 1:
        for i in range(n_chunks):
            yield job(i)
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="centile-generate")
    try:
        pending = deque(pool.submit(job, i) for i in range(min(workers, n_chunks)))
        nxt = len(pending)
        while pending:
            chunk = pending.popleft().result()
            if nxt < n_chunks:
                pending.append(pool.submit(job, nxt))
                nxt += 1
            yield chunk
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _check(customers: int, seed: int, end: date, years: int, prm: SynthParams) -> None:
    if isinstance(customers, bool) or not isinstance(customers, int) or customers < 1:
        raise ConfigError(f"customers must be a positive integer, got {customers!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(end, datetime) or not isinstance(end, date):
        raise ConfigError(f"end must be a datetime.date, got {end!r}")
    if isinstance(years, bool) or not isinstance(years, int) or not 1 <= years <= 50:
        raise ConfigError(f"years must be an integer from 1 to 50, got {years!r}")
    if prm.chunk_size < 1 or prm.n_products < 12 * 20 or prm.n_campaigns < 1:
        raise ConfigError("SynthParams needs chunk_size >= 1, n_products >= 240, n_campaigns >= 1")
    if len(prm.segment_effects) != len(SEGMENTS) or not all(
            0.0 <= e <= 1.0 for e in prm.segment_effects):
        raise ConfigError(f"segment_effects needs {len(SEGMENTS)} probabilities (segments "
                          f"{', '.join(s[0] for s in SEGMENTS)}), got {prm.segment_effects!r}")
    if not (prm.a > 0 and prm.b > 0 and prm.r > 0 and prm.alpha > 0 and prm.gg_p > 0
            and prm.gg_q > 0 and prm.gg_gamma > 0):
        raise ConfigError("BG/NBD (r, alpha, a, b) and Gamma-Gamma (gg_p, gg_q, gg_gamma) "
                          "parameters must be positive")


def _params_doc(plan: _Plan, customers: int, years: int, rows: dict[str, int]) -> dict:
    prm = plan.params
    doc = asdict(prm)
    doc["segment_effects"] = {s[0]: e for s, e in zip(SEGMENTS, prm.segment_effects, strict=True)}
    return {
        "generator": "centile.generate", "centile_version": __version__, "seed": plan.seed,
        "customers": customers, "years": years, "start": plan.start.isoformat(),
        "end": plan.end.isoformat(), "window_weeks": plan.weeks, "time_unit": "weeks",
        "params": doc,
        "implied": {"mean_lambda_per_week": prm.r / prm.alpha, "mean_p": prm.a / (prm.a + prm.b),
                    "mean_order_value": (prm.gg_p * prm.gg_gamma / (prm.gg_q - 1))
                    if prm.gg_q > 1 else None},
        "segments": [{"segment": s[0], "age_min": s[1], "age_max": s[2], "effect": e,
                      "age_at": plan.end.isoformat()}
                     for s, e in zip(SEGMENTS, prm.segment_effects, strict=True)],
        "campaigns": [{"campaign_id": k + 1, "medium": MEDIA[m][0], "cost": MEDIA[m][1],
                       "sent_ts": _iso(plan, t)}
                      for k, (t, m) in enumerate(zip(plan.campaign_weeks, plan.campaign_media,
                                                     strict=True))],
        "email_campaigns": [{"campaign_id": EMAIL_CAMPAIGN_BASE + j + 1, "send_ts": _iso(plan, t)}
                            for j, t in enumerate(plan.email_weeks)],
        "categories": [{"category": c[0], "popularity": c[1], "min_price": c[2],
                        "max_price": c[3]} for c in CATEGORIES],
        "regions": [{"region": r[0], "share": r[1], "postal_leading_digits": list(r[2])}
                    for r in REGIONS],
        "genders": dict(GENDERS), "order_channels": dict(ORDER_CHANNELS), "media_costs": dict(MEDIA),
        "touch_channels": list(TOUCH_CHANNELS),
        "notes": [
            "Repeat purchases follow BG/NBD from the first purchase (first_purchase_ts); induced "
            "orders (truth/induced_orders.parquet) come on top and are not part of n_purchases.",
            "A campaign effect is the probability of one extra order within effect_window_days "
            "after sent_ts for a treated customer; it is zero in control.",
            "Contacts cost 0 for the control group (nothing was sent).",
            "A return booked as a separate line has negative quantity, the order's order_id and "
            "order_ts, and returned_quantity 0.",
            "Gross order value (sum of quantity x unit_price over positive lines) is the "
            "Gamma-Gamma draw up to the spacing of the price list.",
            "click_propensity is P(click | open).",
        ],
        "rows": rows,
    }


def generate(
    out: str | os.PathLike[str],
    customers: int,
    seed: int = 0,
    *,
    end: date = date(2025, 12, 31),
    years: int = 3,
    progress: Callable[[int, int], None] | None = None,
    params: SynthParams | None = None,
    workers: int | None = None,
) -> GenerateResult:
    """Write a synthetic data set with planted truth to the folder ``out``.

    Parameters
    ----------
    out : str or path-like
        Output folder; files are staged and moved into place only on success.
    customers : int
        Rows of ``customers.parquet`` (buyers plus engaged non-buyers).
    seed : int, default 0
        Seed of every random draw; same seed, size and parameters give the same data.
    end : datetime.date, default 2025-12-31
        Last day of the window (inclusive).
    years : int, default 3
        Length of the window ending at ``end``.
    progress : callable, optional
        Called as ``progress(done_customers, total_customers)`` after each chunk.
    params : SynthParams, optional
        Planted parameters; defaults to ``SynthParams()``.
    workers : int, optional
        Threads simulating chunks ahead of the writer (default: up to 2). Has no
        effect on the data.

    Returns
    -------
    GenerateResult
        The output folder, rows per table and the wall time.

    Notes
    -----
    Writes ``customers.parquet``, ``products.parquet``, ``orders/part-NNNNN.parquet``
    (one per chunk of customers), ``email_events.parquet``, ``contacts.parquet``,
    ``touchpoints.parquet`` and ``truth/`` (``params.json``, ``customers.parquet``,
    ``induced_orders.parquet``).
    """
    t_start = perf_counter()
    prm = params if params is not None else SynthParams()
    _check(customers, seed, end, years, prm)
    workers = max(1, min(2, os.cpu_count() or 1) if workers is None else int(workers))
    plan = _make_plan(seed, end, years, prm)
    rows = {name: 0 for name in ("customers", "products", "orders", "email_events", "contacts",
                                 "touchpoints", "truth_customers", "truth_induced_orders")}
    rows["products"] = plan.products.num_rows
    logger.info("generating %d customers (seed %d, %s to %s) into %s", customers, seed,
                plan.start, end, out)
    with staged_output(out) as staging:
        pq.write_table(plan.products, staging.path("products.parquet"), compression="zstd")
        writers = {name: pq.ParquetWriter(staging.path(rel), SCHEMAS[name], compression="zstd")
                   for name, rel in _CHUNKED_FILES.items()}
        try:
            done = orders_before = 0
            for chunk in _chunks(plan, customers, workers):
                offset = pa.scalar(orders_before + 1, pa.int64())
                orders = chunk.orders.set_column(
                    1, "order_id", pc.add(chunk.orders.column("order_id"), offset))
                pq.write_table(orders, staging.path(f"orders/part-{chunk.index:05d}.parquet"),
                               compression="zstd")
                tables = dict(chunk.tables)
                ind = tables["truth_induced_orders"]
                tables["truth_induced_orders"] = ind.set_column(
                    2, "order_id", pc.add(ind.column("order_id"), offset))
                for name, table in tables.items():
                    writers[name].write_table(table)
                    rows[name] += table.num_rows
                rows["orders"] += orders.num_rows
                orders_before += chunk.n_orders
                done += chunk.n_customers
                logger.debug("chunk %d: %d customers, %d order lines", chunk.index,
                             chunk.n_customers, orders.num_rows)
                if progress is not None:
                    progress(done, customers)
        finally:
            for w in writers.values():
                w.close()
        doc = _params_doc(plan, customers, years, rows)
        staging.path("truth/params.json").write_text(json.dumps(doc, indent=2) + "\n")
    seconds = round(perf_counter() - t_start, 3)
    logger.info("generated %d order lines for %d customers in %.1f s", rows["orders"], customers,
                seconds)
    return GenerateResult(out=Path(out), rows=rows, seconds=seconds)
