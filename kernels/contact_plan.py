"""Per-customer contact plans: a dynamic programme over periods for every budget.

Customer ``i`` may receive at most one contact per period ``t`` (medium ``m``
with value ``v[i, m, t]`` and integer cost ``cost[m]``), at most ``cap``
contacts over the horizon, and two contacts at least ``gap`` empty periods
apart (a contact before the horizon, ``since[i]`` periods before the first
period, counts). A contact is eligible when its value is finite and > 0, so a
customer whose contacts all have value <= 0 is never contacted.

The DP state at the start of a period is (contacts used ``k``, periods still
blocked ``w`` in 0..gap, cost spent ``c`` in 0..C); ``C = min(budget, cap *
max cost)``. ``V(b)`` = best value with spend <= b, non-decreasing in b.

Public functions
----------------
value_curves
    ``V_i(b)`` for b = 0..C_i of every customer (flat, with offsets).
concave_hulls
    The vertices of the upper concave hull of every ``V_i`` (flat, with offsets),
    the input of the Lagrangian multiple-choice knapsack.
plans_at
    The contacts of the best plan of each customer at a given spend.
greedy_take
    Hull segments taken greedily by slope under a global budget.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from centile.kernels._flags import JIT, JIT_PARALLEL

NEG = -np.inf


def _check(values: np.ndarray, costs: np.ndarray, budgets: np.ndarray, since: np.ndarray,
           cap: int, gap: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    v = np.ascontiguousarray(values, dtype=np.float64)
    if v.ndim != 3:
        raise ValueError("values must have shape (customers, media, periods)")
    c = np.ascontiguousarray(costs, dtype=np.int64)
    if c.shape != (v.shape[1],) or (c.size and c.min() < 1):
        raise ValueError("costs must be one integer >= 1 per medium")
    b = np.ascontiguousarray(budgets, dtype=np.int64)
    s = np.ascontiguousarray(since, dtype=np.int64)
    if b.shape != (v.shape[0],) or s.shape != (v.shape[0],):
        raise ValueError("budgets and since need one value per customer")
    if cap < 0 or gap < 0:
        raise ValueError("cap and gap must be >= 0")
    return v, c, np.maximum(b, 0), np.maximum(s, 1)


@njit(**JIT)
def _span(budget: int, costs: np.ndarray, cap: int) -> int:
    mx = 0
    for m in range(costs.size):
        mx = max(mx, costs[m])
    return min(budget, cap * mx)


@njit(**JIT)
def _dp(v: np.ndarray, costs: np.ndarray, C: int, cap: int, gap: int, since: int,
        dec: np.ndarray, keep: bool, curve: np.ndarray, fin: np.ndarray) -> None:
    """Forward DP of one customer; ``curve[c]`` = best value with spend exactly c
    (then made a prefix max). ``dec[t, k, w, c]`` (when ``keep``) records how the
    state at the start of period t+1 was reached: -3 unreachable, -2 waited,
    -1 skipped, m contacted medium m. ``fin`` receives the values of the end states."""
    M, T = v.shape
    G = gap + 1
    cur = np.full((cap + 1, G, C + 1), NEG)
    nxt = np.full((cap + 1, G, C + 1), NEG)
    w0 = max(0, gap + 1 - since)
    cur[0, min(w0, gap), 0] = 0.0
    for t in range(T):
        nxt[:] = NEG
        if keep:
            dec[t] = -3
        for k in range(cap + 1):
            for w in range(G):
                for c in range(C + 1):
                    x = cur[k, w, c]
                    if x == NEG:
                        continue
                    if w > 0:
                        if x > nxt[k, w - 1, c]:
                            nxt[k, w - 1, c] = x
                            if keep:
                                dec[t, k, w - 1, c] = -2
                        continue
                    if x > nxt[k, 0, c]:
                        nxt[k, 0, c] = x
                        if keep:
                            dec[t, k, 0, c] = -1
                    if k == cap:
                        continue
                    for m in range(M):
                        val = v[m, t]
                        if not (val > 0.0):  # NaN, <= 0: not eligible
                            continue
                        c2 = c + costs[m]
                        if c2 > C:
                            continue
                        y = x + val
                        if y > nxt[k + 1, gap, c2]:
                            nxt[k + 1, gap, c2] = y
                            if keep:
                                dec[t, k + 1, gap, c2] = m
        cur, nxt = nxt, cur
    fin[:] = cur
    for c in range(C + 1):
        best = NEG
        for k in range(cap + 1):
            for w in range(G):
                if cur[k, w, c] > best:
                    best = cur[k, w, c]
        curve[c] = best
    run = 0.0
    for c in range(C + 1):
        if curve[c] > run:
            run = curve[c]
        curve[c] = run


@njit(**JIT_PARALLEL)
def _curves(v, costs, budgets, since, cap, gap, offsets, out):
    dummy = np.empty((1, 1, 1, 1), np.int8)
    for i in prange(v.shape[0]):
        C = offsets[i + 1] - offsets[i] - 1
        fin = np.empty((cap + 1, gap + 1, C + 1))
        _dp(v[i], costs, C, cap, gap, since[i], dummy, False, out[offsets[i]:offsets[i + 1]], fin)


def value_curves(values: np.ndarray, costs: np.ndarray, budgets: np.ndarray, since: np.ndarray, *,
                 cap: int, gap: int) -> tuple[np.ndarray, np.ndarray]:
    """Best plan value of every customer for every spend.

    Parameters
    ----------
    values : ndarray, shape (n, M, T)
        Value of each contact; NaN or <= 0 means not eligible.
    costs : ndarray of int, shape (M,)
        Cost of a contact of each medium in integer units (>= 1).
    budgets : ndarray of int, shape (n,)
        Each customer's budget in the same units.
    since : ndarray of int, shape (n,)
        Periods between the last contact before the horizon and the first period
        (1 = the period just before; a large number when never contacted).
    cap, gap : int
        At most ``cap`` contacts; at least ``gap`` empty periods between two.

    Returns
    -------
    offsets : ndarray of int64, shape (n + 1,)
    curves : ndarray of float64
        ``curves[offsets[i] + b]`` = V_i(b) for b = 0..C_i, C_i = min(budget_i, cap * max(costs)).
    """
    v, c, b, s = _check(values, costs, budgets, since, cap, gap)
    span = np.minimum(b, cap * (int(c.max()) if c.size else 0))
    offsets = np.zeros(v.shape[0] + 1, np.int64)
    np.cumsum(span + 1, out=offsets[1:])
    out = np.zeros(int(offsets[-1]), np.float64)
    if v.shape[0]:
        _curves(v, c, b, s, cap, gap, offsets, out)
    return offsets, out


@njit(**JIT)
def _hull(curve: np.ndarray, hb: np.ndarray, hv: np.ndarray) -> int:
    """Upper concave hull vertices of a non-decreasing curve from b = 0 up to its first
    maximum; returns the count written into hb, hv (which need curve.size slots)."""
    n = 0
    top = curve[curve.size - 1]
    for b in range(curve.size):
        if b > 0 and curve[b] <= curve[b - 1]:
            continue
        y = curve[b]
        while n >= 2:
            # drop the last vertex when it is on or below the chord from n-2 to (b, y)
            b1, y1 = hb[n - 2], hv[n - 2]
            b2, y2 = hb[n - 1], hv[n - 1]
            if (y2 - y1) * (b - b1) <= (y - y1) * (b2 - b1):
                n -= 1
            else:
                break
        hb[n] = b
        hv[n] = y
        n += 1
        if y >= top:
            break
    return n


@njit(**JIT_PARALLEL)
def _hulls(v, costs, budgets, since, cap, gap, count_only, hoff, hb, hv, counts):
    n = v.shape[0]
    dummy = np.empty((1, 1, 1, 1), np.int8)
    for i in prange(n):
        C = _span(budgets[i], costs, cap)
        curve = np.empty(C + 1)
        fin = np.empty((cap + 1, gap + 1, C + 1))
        _dp(v[i], costs, C, cap, gap, since[i], dummy, False, curve, fin)
        tb = np.empty(C + 1, np.int64)
        tv = np.empty(C + 1)
        h = _hull(curve, tb, tv)
        if count_only:
            counts[i] = h
        else:
            for j in range(h):
                hb[hoff[i] + j] = tb[j]
                hv[hoff[i] + j] = tv[j]


def concave_hulls(values: np.ndarray, costs: np.ndarray, budgets: np.ndarray, since: np.ndarray, *,
                  cap: int, gap: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vertices of the upper concave hull of every customer's value curve.

    Same parameters as :func:`value_curves`. Returns ``offsets`` (n + 1), ``spend``
    (int64) and ``value`` (float64): customer i's vertices are
    ``spend[offsets[i]:offsets[i+1]]``, starting at (0, 0), spend increasing and
    slopes strictly decreasing, ending at the first spend reaching the curve's maximum.
    The DP runs twice (count, then fill) so memory stays at the hull size.
    """
    v, c, b, s = _check(values, costs, budgets, since, cap, gap)
    n = v.shape[0]
    counts = np.zeros(n, np.int64)
    hoff = np.zeros(n + 1, np.int64)
    if n == 0:
        return hoff, np.zeros(0, np.int64), np.zeros(0)
    _hulls(v, c, b, s, cap, gap, True, hoff, np.zeros(0, np.int64), np.zeros(0), counts)
    np.cumsum(counts, out=hoff[1:])
    hb = np.zeros(int(hoff[-1]), np.int64)
    hv = np.zeros(int(hoff[-1]))
    _hulls(v, c, b, s, cap, gap, False, hoff, hb, hv, counts)
    return hoff, hb, hv


