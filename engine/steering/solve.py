"""The contact plan under a global budget and medium capacities, with a certified gap.

Decomposition (see :mod:`centile.kernels.contact_plan`): for multipliers ``mu``
(one per medium with a capacity over the horizon) and ``nu`` (one per medium with a
capacity per period, and period) each customer's values become
``v - mu[m] - nu[m, t]``; a frequency cap per medium is exact inside the DP;
the per-customer DP gives every customer's value curve, the global budget is
the multiple-choice knapsack over the concave hulls of those curves, taken
greedily by slope (multiplier ``lambda``). Capacities: ``mu`` found coordinate-
wise by bisection (``nu`` likewise, per medium and period); a repair step drops the
lowest-value contacts of a (medium, period) over its capacity per period, then of a
medium over its capacity. For any ``lambda, mu, nu >= 0``

    UB = lambda * B_G + sum_m mu_m * Cap_m + sum_{m,t} nu_mt * CapP_m
         + sum_i max_b (V_i^{mu,nu}(b) - lambda * b) >= OPT,

so ``gap = (UB - plan value) / UB`` certifies the plan. The best plan and the
smallest bound over all evaluated multipliers are kept.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from centile.kernels.contact_plan import concave_hulls, greedy_take, plans_at
from centile.steering.primal import BIG, improve, plan_value, refill, repair
from centile.steering.values import Dense, Values, as_values, blocks, max_positive


@dataclass(frozen=True)
class Solution:
    """A contact plan and its certificate.

    ``medium`` (n, T): medium index per customer and period, -1 for none.
    ``value``: the plan's value; ``bound``: the Lagrangian upper bound;
    ``gap`` = (bound - value) / bound (0 when the bound is 0).
    ``lam``/``mu``/``nu``: the multipliers of the bound (``nu`` (M, T): per medium and
    period); ``spend``: the plan's total cost.
    """

    medium: np.ndarray
    value: float
    bound: float
    gap: float
    lam: float
    mu: np.ndarray
    spend: int
    evaluations: int
    nu: np.ndarray | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


def _adjusted(values: Values, a: int, b: int, mu: np.ndarray, nu: np.ndarray) -> np.ndarray:
    v = values.block(a, b)
    return v - mu[None, :, None] - nu[None, :, :] if (mu.any() or nu.any()) else v


def _evaluate(values, costs, budgets, since, cap, gap, global_budget, capacity, mu, pcap, nu, mcap):
    # one block of customers at a time: the values (and their adjustment by the
    # multipliers) are never held for every customer at once
    n = values.shape[0]
    parts = [concave_hulls(_adjusted(values, a, b, mu, nu), costs, budgets[a:b], since[a:b], cap=cap, gap=gap,
                           medium_cap=mcap) for a, b in blocks(n)]
    if parts:
        hoff = np.concatenate([[0], np.cumsum(np.concatenate([np.diff(p[0]) for p in parts]))]).astype(np.int64)
        hb = np.concatenate([p[1] for p in parts])
        hv = np.concatenate([p[2] for p in parts])
    else:
        hoff, hb, hv = np.zeros(1, np.int64), np.zeros(0, np.int64), np.zeros(0)
    del parts
    vertex, lam, _ = greedy_take(hoff, hb, hv, global_budget)
    # bound: lambda * B_G + sum mu * Cap + sum_i max over hull vertices of (V - lambda b)
    score = hv - lam * hb
    best = np.maximum.reduceat(score, hoff[:-1]) if n else np.zeros(0)
    capped = capacity < BIG
    pcapped = pcap < BIG
    bound = math.fsum([lam * global_budget if global_budget < BIG else 0.0,
                       *(mu[capped] * capacity[capped]).tolist(),
                       *(nu[pcapped] * pcap[pcapped, None]).ravel().tolist(), *best.tolist()])
    spend = hb[hoff[:-1] + vertex]
    M, T = values.shape[1], values.shape[2]
    medium = np.full((n, T), -1, np.int8 if M < 127 else np.int16)  # the plan of every customer, small
    for a, b in blocks(n):
        medium[a:b] = plans_at(_adjusted(values, a, b, mu, nu), costs, spend[a:b], since[a:b], cap=cap, gap=gap,
                               medium_cap=mcap)
    usage = np.stack([np.bincount(np.where(medium[:, t] >= 0, medium[:, t], M), minlength=M + 1)[:M]
                      for t in range(T)], axis=1) if T else np.zeros((M, 0), np.int64)
    return bound, lam, medium, usage


class _Dual:
    """One instance of the plan: ``run(mu, nu)`` evaluates the Lagrangian at the multipliers
    (the bound, the plan of every customer, its use of every (medium, period)), repairs the
    plan when a capacity binds, and keeps the smallest bound and the best plan seen."""

    def __init__(self, values, costs, budgets, since, cap, gap, bg, capacity, pcap, mcap):
        self.values, self.costs, self.budgets, self.since = values, costs, budgets, since
        self.cap, self.gap, self.bg, self.capacity, self.pcap, self.mcap = cap, gap, bg, capacity, pcap, mcap
        self.limited = bool((capacity < BIG).any() or (pcap < BIG).any())
        self.best: dict = {"bound": math.inf, "value": -math.inf}
        self.evals = 0

    def run(self, mu: np.ndarray, nu: np.ndarray) -> np.ndarray:
        self.evals += 1
        best = self.best
        bound, lam, medium, usage = _evaluate(self.values, self.costs, self.budgets, self.since, self.cap, self.gap,
                                              self.bg, self.capacity, mu, self.pcap, nu, self.mcap)
        fixed = repair(self.values, medium, self.capacity, self.pcap) if self.limited else medium
        if bound < best["bound"]:
            best.update(bound=bound, lam=lam, mu=mu.copy(), nu=nu.copy(), usage=usage)
            if self.limited:
                best.update(lagrangian=(medium, fixed))
        val = plan_value(self.values, fixed)
        if val > best["value"]:
            best.update(value=val, medium=fixed)
            if self.limited:
                best.update(origin=(medium, fixed))
        return usage

    @property
    def gap_now(self) -> float:
        b = self.best
        return 0.0 if b["bound"] <= 0 else (b["bound"] - b["value"]) / b["bound"]


def _subgradient(d: _Dual, mu, nu, usage, steps, *, both: bool = False, tol: float = 0.0):
    """Projected subgradient steps on nu (and mu when ``both``): nu += step * (usage - capacity),
    floored at 0, with Polyak's step (best bound - best plan value) / ||g||^2 scaled by a
    factor halved after three steps without a better bound; stops early once the certified
    gap is at most ``tol``. Returns the (mu, nu) of the best bound."""
    pcap, cap_m = d.pcap, d.capacity
    pmask = np.broadcast_to((pcap < BIG)[:, None], nu.shape)
    theta, stall = 1.0, 0
    top = d.best["bound"]
    for _ in range(steps):
        if d.gap_now <= tol:
            break
        g = np.where(pmask, usage - pcap[:, None], 0.0)
        g = np.where((nu <= 0) & (g < 0), 0.0, g)  # projected: nothing to lower below 0
        gm = np.where(cap_m < BIG, usage.sum(axis=1) - cap_m, 0.0) if both else np.zeros(mu.size)
        gm = np.where((mu <= 0) & (gm < 0), 0.0, gm)
        norm = float((g * g).sum() + (gm * gm).sum())
        if norm == 0.0:
            break
        step = theta * max(d.best["bound"] - d.best["value"], 1e-12) / norm
        nu = np.maximum(0.0, nu + step * g)
        mu = np.maximum(0.0, mu + step * gm)
        usage = d.run(mu, nu)
        if d.best["bound"] < top - 1e-12 * abs(top):
            top = d.best["bound"]
            stall = 0
        else:
            stall += 1
            if stall >= 3:
                theta, stall = theta / 2, 0
    return d.best["mu"].copy(), d.best["nu"].copy()


def _with(a: np.ndarray, m: int, x: float) -> np.ndarray:
    """A copy of the multipliers ``a`` with row (or entry) ``m`` set to ``x``."""
    out = a.copy()
    out[m] = x
    return out


def _bisect(over: Callable[[float], bool], hi: float, iterations: int) -> float:
    """The smallest multiplier in ``[0, hi]`` (to ``iterations`` halvings) at which the medium is not
    ``over`` its capacity."""
    lo = 0.0
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        if over(mid):
            lo = mid
        else:
            hi = mid
    return hi


def _search(d: _Dual, iterations: int, rounds: int) -> None:
    """Multipliers for the capacities of ``d``, from zero (the best bound and plan in ``d.best``).

    mu: coordinate-wise, one medium at a time. nu: the periods of a medium interact strongly
    (a contact priced out of one period moves to another, and with equal values across
    periods per-period bisections chase each other), so first one level per medium is bisected
    on its usage over all periods, then all (m, t) move together by projected subgradient steps
    (Polyak's step towards the best plan value)."""
    M, T = d.values.shape[1], d.values.shape[2]
    cap_arr, pcap = d.capacity, d.pcap
    mu, nu = np.zeros(M), np.zeros((M, T))
    usage = d.run(mu, nu)
    if not d.limited:
        return
    hi_mt = max_positive(d.values)
    hi_all = hi_mt.max(axis=1) if T else np.zeros(M)
    coords = [m for m in range(M) if cap_arr[m] < BIG]
    pmask = (pcap < BIG)[:, None] & np.ones((M, T), bool)
    for _ in range(rounds):
        changed = False
        for m in coords:
            if usage[m].sum() <= cap_arr[m] and mu[m] == 0.0:
                continue
            hi = _bisect(lambda x, m=m, nu=nu: d.run(_with(mu, m, x), nu)[m].sum() > cap_arr[m],
                         float(hi_all[m]), iterations)
            changed |= mu[m] != hi
            mu[m] = hi
            usage = d.run(mu, nu)
        for m in np.flatnonzero(pcap < BIG):
            if (usage[m] <= pcap[m]).all() and not nu[m].any():
                continue
            hi = _bisect(lambda x, m=m, nu=nu: d.run(mu, _with(nu, m, x))[m].sum() > pcap[m] * T,
                         float(hi_all[m]), iterations)
            changed |= not (nu[m] == hi).all()
            nu[m] = hi
            usage = d.run(mu, nu)
        if pmask.any() and (usage[pmask] > pcap[:, None].repeat(T, 1)[pmask]).any():
            _, nu = _subgradient(d, mu, nu, usage, 2 * iterations)
            usage = d.run(mu, nu)
        if not changed:
            break


#: customers in the sample on which the multipliers are searched (larger instances only)
SAMPLE = 10_000

_K = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))


