"""Per-customer contact plans: a dynamic programme over periods for every budget.

Customer ``i`` may receive at most one contact per period ``t`` (medium ``m``
with value ``v[i, m, t]`` and integer cost ``cost[m]``), at most ``cap``
contacts over the horizon (and at most ``medium_cap[m]`` of medium m), and two contacts at least ``gap`` empty periods
apart (a contact before the horizon, ``since[i]`` periods before the first
period, counts). A contact is eligible when its value is finite and > 0, so a
customer whose contacts all have value <= 0 is never contacted.

The DP state at the start of a period is (contacts used ``k``, contacts of each
medium with a cap of its own ``r`` (a mixed-radix code), periods still blocked
``w`` in 0..gap); for each state it keeps the Pareto frontier of
(spend, value) over the plans reaching it -- spend increasing, value strictly
increasing, spend <= C = min(budget, cap * max cost) -- instead of a dense
array over every spend: a frontier holds at most the number of distinct
spends of k contacts, far fewer than C. Frontiers of a period are merged from
their (shifted) sources in one pass, as sorted lists. ``V(b)``, the best value
with spend <= b, is the staircase of the merged end frontiers, non-decreasing
in b.

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
accept_moves
    New plans of some customers taken in order while every capacity holds (the
    local improvement of a plan after its repair).
"""

from __future__ import annotations

from math import comb

import numpy as np
from numba import njit, prange

from centile.kernels._flags import JIT, JIT_PARALLEL

#: customers per parallel chunk (each chunk allocates its DP buffers once)
CHUNK = 256


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


def _frontier_size(M: int, cap: int, budgets: np.ndarray, costs: np.ndarray) -> int:
    """Slots per frontier: distinct spends of at most ``cap`` contacts of M media, and
    never more than C + 1."""
    top = int(min(int(budgets.max()) if budgets.size else 0, cap * (int(costs.max()) if costs.size else 0)))
    return max(1, min(top + 1, comb(M + cap, cap)))


@njit(**JIT)
def _merge(pc, pv, cnt, hist, lay_src, lay_dst, k, w, nsrc, sk, sw, sdc, sdv, skind, C, keep, ptr):
    """Merge the sorted frontiers of ``nsrc`` sources (state (sk, sw) of layer lay_src,
    shifted by (sdc, sdv)) into the frontier of (k, w) in layer lay_dst."""
    for q in range(nsrc):
        ptr[q] = 0
    n = 0
    run = -1.0
    while True:
        best = -1
        bc = 0
        bv = 0.0
        for q in range(nsrc):
            j = ptr[q]
            if j >= cnt[lay_src, sk[q], sw[q]]:
                continue
            c = pc[lay_src, sk[q], sw[q], j] + sdc[q]
            if c > C:
                ptr[q] = cnt[lay_src, sk[q], sw[q]]  # sorted by spend: the rest is over C too
                continue
            val = pv[lay_src, sk[q], sw[q], j] + sdv[q]
            if best < 0 or c < bc or (c == bc and val > bv):
                best = q
                bc = c
                bv = val
        if best < 0:
            break
        j = ptr[best]
        ptr[best] = j + 1
        if bv > run:
            pc[lay_dst, k, w, n] = bc
            pv[lay_dst, k, w, n] = bv
            if keep:
                hist[lay_dst, k, w, n] = (skind[best] << 32) + j
            n += 1
            run = bv
    cnt[lay_dst, k, w] = n