@njit(**JIT_PARALLEL)
def _plans(v, costs, spend, since, cap, gap, out_m):
    n, M, T = v.shape
    for i in prange(n):
        C = spend[i]
        if C <= 0:
            continue
        dec = np.empty((T, cap + 1, gap + 1, C + 1), np.int8)
        curve = np.empty(C + 1)
        fin = np.empty((cap + 1, gap + 1, C + 1))
        _dp(v[i], costs, C, cap, gap, since[i], dec, True, curve, fin)
        if not (curve[C] > 0.0):
            continue
        # the end state of the best plan: the smallest spend reaching the best value,
        # then the first (k, w) holding it; walk the decisions back from there
        target = curve[C]
        c = 0
        while curve[c] < target:
            c += 1
        k = -1
        w = -1
        for kk in range(cap + 1):
            for ww in range(gap + 1):
                if k < 0 and fin[kk, ww, c] >= target:
                    k = kk
                    w = ww
        t = T - 1
        while t >= 0:
            d = dec[t, k, w, c]
            if d == -2:
                w += 1
            elif d >= 0:
                out_m[i, t] = d
                k -= 1
                w = 0
                c -= costs[d]
            t -= 1


def plans_at(values: np.ndarray, costs: np.ndarray, spend: np.ndarray, since: np.ndarray, *,
             cap: int, gap: int) -> np.ndarray:
    """The best plan of every customer with spend <= ``spend[i]``.

    Returns ``medium`` (int64, shape (n, T)): the medium contacted in each period,
    -1 for none. Same parameters as :func:`value_curves` with the spend in place of
    the budget; ties go to the plan found first (deterministic).
    """
    v, c, sp, s = _check(values, costs, spend, since, cap, gap)
    out = np.full((v.shape[0], v.shape[2]), -1, np.int64)
    if v.shape[0]:
        _plans(v, c, sp, s, cap, gap, out)
    return out


