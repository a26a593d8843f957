"""The contact plan under a global budget and medium capacities, with a certified gap.

Decomposition (see :mod:`centile.kernels.contact_plan`): for multipliers ``mu``
(one per medium with a capacity) each customer's values become ``v - mu[m]``;
the per-customer DP gives every customer's value curve, the global budget is
the multiple-choice knapsack over the concave hulls of those curves, taken
greedily by slope (multiplier ``lambda``). Capacities: ``mu`` found coordinate-
wise by bisection; a repair step drops the lowest-value contacts of a medium
over its capacity. For any ``lambda, mu >= 0``

    UB = lambda * B_G + sum_m mu_m * Cap_m + sum_i max_b (V_i^mu(b) - lambda * b) >= OPT,

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
    ``lam``/``mu``: the multipliers of the bound; ``spend``: the plan's total cost.
    """

    medium: np.ndarray
    value: float
    bound: float
    gap: float
    lam: float
    mu: np.ndarray
    spend: int
    evaluations: int
    notes: tuple[str, ...] = field(default_factory=tuple)


def _plan_value(values: np.ndarray, medium: np.ndarray) -> float:
    n, _, T = values.shape
    ii, tt = np.nonzero(medium >= 0)
    return math.fsum(values[ii, medium[ii, tt], tt].tolist())


def _repair(values: np.ndarray, medium: np.ndarray, capacity: np.ndarray) -> np.ndarray:
    """Drop the lowest-value contacts of every medium over its capacity (ties: the
    later customer, then the later period, go first)."""
    med = medium.copy()
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


def _evaluate(values, costs, budgets, since, cap, gap, global_budget, capacity, mu):
    adj = values - mu[None, :, None]
    hoff, hb, hv = concave_hulls(adj, costs, budgets, since, cap=cap, gap=gap)
    vertex, lam, _ = greedy_take(hoff, hb, hv, global_budget)
    # bound: lambda * B_G + sum mu * Cap + sum_i max over hull vertices of (V - lambda b)
    n = hoff.size - 1
    score = hv - lam * hb
    best = np.maximum.reduceat(score, hoff[:-1]) if n else np.zeros(0)
    capped = capacity < BIG
    bound = math.fsum([lam * global_budget if global_budget < BIG else 0.0,
                       *(mu[capped] * capacity[capped]).tolist(), *best.tolist()])
    spend = hb[hoff[:-1] + vertex]
    medium = plans_at(adj, costs, spend, since, cap=cap, gap=gap)
    usage = np.array([(medium == m).sum() for m in range(values.shape[1])], np.int64)
    return bound, lam, medium, usage


def solve_plan(values: np.ndarray, costs: np.ndarray, budgets: np.ndarray, since: np.ndarray, *,
               cap: int, gap: int, global_budget: int | None = None,
               capacity: np.ndarray | None = None, iterations: int = 12, rounds: int = 2) -> Solution:
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
    iterations, rounds : int
        Bisection steps per medium and passes over the media.
    """
    values = np.ascontiguousarray(values, dtype=np.float64)
    costs = np.asarray(costs, np.int64)
    M = values.shape[1]
    cap_arr = np.full(M, BIG, np.int64) if capacity is None else np.where(
        np.asarray(capacity) < 0, BIG, np.asarray(capacity)).astype(np.int64)
    bg = BIG if global_budget is None else int(global_budget)
    mu = np.zeros(M)
    best = {"bound": math.inf, "value": -math.inf}
    evals = 0

    def run(mu_try: np.ndarray) -> np.ndarray:
        nonlocal evals
        evals += 1
        bound, lam, medium, usage = _evaluate(values, costs, budgets, since, cap, gap, bg, cap_arr, mu_try)
        if bound < best["bound"]:
            best.update(bound=bound, lam=lam, mu=mu_try.copy())
        fixed = _repair(values, medium, cap_arr)
        val = _plan_value(values, fixed)
        if val > best["value"]:
            best.update(value=val, medium=fixed)
        return usage

    usage = run(mu)
    hi_all = np.array([np.nanmax(np.where(values[:, m] > 0, values[:, m], 0.0)) if values.size else 0.0
                       for m in range(M)])
    for _ in range(rounds if (cap_arr < BIG).any() else 0):
        changed = False
        for m in range(M):
            if cap_arr[m] >= BIG or usage[m] <= cap_arr[m] and mu[m] == 0.0:
                continue
            lo, hi = 0.0, float(hi_all[m])
            for _ in range(iterations):
                mid = 0.5 * (lo + hi)
                trial = mu.copy()
                trial[m] = mid
                u = run(trial)
                if u[m] > cap_arr[m]:
                    lo = mid
                else:
                    hi = mid
            if mu[m] != hi:
                changed = True
            mu[m] = hi
            usage = run(mu)
        if not changed:
            break
    medium = best["medium"]
    spend = int(sum(int(costs[m]) * int((medium == m).sum()) for m in range(M)))
    bound = best["bound"]
    gap_ = 0.0 if bound <= 0 else (bound - best["value"]) / bound
    return Solution(medium, float(best["value"]), float(bound), float(gap_), float(best["lam"]),
                    best["mu"], spend, evals)
