"""Slow, obviously correct references for the steering kernels: every plan enumerated,
and the exact MILP (scipy.optimize.milp, HiGHS)."""

from __future__ import annotations

import itertools

import numpy as np


def feasible(plan, costs, cap, gap, since, budget=None, medium_cap=None) -> bool:
    """plan: medium per period (-1 none); medium_cap: per medium, negative = none."""
    ts = [t for t, m in enumerate(plan) if m >= 0]
    if len(ts) > cap:
        return False
    if medium_cap is not None:
        for m, k in enumerate(medium_cap):
            if k >= 0 and sum(1 for x in plan if x == m) > k:
                return False
    last = -since
    for t in ts:
        if t - last < gap + 1:
            return False
        last = t
    return budget is None or sum(costs[plan[t]] for t in ts) <= budget


def brute_curve(v, costs, budget, cap, gap, since, medium_cap=None):
    """V(b) for b = 0..C by enumerating every plan of one customer (v: (M, T))."""
    M, T = v.shape
    C = min(budget, cap * int(max(costs)))
    curve = np.zeros(C + 1)
    for plan in itertools.product(range(-1, M), repeat=T):
        if any(m >= 0 and not v[m, t] > 0 for t, m in enumerate(plan)):
            continue
        if not feasible(plan, costs, cap, gap, since, medium_cap=medium_cap):
            continue
        cost = sum(costs[m] for m in plan if m >= 0)
        if cost > C:
            continue
        val = sum(v[m, t] for t, m in enumerate(plan) if m >= 0)
        curve[cost:] = np.maximum(curve[cost:], val)
    return curve


def milp_optimum(values, costs, budgets, since, cap, gap, global_budget=None, capacity=None, medium_cap=None,
                 period_capacity=None):
    """The exact optimum of the contact-plan integer programme (medium_cap: per customer and
    medium; period_capacity: contacts per medium and period; negative entries = none)."""
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import lil_matrix

    n, M, T = values.shape
    nv = n * M * T
    idx = np.arange(nv).reshape(n, M, T)
    ok = np.isfinite(values) & (values > 0)
    c = -np.where(ok, values, 0.0).ravel()
    rows, lo, hi = [], [], []
    A = lil_matrix((n * T * 2 + n * 2 + 1 + M + n * T + n * M + M * T, nv))
    r = 0
    for i in range(n):
        for t in range(T):  # one contact per period and the gap: a window of gap+1 periods
            for tt in range(t, min(T, t + gap + 1)):
                A[r, idx[i, :, tt]] = 1
            lo.append(-np.inf), hi.append(1)
            r += 1
        w0 = max(0, gap + 1 - int(since[i]))  # periods blocked by the last contact
        if w0:
            for tt in range(min(w0, T)):
                A[r, idx[i, :, tt]] = 1
            lo.append(-np.inf), hi.append(0)
            r += 1
        A[r, idx[i].ravel()] = 1
        lo.append(-np.inf), hi.append(cap)
        r += 1
        for m in range(M):
            A[r, idx[i, m]] = costs[m]
        lo.append(-np.inf), hi.append(budgets[i])
        r += 1
        if medium_cap is not None:
            for m in range(M):
                if medium_cap[m] >= 0:
                    A[r, idx[i, m]] = 1
                    lo.append(-np.inf), hi.append(medium_cap[m])
                    r += 1
    if global_budget is not None:
        for m in range(M):
            A[r, idx[:, m].ravel()] = costs[m]
        lo.append(-np.inf), hi.append(global_budget)
        r += 1
    if capacity is not None:
        for m in range(M):
            if capacity[m] >= 0:
                A[r, idx[:, m].ravel()] = 1
                lo.append(-np.inf), hi.append(capacity[m])
                r += 1
    if period_capacity is not None:
        for m in range(M):
            if period_capacity[m] >= 0:
                for t in range(T):
                    A[r, idx[:, m, t]] = 1
                    lo.append(-np.inf), hi.append(period_capacity[m])
                    r += 1
    del rows
    A = A[:r].tocsr()
    res = milp(c, constraints=LinearConstraint(A, lo, hi), integrality=np.ones(nv),
               bounds=Bounds(0, ok.ravel().astype(float)), options={"mip_rel_gap": 1e-9})
    return -res.fun


def accept_moves_reference(order, old, new, costs, usage_mt, usage_m, period_capacity, capacity, spend_left):
    """Try each candidate's new plan in order on copies of the usage; keep it when the spend
    and every capacity allow (the old plan of that candidate no longer counted)."""
    u_mt, u_m = usage_mt.copy(), usage_m.copy()
    taken = np.zeros(len(old), bool)
    for r in order:
        add = sum(int(costs[m]) for m in new[r] if m >= 0) - sum(int(costs[m]) for m in old[r] if m >= 0)
        if add > spend_left:
            continue
        t_mt, t_m = u_mt.copy(), u_m.copy()
        for t, m in enumerate(old[r]):
            if m >= 0:
                t_mt[m, t] -= 1
                t_m[m] -= 1
        for t, m in enumerate(new[r]):
            if m >= 0:
                t_mt[m, t] += 1
                t_m[m] += 1
        if all(t_mt[m, t] <= period_capacity[m] and t_m[m] <= capacity[m] for t, m in enumerate(new[r]) if m >= 0):
            u_mt, u_m, spend_left = t_mt, t_m, spend_left - add
            taken[r] = True
    return taken, spend_left, u_mt, u_m