@njit(**JIT)
def _le(r2, r, mw, mc):
    """Every per-medium count of the mixed-radix code r2 is <= that of r."""
    for m in range(mw.size):
        if mw[m] > 0 and (r2 // mw[m]) % (mc[m] + 1) > (r // mw[m]) % (mc[m] + 1):
            return False
    return True


@njit(**JIT)
def _prune(pc, pv, cnt, hist, lay, cap, gap, keep, ptr, R, mw, mc):
    """Drop the points of state (k, r, w) dominated by a point of a state (k', r', w') <=
    (k, r, w) componentwise (r: the contacts per capped medium; not all equal) with
    spend <= and value >=: fewer contacts used (in total and per capped medium) and
    fewer periods blocked allow every continuation, so the optimum for every budget
    is unchanged. States are visited from the smallest up, so dominance is checked
    against already pruned frontiers (transitive: nothing is lost)."""
    G = gap + 1
    for kr in range((cap + 1) * R):
        k = kr // R
        r = kr % R
        for w in range(G):
            n = cnt[lay, kr, w]
            if n == 0 or (kr == 0 and w == 0):
                continue
            for q in range((cap + 1) * R * G):
                ptr[q] = 0
            out = 0
            for j in range(n):
                c = pc[lay, kr, w, j]
                val = pv[lay, kr, w, j]
                dominated = False
                for k2 in range(k + 1):
                    for r2 in range(R):
                        if R > 1 and not _le(r2, r, mw, mc):
                            continue
                        kr2 = k2 * R + r2
                        for w2 in range(w + 1):
                            if kr2 == kr and w2 == w:
                                continue
                            q = kr2 * G + w2
                            m = cnt[lay, kr2, w2]
                            while ptr[q] < m and pc[lay, kr2, w2, ptr[q]] <= c:
                                ptr[q] += 1
                            if ptr[q] > 0 and pv[lay, kr2, w2, ptr[q] - 1] >= val:
                                dominated = True
                                break
                        if dominated:
                            break
                    if dominated:
                        break
                if not dominated:
                    pc[lay, kr, w, out] = c
                    pv[lay, kr, w, out] = val
                    if keep:
                        hist[lay, kr, w, out] = hist[lay, kr, w, j]
                    out += 1
            cnt[lay, kr, w] = out


@njit(**JIT)
def _frontiers(v, costs, C, cap, gap, since, pc, pv, cnt, hist, keep, sk, sw, sdc, sdv, skind, ptr, R, mw, mc):
    """Run the DP of one customer; returns the layer holding the end frontiers.
    State index kr = k * R + r: k contacts used, r the mixed-radix code of the contacts
    per capped medium (digit of medium m: (r // mw[m]) % (mc[m] + 1); mw[m] = 0 for a
    medium without its own cap; R = 1 without any).
    With ``keep`` layer t holds the frontiers at the start of period t (hist: where each
    point came from: kind 0 waited, 1 skipped, 2 + m contacted medium m; and the index)."""
    M, T = v.shape
    G = gap + 1
    lay = 0
    cnt[0] = 0
    cnt[0, 0, min(max(0, gap + 1 - since), gap)] = 1
    pc[0, 0, min(max(0, gap + 1 - since), gap), 0] = 0
    pv[0, 0, min(max(0, gap + 1 - since), gap), 0] = 0.0
    for t in range(T):
        nl = t + 1 if keep else 1 - lay
        for k in range((cap + 1) * R):
            kk = k // R
            r = k % R
            for w in range(G):
                ns = 0
                if w == 0:
                    sk[ns] = k
                    sw[ns] = 0
                    sdc[ns] = 0
                    sdv[ns] = 0.0
                    skind[ns] = 1
                    ns += 1
                if w < gap:
                    sk[ns] = k
                    sw[ns] = w + 1
                    sdc[ns] = 0
                    sdv[ns] = 0.0
                    skind[ns] = 0
                    ns += 1
                if w == gap and kk > 0:
                    for m in range(M):
                        val = v[m, t]
                        if val > 0.0:  # NaN and <= 0: not eligible
                            if mw[m] > 0:
                                if (r // mw[m]) % (mc[m] + 1) == 0:
                                    continue  # no contact of m to undo: unreachable from a source
                                sk[ns] = k - R - mw[m]
                            else:
                                sk[ns] = k - R
                            sw[ns] = 0
                            sdc[ns] = costs[m]
                            sdv[ns] = val
                            skind[ns] = 2 + m
                            ns += 1
                _merge(pc, pv, cnt, hist, lay, nl, k, w, ns, sk, sw, sdc, sdv, skind, C, keep, ptr)
        _prune(pc, pv, cnt, hist, nl, cap, gap, keep, ptr, R, mw, mc)
        lay = nl
    return lay


@njit(**JIT)
def _staircase(pc, pv, cnt, lay, cap, gap, oc, ov, ok, ow, oj, ptr, R):
    """Merge the end frontiers of every state into one staircase (spend increasing,
    value strictly increasing, starting at (0, 0)); returns its length."""
    G = gap + 1
    S = (cap + 1) * R * G
    for q in range(S):
        ptr[q] = 0
    n = 1
    oc[0] = 0
    ov[0] = 0.0
    ok[0] = -1
    ow[0] = -1
    oj[0] = -1
    while True:
        best = -1
        bc = 0
        bv = 0.0
        for q in range(S):
            k = q // G
            w = q % G
            j = ptr[q]
            if j >= cnt[lay, k, w]:
                continue
            c = pc[lay, k, w, j]
            val = pv[lay, k, w, j]
            if best < 0 or c < bc or (c == bc and val > bv):
                best = q
                bc = c
                bv = val
        if best < 0:
            break
        j = ptr[best]
        ptr[best] = j + 1
        if bv > ov[n - 1]:
            oc[n] = bc
            ov[n] = bv
            ok[n] = best // G
            ow[n] = best % G
            oj[n] = j
            n += 1
    return n


@njit(**JIT)
def _hull(sc, sv, n, hb, hv) -> int:
    """Upper concave hull of the staircase points (sc, sv)[:n] (the curve's corners)."""
    h = 0
    for i in range(n):
        b = sc[i]
        y = sv[i]
        while h >= 2:
            b1, y1 = hb[h - 2], hv[h - 2]
            b2, y2 = hb[h - 1], hv[h - 1]
            # on or below the chord (with a relative tolerance: rounding must not keep
            # collinear vertices, whose float slopes could then come out of order)
            lhs = (y2 - y1) * (b - b1)
            rhs = (y - y1) * (b2 - b1)
            if lhs <= rhs + 1e-12 * abs(rhs):
                h -= 1
            else:
                break
        hb[h] = b
        hv[h] = y
        h += 1
    return h


@njit(**JIT)
def _buffers(layers, cap, gap, P, M, keep, R):
    G = gap + 1
    pc = np.zeros((layers, (cap + 1) * R, G, P), np.int64)
    pv = np.zeros((layers, (cap + 1) * R, G, P))
    cnt = np.zeros((layers, (cap + 1) * R, G), np.int64)
    hist = np.zeros((layers if keep else 1, (cap + 1) * R, G, P if keep else 1), np.int64)
    return pc, pv, cnt, hist


@njit(**JIT_PARALLEL)
def _curves(v, costs, budgets, since, cap, gap, P, offsets, out, R, mw, mc):
    n, M, T = v.shape
    S = (cap + 1) * R * (gap + 1)
    nchunk = (n + CHUNK - 1) // CHUNK
    for ch in prange(nchunk):
        pc, pv, cnt, hist = _buffers(2, cap, gap, P, M, False, R)
        sk = np.zeros(M + 2, np.int64)
        sw = np.zeros(M + 2, np.int64)
        sdc = np.zeros(M + 2, np.int64)
        sdv = np.zeros(M + 2)
        skind = np.zeros(M + 2, np.int64)
        ptr = np.zeros(max(M + 2, S), np.int64)
        m_ = S * P + 1
        oc = np.zeros(m_, np.int64)
        ov = np.zeros(m_)
        ok = np.zeros(m_, np.int64)
        ow = np.zeros(m_, np.int64)
        oj = np.zeros(m_, np.int64)
        for i in range(ch * CHUNK, min(n, (ch + 1) * CHUNK)):
            C = offsets[i + 1] - offsets[i] - 1
            lay = _frontiers(v[i], costs, C, cap, gap, since[i], pc, pv, cnt, hist, False, sk, sw, sdc, sdv,
                             skind, ptr, R, mw, mc)
            ns = _staircase(pc, pv, cnt, lay, cap, gap, oc, ov, ok, ow, oj, ptr, R)
            j = 0
            for b in range(C + 1):
                while j + 1 < ns and oc[j + 1] <= b:
                    j += 1
                out[offsets[i] + b] = ov[j]


#: the most DP states (contacts used x contacts per capped medium) a customer may need
MAX_STATES = 1 << 16


def _radix(medium_cap: np.ndarray | None, M: int, cap: int) -> tuple[int, np.ndarray, np.ndarray]:
    """Mixed-radix code of the contacts per capped medium: (R, weight mw, cap mc).

    A medium whose cap is negative (none) or >= ``cap`` has weight 0 (the total cap
    already bounds it); R is the number of codes, 1 without a binding medium cap."""
    mw = np.zeros(M, np.int64)
    mc = np.zeros(M, np.int64)
    if medium_cap is None:
        return 1, mw, mc
    mcap = np.asarray(medium_cap, np.int64)
    if mcap.shape != (M,):
        raise ValueError("medium_cap needs one value per medium (negative: no cap of its own)")
    R = 1
    for m in range(M):
        if 0 <= mcap[m] < cap:
            mw[m] = R
            mc[m] = mcap[m]
            R *= int(mcap[m]) + 1
            if R * (cap + 1) > MAX_STATES:
                raise ValueError(f"medium caps {mcap.tolist()} with cap {cap} need more than {MAX_STATES:,} DP "
                                 "states per customer; lower or drop some medium caps")
    return R, mw, mc


def _span(budgets: np.ndarray, costs: np.ndarray, cap: int) -> np.ndarray:
    return np.minimum(budgets, cap * (int(costs.max()) if costs.size else 0))


def value_curves(values: np.ndarray, costs: np.ndarray, budgets: np.ndarray, since: np.ndarray, *,
                 cap: int, gap: int, medium_cap: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
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
    medium_cap : ndarray of int, shape (M,), optional
        At most ``medium_cap[m]`` contacts of medium m (negative: no cap of its own).
        Exact: the DP state also counts the contacts of every medium whose cap is
        below ``cap``.

    Returns
    -------
    offsets : ndarray of int64, shape (n + 1,)
    curves : ndarray of float64
        ``curves[offsets[i] + b]`` = V_i(b) for b = 0..C_i, C_i = min(budget_i, cap * max(costs)).
    """
    v, c, b, s = _check(values, costs, budgets, since, cap, gap)
    span = _span(b, c, cap)
    offsets = np.zeros(v.shape[0] + 1, np.int64)
    np.cumsum(span + 1, out=offsets[1:])
    out = np.zeros(int(offsets[-1]), np.float64)
    if v.shape[0]:
        R, mw, mc = _radix(medium_cap, v.shape[1], cap)
        _curves(v, c, b, s, cap, gap, _frontier_size(v.shape[1], cap, b, c), offsets, out, R, mw, mc)
    return offsets, out


#: hull vertices kept per customer in the first pass; customers with more are redone
HULL_SLOTS = 16


@njit(**JIT_PARALLEL)
def _hulls(v, costs, span, since, cap, gap, P, slots, hcount, hb, hv, only, R, mw, mc):
    M = v.shape[1]
    n = only.size if only.size else v.shape[0]
    S = (cap + 1) * R * (gap + 1)
    nchunk = (n + CHUNK - 1) // CHUNK
    for ch in prange(nchunk):
        pc, pv, cnt, hist = _buffers(2, cap, gap, P, M, False, R)
        sk = np.zeros(M + 2, np.int64)
        sw = np.zeros(M + 2, np.int64)
        sdc = np.zeros(M + 2, np.int64)
        sdv = np.zeros(M + 2)
        skind = np.zeros(M + 2, np.int64)
        ptr = np.zeros(max(M + 2, S), np.int64)
        m_ = S * P + 1
        oc = np.zeros(m_, np.int64)
        ov = np.zeros(m_)
        ok = np.zeros(m_, np.int64)
        ow = np.zeros(m_, np.int64)
        oj = np.zeros(m_, np.int64)
        tb = np.zeros(m_, np.int64)
        tv = np.zeros(m_)
        for ii in range(ch * CHUNK, min(n, (ch + 1) * CHUNK)):
            i = ii if only.size == 0 else only[ii]
            lay = _frontiers(v[i], costs, span[i], cap, gap, since[i], pc, pv, cnt, hist, False, sk, sw, sdc,
                             sdv, skind, ptr, R, mw, mc)
            ns = _staircase(pc, pv, cnt, lay, cap, gap, oc, ov, ok, ow, oj, ptr, R)
            h = _hull(oc, ov, ns, tb, tv)
            hcount[ii] = h
            for j in range(min(h, slots)):
                hb[ii, j] = tb[j]
                hv[ii, j] = tv[j]


def concave_hulls(values: np.ndarray, costs: np.ndarray, budgets: np.ndarray, since: np.ndarray, *,
                  cap: int, gap: int, medium_cap: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vertices of the upper concave hull of every customer's value curve.

    Same parameters as :func:`value_curves`. Returns ``offsets`` (n + 1), ``spend``
    (int64) and ``value`` (float64): customer i's vertices are
    ``spend[offsets[i]:offsets[i+1]]``, starting at (0, 0), spend increasing and
    slopes strictly decreasing, ending at the curve's first maximum. Up to
    ``HULL_SLOTS`` vertices are kept per customer in one pass; the few customers
    with more are computed again with room for all of theirs.
    """
    v, c, b, s = _check(values, costs, budgets, since, cap, gap)
    n = v.shape[0]
    if n == 0:
        return np.zeros(1, np.int64), np.zeros(0, np.int64), np.zeros(0)
    span = _span(b, c, cap)
    P = _frontier_size(v.shape[1], cap, b, c)
    R, mw, mc = _radix(medium_cap, v.shape[1], cap)
    hcount = np.zeros(n, np.int64)
    hb = np.zeros((n, HULL_SLOTS), np.int64)
    hv = np.zeros((n, HULL_SLOTS))
    _hulls(v, c, span, s, cap, gap, P, HULL_SLOTS, hcount, hb, hv, np.zeros(0, np.int64), R, mw, mc)
    over = np.flatnonzero(hcount > HULL_SLOTS)
    hoff = np.zeros(n + 1, np.int64)
    np.cumsum(hcount, out=hoff[1:])
    keep = np.arange(HULL_SLOTS)[None, :] < np.minimum(hcount, HULL_SLOTS)[:, None]
    flat_b = np.zeros(int(hoff[-1]), np.int64)
    flat_v = np.zeros(int(hoff[-1]))
    if over.size == 0:
        return hoff, hb[keep], hv[keep]
    big = int(hcount[over].max())
    cnt2 = np.zeros(over.size, np.int64)
    hb2 = np.zeros((over.size, big), np.int64)
    hv2 = np.zeros((over.size, big))
    _hulls(v, c, span, s, cap, gap, P, big, cnt2, hb2, hv2, over, R, mw, mc)
    pos = np.repeat(hoff[:-1], np.minimum(hcount, HULL_SLOTS)) + (
        np.arange(int(keep.sum())) - np.repeat(np.cumsum(np.minimum(hcount, HULL_SLOTS)) - np.minimum(
            hcount, HULL_SLOTS), np.minimum(hcount, HULL_SLOTS)))
    flat_b[pos] = hb[keep]
    flat_v[pos] = hv[keep]
    for r, i in enumerate(over):
        flat_b[hoff[i]:hoff[i + 1]] = hb2[r, :hcount[i]]
        flat_v[hoff[i]:hoff[i + 1]] = hv2[r, :hcount[i]]
    return hoff, flat_b, flat_v


@njit(**JIT_PARALLEL)
def _plans(v, costs, spend, since, cap, gap, P, out_m, R, mw, mc):
    n, M, T = v.shape
    S = (cap + 1) * R * (gap + 1)
    nchunk = (n + CHUNK - 1) // CHUNK
    for ch in prange(nchunk):
        pc, pv, cnt, hist = _buffers(T + 1, cap, gap, P, M, True, R)
        sk = np.zeros(M + 2, np.int64)
        sw = np.zeros(M + 2, np.int64)
        sdc = np.zeros(M + 2, np.int64)
        sdv = np.zeros(M + 2)
        skind = np.zeros(M + 2, np.int64)
        ptr = np.zeros(max(M + 2, S), np.int64)
        m_ = S * P + 1
        oc = np.zeros(m_, np.int64)
        ov = np.zeros(m_)
        ok = np.zeros(m_, np.int64)
        ow = np.zeros(m_, np.int64)
        oj = np.zeros(m_, np.int64)
        for i in range(ch * CHUNK, min(n, (ch + 1) * CHUNK)):
            if spend[i] <= 0:
                continue
            lay = _frontiers(v[i], costs, spend[i], cap, gap, since[i], pc, pv, cnt, hist, True, sk, sw, sdc,
                             sdv, skind, ptr, R, mw, mc)
            ns = _staircase(pc, pv, cnt, lay, cap, gap, oc, ov, ok, ow, oj, ptr, R)
            if ns <= 1:
                continue
            # the best plan: the last staircase point (the highest value within the spend)
            k = ok[ns - 1]
            w = ow[ns - 1]
            j = oj[ns - 1]
            for t in range(T, 0, -1):
                code = hist[t, k, w, j]
                kind = code >> 32
                j = code & 0xFFFFFFFF
                if kind == 0:
                    w = w + 1
                elif kind == 1:
                    w = 0
                else:
                    out_m[i, t - 1] = kind - 2
                    k -= R + mw[kind - 2]
                    w = 0


def plans_at(values: np.ndarray, costs: np.ndarray, spend: np.ndarray, since: np.ndarray, *,
             cap: int, gap: int, medium_cap: np.ndarray | None = None) -> np.ndarray:
    """The best plan of every customer with spend <= ``spend[i]``.

    Returns ``medium`` (int64, shape (n, T)): the medium contacted in each period,
    -1 for none. Same parameters as :func:`value_curves` with the spend in place of
    the budget; ties go to the plan found first (deterministic).
    """
    v, c, sp, s = _check(values, costs, spend, since, cap, gap)
    out = np.full((v.shape[0], v.shape[2]), -1, np.int64)
    if v.shape[0]:
        R, mw, mc = _radix(medium_cap, v.shape[1], cap)
        _plans(v, c, sp, s, cap, gap, _frontier_size(v.shape[1], cap, _span(sp, c, cap), c), out, R, mw, mc)
    return out


@njit(**JIT)
def _segments(hoff, spend, value, slope, dc, cust):
    """Slope, spend and customer of every hull segment (customer by customer, in order), the
    slopes of each customer made non-increasing (a running minimum), so sorting by slope
    never puts a customer's later segment before an earlier one."""
    s = 0
    for i in range(hoff.size - 1):
        for j in range(hoff[i] + 1, hoff[i + 1]):
            dc[s] = spend[j] - spend[j - 1]
            slope[s] = (value[j] - value[j - 1]) / dc[s]
            if j > hoff[i] + 1 and slope[s] > slope[s - 1]:
                slope[s] = slope[s - 1]
            cust[s] = i
            s += 1


@njit(**JIT)
def _greedy(order, cust, dc, soff, slope, budget, taken_upto):
    """Take segments in ``order`` while they fit, each after its customer's previous one;
    returns the spend used and the slope of the first segment over the budget in the
    unbroken prefix (-1 when every segment fits)."""
    used = 0
    prefix = 0
    lam = -1.0
    for j in range(order.size):
        s = order[j]
        if lam < 0.0:
            prefix += dc[s]
            if prefix > budget:
                lam = slope[s]
        i = cust[s]
        pos = s - soff[i] + 1  # 1-based position of the segment within its customer
        if taken_upto[i] != pos - 1:
            continue
        if used + dc[s] <= budget:
            used += dc[s]
            taken_upto[i] = pos
    return used, lam


def greedy_take(hoff: np.ndarray, spend: np.ndarray, value: np.ndarray, budget: int) -> tuple[np.ndarray, float, int]:
    """Take hull segments by decreasing slope under a global budget.

    Segments are sorted by slope (ties: customer order, then position: a stable sort of the
    segments laid out customer by customer) and taken while they fit; a segment is taken
    only after the customer's previous one. The multiplier ``lambda`` is the slope of the
    first segment that did not fit in the unbroken prefix (0 when every segment fits):
    with it, the Lagrangian bound equals the LP relaxation of the multiple-choice knapsack
    over the hulls. About 24 bytes per segment (slope, spend step, customer, order).

    Returns ``vertex`` (int64, n: the index of the chosen hull vertex per customer,
    0 = no contact), ``lambda`` and the spend used.
    """
    hoff = np.ascontiguousarray(hoff, np.int64)
    n = hoff.size - 1
    soff = hoff - np.arange(n + 1, dtype=np.int64)  # segment offsets: a customer with k vertices has k - 1
    nseg = int(soff[-1]) if n else 0
    slope = np.empty(nseg)
    dc = np.empty(nseg, np.int64)
    cust = np.empty(nseg, np.int32 if n < 2 ** 31 else np.int64)
    _segments(hoff, np.ascontiguousarray(spend, np.int64), np.ascontiguousarray(value, np.float64), slope, dc, cust)
    order = np.argsort(-slope, kind="stable")
    taken = np.zeros(n, np.int64)
    used, lam = _greedy(order, cust, dc, soff, slope, int(budget), taken)
    return taken, max(float(lam), 0.0), int(used)


@njit(**JIT)
def _accept(order, old, new, costs, usage_mt, usage_m, pcap, cap_m, spend_left, accepted):
    T = old.shape[1]
    for j in range(order.size):
        r = order[j]
        dspend = 0
        for t in range(T):
            if old[r, t] >= 0:
                dspend -= costs[old[r, t]]
            if new[r, t] >= 0:
                dspend += costs[new[r, t]]
        if dspend > spend_left:
            continue
        for t in range(T):
            if old[r, t] >= 0:
                usage_mt[old[r, t], t] -= 1
                usage_m[old[r, t]] -= 1
        for t in range(T):
            if new[r, t] >= 0:
                usage_mt[new[r, t], t] += 1
                usage_m[new[r, t]] += 1
        ok = True
        for t in range(T):
            m = new[r, t]
            if m >= 0 and (usage_mt[m, t] > pcap[m] or usage_m[m] > cap_m[m]):
                ok = False
                break
        if ok:
            spend_left -= dspend
            accepted[r] = True
            continue
        for t in range(T):  # undo: the old plan stays
            if new[r, t] >= 0:
                usage_mt[new[r, t], t] -= 1
                usage_m[new[r, t]] -= 1
        for t in range(T):
            if old[r, t] >= 0:
                usage_mt[old[r, t], t] += 1
                usage_m[old[r, t]] += 1
    return spend_left


def accept_moves(order: np.ndarray, old: np.ndarray, new: np.ndarray, costs: np.ndarray, usage_mt: np.ndarray,
                 usage_m: np.ndarray, period_capacity: np.ndarray, capacity: np.ndarray,
                 spend_left: int) -> tuple[np.ndarray, int]:
    """Replace customers' plans by new ones in the given order while every capacity holds.

    ``old``/``new`` (k, T): medium per period (-1 none) of k candidates; ``order``: the
    candidates (rows) in the order they are tried. A new plan is taken when the spend it
    adds fits ``spend_left`` and, with the old plan removed and the new one added, every
    (medium, period) stays within ``period_capacity[m]`` and every medium within
    ``capacity[m]``; else the old plan stays. ``usage_mt`` (M, T) and ``usage_m`` (M) hold
    the contacts of the current plan of every customer and are updated in place.
    Returns the rows taken (bool, k) and the spend left.
    """
    if usage_mt.dtype != np.int64 or usage_m.dtype != np.int64:
        raise ValueError("usage_mt and usage_m must be int64 arrays (updated in place)")
    o = np.ascontiguousarray(old, np.int64)
    w = np.ascontiguousarray(new, np.int64)
    if o.shape != w.shape or o.ndim != 2:
        raise ValueError("old and new plans need the same shape (candidates, periods)")
    taken = np.zeros(o.shape[0], np.bool_)
    left = _accept(np.ascontiguousarray(order, np.int64), o, w, np.ascontiguousarray(costs, np.int64),
                   usage_mt, usage_m, np.ascontiguousarray(period_capacity, np.int64),
                   np.ascontiguousarray(capacity, np.int64), int(spend_left), taken)
    return taken, int(left)
