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
from centile.steering.values import Values, as_values, blocks, max_positive

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


def _plan_value(values: Values, medium: np.ndarray) -> float:
    ii, tt = np.nonzero(medium >= 0)
    return math.fsum(values.at(ii, medium[ii, tt], tt).tolist())


def _repair(values: Values, medium: np.ndarray, capacity: np.ndarray,
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
                order = np.lexsort((-ii, values.at(ii, np.full(ii.size, m), np.full(ii.size, t))))[:over]
                med[ii[order], t] = -1
    for m in range(values.shape[1]):
        if capacity[m] >= BIG:
            continue
        ii, tt = np.nonzero(med == m)
        over = ii.size - int(capacity[m])
        if over <= 0:
            continue
        val = values.at(ii, np.full(ii.size, m), tt)
        order = np.lexsort((-tt, -ii, val))[:over]
        med[ii[order], tt[order]] = -1
    return med


def _refill(values, medium, repaired, costs, since, cap, gap, mcap, capacity, pcap, rounds=12):
    """Give the customers who lost contacts in the repair a new plan in what is left.

    Each such customer is planned again by the DP (``plans_at``) with every (medium,
    period) and medium that is full for the others made ineligible and a spend of at
    most their plan's spend before the repair (so the global budget still holds);
    contacts over a capacity after that are dropped again (lowest value first), and
    the round repeats with the customers who lost contacts this time. A customer's new
    plan replaces theirs only when it is worth more."""
    M, T = values.shape[1], values.shape[2]
    med = repaired
    hit = np.flatnonzero((medium != repaired).any(axis=1))
    for _ in range(rounds):
        if hit.size == 0:
            break
        others = med.copy()
        others[hit] = -1
        flat = np.where(others >= 0, others, M)
        per_t = np.stack([np.bincount(flat[:, t], minlength=M + 1)[:M] for t in range(T)], axis=1)
        total = per_t.sum(axis=1)
        rows = values.rows(hit)
        v = rows.copy()
        v[:, total >= capacity] = np.nan
        v[:, per_t >= pcap[:, None]] = np.nan
        spend = np.where(medium[hit] >= 0, costs[np.maximum(medium[hit], 0)], 0).sum(axis=1)
        new = plans_at(v, costs, spend, since[hit], cap=cap, gap=gap, medium_cap=mcap)
        old_val = np.nansum(np.where(med[hit] >= 0, np.take_along_axis(
            rows, np.maximum(med[hit], 0)[:, None, :], 1)[:, 0, :], 0.0), axis=1)
        new_val = np.nansum(np.where(new >= 0, np.take_along_axis(
            rows, np.maximum(new, 0)[:, None, :], 1)[:, 0, :], 0.0), axis=1)
        better = new_val > old_val
        trial = med.copy()
        trial[hit[better]] = new[better]
        fixed = _repair(values, trial, capacity, pcap)
        hit = np.flatnonzero((trial != fixed).any(axis=1))
        med = fixed
    return med


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


def _subgradient(run, mu, nu, usage, pcap, pmask, best, steps):
    """Projected subgradient steps on nu (where ``pmask``): nu += step * (usage - capacity),
    floored at 0, with Polyak's step (best bound - best plan value) / ||g||^2 scaled by a
    factor halved after three steps without a better bound; returns the nu of the best bound."""
    theta, stall = 1.0, 0
    top = best["bound"]
    best_nu = nu.copy()
    for _ in range(steps):
        g = np.where(pmask, usage - pcap[:, None], 0.0)
        g = np.where((nu <= 0) & (g < 0), 0.0, g)  # projected: nothing to lower below 0
        norm = float((g * g).sum())
        if norm == 0.0:
            break
        step = theta * max(best["bound"] - best["value"], 1e-12) / norm
        nu = np.maximum(0.0, nu + step * g)
        usage = run(mu, nu)
        if best["bound"] < top - 1e-12 * abs(top):
            top = best["bound"]
            best_nu = nu.copy()
            stall = 0
        else:
            stall += 1
            if stall >= 3:
                theta, stall = theta / 2, 0
    return best_nu


def solve_plan(values: np.ndarray | Values, costs: np.ndarray, budgets: np.ndarray, since: np.ndarray, *,
               cap: int, gap: int, global_budget: int | None = None,
               capacity: np.ndarray | None = None, iterations: int = 12, rounds: int = 2,
               medium_cap: np.ndarray | None = None, period_capacity: np.ndarray | None = None) -> Solution:
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
    """
    values = as_values(values)
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
    limited = bool((cap_arr < BIG).any() or (pcap < BIG).any())

    def run(mu_try: np.ndarray, nu_try: np.ndarray) -> np.ndarray:
        nonlocal evals
        evals += 1
        bound, lam, medium, usage = _evaluate(values, costs, budgets, since, cap, gap, bg, cap_arr, mu_try, pcap,
                                              nu_try, medium_cap)
        fixed = _repair(values, medium, cap_arr, pcap) if limited else medium
        if bound < best["bound"]:
            best.update(bound=bound, lam=lam, mu=mu_try.copy(), nu=nu_try.copy())
            if limited:
                best.update(lagrangian=(medium, fixed))
        val = _plan_value(values, fixed)
        if val > best["value"]:
            best.update(value=val, medium=fixed)
            if limited:
                best.update(origin=(medium, fixed))
        return usage

    usage = run(mu, nu)
    hi_mt = max_positive(values) if limited else np.zeros((M, T))
    hi_all = hi_mt.max(axis=1) if T else np.zeros(M)
    # mu: coordinate-wise, one medium at a time. nu: the periods of a medium interact
    # strongly (a contact priced out of one period moves to another, and with equal values
    # across periods per-period bisections chase each other), so first one level per medium
    # is bisected on its usage over all periods, then all (m, t) move together by projected
    # subgradient steps (Polyak's step towards the best plan value)
    coords = [m for m in range(M) if cap_arr[m] < BIG]
    pmask = (pcap < BIG)[:, None] & np.ones((M, T), bool)
    for _ in range(rounds if coords or pmask.any() else 0):
        changed = False
        for m in coords:
            if usage[m].sum() <= cap_arr[m] and mu[m] == 0.0:
                continue
            lo, hi = 0.0, float(hi_all[m])
            for _ in range(iterations):
                mid = 0.5 * (lo + hi)
                trial = mu.copy()
                trial[m] = mid
                u = run(trial, nu)
                if u[m].sum() > cap_arr[m]:
                    lo = mid
                else:
                    hi = mid
            changed |= mu[m] != hi
            mu[m] = hi
            usage = run(mu, nu)
        for m in np.flatnonzero(pcap < BIG):
            if (usage[m] <= pcap[m]).all() and not nu[m].any():
                continue
            lo, hi = 0.0, float(hi_all[m])
            for _ in range(iterations):
                mid = 0.5 * (lo + hi)
                trial = nu.copy()
                trial[m] = mid
                u = run(mu, trial)
                if u[m].sum() > pcap[m] * T:
                    lo = mid
                else:
                    hi = mid
            changed |= not (nu[m] == hi).all()
            nu[m] = hi
            usage = run(mu, nu)
        if pmask.any() and (usage[pmask] > pcap[:, None].repeat(T, 1)[pmask]).any():
            nu = _subgradient(run, mu, nu, usage, pcap, pmask, best, 2 * iterations)
            usage = run(mu, nu)
        if not changed:
            break
    if limited:
        # the Lagrangian plan at the multipliers of the best bound, repaired and refilled
        # and the one whose repair was worth the most
        for lag, fixed in (best["lagrangian"], best["origin"]):
            refilled = _refill(values, lag, fixed, costs, since, cap, gap, medium_cap, cap_arr, pcap)
            val = _plan_value(values, refilled)
            if val > best["value"]:
                best.update(value=val, medium=refilled)
    medium = best["medium"]
    spend = int(sum(int(costs[m]) * int((medium == m).sum()) for m in range(M)))
    bound = best["bound"]
    gap_ = 0.0 if bound <= 0 else (bound - best["value"]) / bound
    return Solution(medium, float(best["value"]), float(bound), float(gap_), float(best["lam"]),
                    best["mu"], spend, evals, best["nu"])