def sample_rows(values: Values, budgets: np.ndarray, since: np.ndarray, size: int) -> np.ndarray:
    """About ``size`` customers chosen by a hash of their own data (values, budget, periods
    since the last contact), so the sample is the same for any order of the customers;
    sorted row indices."""
    n = values.shape[0]
    h = np.empty(n, np.uint64)
    with np.errstate(over="ignore"):
        for a, b in blocks(n):
            bits = np.ascontiguousarray(np.nan_to_num(values.block(a, b), nan=-1.0)
                                        .reshape(b - a, -1)).view(np.uint64)
            x = budgets[a:b].astype(np.uint64) * _K[0] ^ since[a:b].astype(np.uint64)
            for j in range(bits.shape[1]):
                x = (x ^ bits[:, j]) * _K[1]
                x ^= x >> np.uint64(31)
            x = (x ^ (x >> np.uint64(29))) * _K[2]
            h[a:b] = x ^ (x >> np.uint64(32))
    cut = np.uint64(min(2 ** 64 - 1, int(size / max(n, 1) * 2 ** 64)))
    return np.flatnonzero(h < cut)


def _scaled(limit: np.ndarray, f: float) -> np.ndarray:
    return np.where(limit < BIG, np.floor(limit * f), BIG).astype(np.int64)


