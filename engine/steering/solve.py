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
from dataclasses import dataclass, field

import numpy as np

from centile.kernels.contact_plan import concave_hulls, greedy_take, plans_at

BIG = np.iinfo(np.int64).max // 4


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


def _plan_value(values: np.ndarray, medium: np.ndarray) -> float:
    n, _, T = values.shape
    ii, tt = np.nonzero(medium >= 0)
    return math.fsum(values[ii, medium[ii, tt], tt].tolist())


def _repair(values: np.ndarray, medium: np.ndarray, capacity: np.ndarray,
            period_capacity: np.ndarray | None = None) -> np.ndarray:
    """Drop the lowest-value contacts of every (medium, period) over its capacity per
    period, then of every medium over its capacity (ties: the later customer, then the
    later period, go first). Dropping a contact keeps every other constraint met."""
    med = medium.copy()
    if period_capacity is not None:
        for m in np.flatnonzero(period_capacity < BIG):
            for t in range(values.shape[2]):
                ii = np.flatnonzero(med[:, t] == m)
                over = ii.size - int(period_capacity[m])
                if over <= 0:
                    continue
                order = np.lexsort((-ii, values[ii, m, t]))[:over]
                med[ii[order], t] = -1
    for m in range(values.shape[1]):
        if capacity[m] >= BIG:
            continue
        ii, tt = np.nonzero(med == m)
        over = ii.size - int(capacity[m])
        if over <= 0:
            continue
        val = values[ii, m, tt]
        order = np.lexsort((-tt, -ii, val))[:over]
        med[ii[order], tt[order]] = -1
    return med


def _evaluate(values, costs, budgets, since, cap, gap, global_budget, capacity, mu, pcap, nu, mcap):
    adj = values - mu[None, :, None] - nu[None, :, :] if (mu.any() or nu.any()) else values
    hoff, hb, hv = concave_hulls(adj, costs, budgets, since, cap=cap, gap=gap, medium_cap=mcap)
    vertex, lam, _ = greedy_take(hoff, hb, hv, global_budget)
    # bound: lambda * B_G + sum mu * Cap + sum_i max over hull vertices of (V - lambda b)
    n = hoff.size - 1
    score = hv - lam * hb
    best = np.maximum.reduceat(score, hoff[:-1]) if n else np.zeros(0)
    capped = capacity < BIG
    pcapped = pcap < BIG
    bound = math.fsum([lam * global_budget if global_budget < BIG else 0.0,
                       *(mu[capped] * capacity[capped]).tolist(),
                       *(nu[pcapped] * pcap[pcapped, None]).ravel().tolist(), *best.tolist()])
    spend = hb[hoff[:-1] + vertex]
    medium = plans_at(adj, costs, spend, since, cap=cap, gap=gap, medium_cap=mcap)
    M, T = values.shape[1], values.shape[2]
    usage = np.stack([np.bincount(np.where(medium[:, t] >= 0, medium[:, t], M), minlength=M + 1)[:M]
                      for t in range(T)], axis=1) if T else np.zeros((M, 0), np.int64)
    return bound, lam, medium, usage


def solve_plan(values: np.ndarray, costs: np.ndarray, budgets: np.ndarray, since: np.ndarray, *,
               cap: int, gap: int, global_budget: int | None = None,
               capacity: np.ndarray | None = None, iterations: int = 12, rounds: int = 2,
               medium_cap: np.ndarray | None = None, period_capacity: np.ndarray | None = None) -> Solution:
    """Plan contacts for every customer; see the module docstring.

    Parameters
    ----------
    values : ndarray (n, M, T)
        Value of each contact (NaN or <= 0: not eligible).
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
    """
    values = np.ascontiguousarray(values, dtype=np.float64)
    costs = np.asarray(costs, np.int64)
    M = values.shape[1]
    cap_arr = np.full(M, BIG, np.int64) if capacity is None else np.where(
        np.asarray(capacity) < 0, BIG, np.asarray(capacity)).astype(np.int64)
    bg = BIG if global_budget is None else int(global_budget)
    T = values.shape[2]
    pcap = np.full(M, BIG, np.int64) if period_capacity is None else np.where(
        np.asarray(period_capacity) < 0, BIG, np.asarray(period_capacity)).astype(np.int64)
    mu = np.zeros(M)
    nu = np.zeros((M, T))
    best = {"bound": math.inf, "value": -math.inf}
    evals = 0

    def run(mu_try: np.ndarray, nu_try: np.ndarray) -> np.ndarray:
        nonlocal evals
        evals += 1
        bound, lam, medium, usage = _evaluate(values, costs, budgets, since, cap, gap, bg, cap_arr, mu_try, pcap,
                                              nu_try, medium_cap)
        if bound < best["bound"]:
            best.update(bound=bound, lam=lam, mu=mu_try.copy(), nu=nu_try.copy())
        fixed = _repair(values, medium, cap_arr, pcap)
        val = _plan_value(values, fixed)
        if val > best["value"]:
            best.update(value=val, medium=fixed)
        return usage

    usage = run(mu, nu)
    pos = np.where(values > 0, values, 0.0)  # NaN > 0 is False
    hi_mt = pos.max(axis=0) if values.shape[0] else np.zeros((M, T))
    hi_all = hi_mt.max(axis=1) if T else np.zeros(M)
    del pos
    # coordinates: (m, -1) a medium's capacity over the horizon, (m, t) its capacity in period t
    coords = [(m, -1) for m in range(M) if cap_arr[m] < BIG] + [
        (m, t) for m in range(M) if pcap[m] < BIG for t in range(T)]
    for _ in range(rounds if coords else 0):
        changed = False
        for m, t in coords:
            limit = cap_arr[m] if t < 0 else pcap[m]
            cur = mu[m] if t < 0 else nu[m, t]
            used = usage[m].sum() if t < 0 else usage[m, t]
            if used <= limit and cur == 0.0:
                continue
            lo, hi = 0.0, float(hi_all[m] if t < 0 else hi_mt[m, t])
            for _ in range(iterations):
                mid = 0.5 * (lo + hi)
                tmu, tnu = mu.copy(), nu.copy()
                if t < 0:
                    tmu[m] = mid
                else:
                    tnu[m, t] = mid
                u = run(tmu, tnu)
                if (u[m].sum() if t < 0 else u[m, t]) > limit:
                    lo = mid
                else:
                    hi = mid
            if cur != hi:
                changed = True
            if t < 0:
                mu[m] = hi
            else:
                nu[m, t] = hi
            usage = run(mu, nu)
        if not changed:
            break
    medium = best["medium"]
    spend = int(sum(int(costs[m]) * int((medium == m).sum()) for m in range(M)))
    bound = best["bound"]
    gap_ = 0.0 if bound <= 0 else (bound - best["value"]) / bound
    return Solution(medium, float(best["value"]), float(bound), float(gap_), float(best["lam"]),
                    best["mu"], spend, evals, best["nu"])