@njit(**JIT)
def _greedy(order, cust, seg_cost, seg_pos, budget, taken_upto):
    used = 0
    for j in range(order.size):
        s = order[j]
        i = cust[s]
        if taken_upto[i] != seg_pos[s] - 1:
            continue
        if used + seg_cost[s] <= budget:
            used += seg_cost[s]
            taken_upto[i] = seg_pos[s]
    return used


def greedy_take(hoff: np.ndarray, spend: np.ndarray, value: np.ndarray, budget: int) -> tuple[np.ndarray, float, int]:
    """Take hull segments by decreasing slope under a global budget.

    Segments are sorted by slope (ties: customer order, then position) and taken
    while they fit; a segment is taken only after the customer's previous one.
    The multiplier ``lambda`` is the slope of the first segment that did not fit in
    the unbroken prefix (0 when every segment fits): with it, the Lagrangian bound
    equals the LP relaxation of the multiple-choice knapsack over the hulls.

    Returns ``vertex`` (int64, n: the index of the chosen hull vertex per customer,
    0 = no contact), ``lambda`` and the spend used.
    """
    n = hoff.size - 1
    nseg_c = np.diff(hoff) - 1
    first = hoff[:-1]
    cust = np.repeat(np.arange(n, dtype=np.int64), nseg_c)
    # 1-based position of each segment's end vertex within its customer, and its flat index
    pos = np.arange(cust.size, dtype=np.int64) - np.repeat(np.cumsum(nseg_c) - nseg_c, nseg_c) + 1
    end = np.repeat(first, nseg_c) + pos
    dc = spend[end] - spend[end - 1]
    dv = value[end] - value[end - 1]
    slope = dv / dc
    order = np.lexsort((pos, cust, -slope)).astype(np.int64)
    taken = np.zeros(n, np.int64)
    csum = np.cumsum(dc[order])
    fits = csum <= budget
    lam = 0.0 if fits.all() else float(slope[order[int(np.argmin(fits))]])
    used = _greedy(order, cust, dc.astype(np.int64), pos.astype(np.int64), int(budget), taken)
    return taken, max(lam, 0.0), int(used)