def solve_plan(values: np.ndarray | Values, costs: np.ndarray, budgets: np.ndarray, since: np.ndarray, *,
               cap: int, gap: int, global_budget: int | None = None,
               capacity: np.ndarray | None = None, iterations: int = 12, rounds: int = 2,
               medium_cap: np.ndarray | None = None, period_capacity: np.ndarray | None = None,
               sample: int = SAMPLE, refine: int = 0, tol: float = 1e-3) -> Solution:
    """Plan contacts for every customer; see the module docstring.

    Parameters
    ----------
    values : ndarray (n, M, T), or :class:`~centile.steering.values.Factored`
        Value of each contact (NaN or <= 0: not eligible); factored values are built
        one block of customers at a time, never for all at once.
    costs : ndarray of int (M,)
        Cost per contact in integer units.
    budgets : ndarray of int (n,)
        Each customer's budget in cost units.
    since : ndarray of int (n,)
        Periods since the last contact before the horizon.
    cap, gap : int
        Frequency cap and minimum gap (empty periods) per customer.
    global_budget : int, optional
        Total cost allowed (units); None: unlimited.
    capacity : ndarray of int (M,), optional
        Contacts allowed per medium; a negative entry means unlimited.
    medium_cap : ndarray of int (M,), optional
        Contacts allowed per customer and medium (exact, in the DP); negative: none.
    period_capacity : ndarray of int (M,), optional
        Contacts allowed per medium in each period; negative: unlimited.
    iterations, rounds : int
        Bisection steps per medium and passes over the media.
    sample : int
        With a capacity and more than twice this many customers, the multipliers are
        searched on a sample of about this many customers (:func:`sample_rows`; the
        capacities and the global budget scaled by its share), then used for all: the
        bound stays certified (it holds for any multipliers), each step of the search
        costs a solve of the sample instead of all customers.
    refine, tol : int, float
        After a sampled search, at most ``refine`` projected subgradient steps on all
        customers (mu and nu together), stopped once the certified gap is at most ``tol``.
        Each step is a solve of every customer. Off by default: on the benchmark instances
        (60,000 and 300,000 customers, a sample of 20,000 or 5,000) three steps never
        lowered the bound and took two thirds of the time on all customers; they matter
        when the sample is small against the instance (600 customers, a sample of 150:
        two steps took the gap of one seed from 4.4 % to 2.5 %).
    """
    values = as_values(values)
    costs = np.asarray(costs, np.int64)
    budgets = np.maximum(np.asarray(budgets, np.int64), 0)
    since = np.asarray(since, np.int64)
    n, M, T = values.shape
    cap_arr = np.full(M, BIG, np.int64) if capacity is None else np.where(
        np.asarray(capacity) < 0, BIG, np.asarray(capacity)).astype(np.int64)
    bg = BIG if global_budget is None else int(global_budget)
    pcap = np.full(M, BIG, np.int64) if period_capacity is None else np.where(
        np.asarray(period_capacity) < 0, BIG, np.asarray(period_capacity)).astype(np.int64)
    d = _Dual(values, costs, budgets, since, cap, gap, bg, cap_arr, pcap, medium_cap)
    notes: list[str] = []
    idx = sample_rows(values, budgets, since, sample) if d.limited and n > 2 * sample else None
    if idx is not None and idx.size:
        f = idx.size / n
        part = _Dual(Dense(values.rows(idx)), costs, budgets[idx], since[idx], cap, gap,
                     BIG if bg >= BIG else int(bg * f), _scaled(cap_arr, f), _scaled(pcap, f), medium_cap)
        _search(part, iterations, rounds)
        mu, nu = part.best["mu"], part.best["nu"]
        usage = d.run(mu, nu)
        _subgradient(d, mu, nu, usage, refine, both=True, tol=tol)
        notes.append(f"multipliers searched on a sample of {idx.size:,} customers ({part.evals} solves), then "
                     f"{d.evals} solve(s) of all {n:,}")
    else:
        _search(d, iterations, rounds)
    best = d.best
    if d.limited:
        # the Lagrangian plan at the multipliers of the best bound, and the one whose repair
        # was worth the most: each repaired, refilled and improved
        for lag, fixed in (best["lagrangian"], best["origin"]):
            better = refill(values, lag, fixed, costs, since, cap, gap, medium_cap, cap_arr, pcap)
            better = improve(values, lag, better, costs, budgets, since, cap, gap, medium_cap, cap_arr, pcap, bg)
            val = plan_value(values, better)
            if val > best["value"]:
                best.update(value=val, medium=better)
    medium = best["medium"]
    spend = int(sum(int(costs[m]) * int((medium == m).sum()) for m in range(M)))
    bound = best["bound"]
    gap_ = 0.0 if bound <= 0 else (bound - best["value"]) / bound
    return Solution(medium, float(best["value"]), float(bound), float(gap_), float(best["lam"]),
                    best["mu"], spend, d.evals, best["nu"], tuple(notes))
