"""Overlap-free club assignment ("1 % clubs") in tiers.

C clubs in priority order, each with its own ordering of the customers: the
lexicographic order of :mod:`centile.kernels.topk` on the club's key matrix
(larger primary first, tie-breaker columns, then the smaller id hash, then the
smaller index; NaN primary = not eligible). Each club has a size per tier
(``sizes[c, t]``, computed by the engine as ``ceil(share_t * N)``). A customer
joins at most one club, in one tier.

Two strategies:

* :func:`assign_priority` -- tier by tier, clubs in priority order; each club
  takes its best-ranked eligible customers that are still free, up to its
  size. Each club's ordering is only computed as deep as needed (a top-k
  selection, grown when the walk runs past it).
* :func:`assign_best_rank` -- tier by tier over the customers still free, a
  capacity-constrained stable matching (customer-proposing deferred
  acceptance, Gale & Shapley 1962; Roth 1984 for the many-to-one case):
  customers prefer the club where their percentile is highest (ties: lower
  club index), clubs prefer their own ordering. The result is the
  customer-optimal stable matching, which is unique, so it does not depend on
  proposal order or thread count.

  Only a prefix of each club's free customers takes part: the shortest
  one whose length L reaches ``cap_c + g`` where g counts the listed
  customers whose favourite club with seats (highest percentile) is another
  one; never longer than ``K``, the tier's total capacity. This is exact:

  - in any stable matching, every customer that club c ranks above its last
    member w is in c (at most ``cap_c - 1``) or in a club it prefers over c
    (so its favourite is not c; also at most ``K - cap_c`` of them); as
    ``L - (cap_c + g(L))`` never decreases with L, w lies inside the prefix;
  - the matching found on the truncated lists is stable in the full market:
    a club with a free seat would have each listed customer either in it or
    in a club that customer prefers, i.e. ``L <= cap_c - 1 + g(L)``, against
    the stopping rule; a full club ranks every unlisted customer below its
    members;
  - so each customer-optimal matching is stable in the other market,
    customers weakly prefer each to the other, and with strict preferences
    they are equal.

Outputs (both strategies) are described in :func:`assign_priority`.
"""

import numba
import numpy as np
from numba import njit, prange

from ._flags import JIT, JIT_PARALLEL
from .topk import _candidates, _coerce_hashes, _lex_sort, _radix_select, _top_sorted


# --------------------------------------------------------------------------
# per-club orderings: a candidate pool and a growing sorted prefix
# --------------------------------------------------------------------------
@njit(**JIT)
def _club_ordering(vals, bits, hashes, use_hash, pool_k, pre_k, keys, rows, pool, pre):
    """One club: its pool (row order) into ``pool`` and its sorted first prefix into ``pre``.

    One pass collects the candidates, two radix selections on their keys give
    the pool and prefix thresholds. ``keys``/``rows`` are n-long scratch.
    Returns ``(pool length, pool complete, prefix length, n_eligible)``; a
    pool longer than ``pool.size`` (ties) is cut and reported incomplete.
    """
    # typed flags, not literals, and no global arrays: the candidate and sort kernels are then
    # compiled once for clubs, top-k and recommendations alike (see kernels.percentile)
    no = np.bool_(False)
    s = _candidates(vals, bits, hashes, use_hash, pool, no, np.ones(1, np.bool_), no, np.int64(-1),
                    keys, rows)
    thr_pool, _ = _radix_select(keys, s, pool_k)
    thr_pre, _ = _radix_select(keys, s, pre_k)
    m = 0
    w = 0
    for t in range(s):
        x = keys[t]
        if x <= thr_pool:
            if m < pool.size:
                pool[m] = rows[t]
            m += 1
            if x <= thr_pre:
                rows[w] = rows[t]
                w += 1
    first = rows[:w]
    _lex_sort(first, vals, bits, hashes, use_hash)
    k = min(pre_k, w)
    pre[:k] = first[:k]
    return min(m, pool.size), m <= pool.size, k, s


def _orderings(vals, bits, hashes, use_hash, sizes):
    """Candidate pools and first sorted prefixes of every club.

    A club's pool holds its best ``sum(sizes)`` eligible customers (all tiers
    of all clubs, and at least its first prefix; plus ties unless that
    overflows the slack, in which case ``complete`` is False and the club
    falls back to scanning all rows). No strategy looks deeper: every
    position a club walks past holds a member of some club (priority), or of
    an earlier tier or a listed customer of this tier (best rank). The
    prefix (best ``2 * own total + 64``) is grown on demand by
    :func:`_extend`.

    Clubs are dealt round-robin to up to ``numba.get_num_threads()`` threads,
    each with scratch allocated once (fresh pages are expensive), running the
    GIL-free :func:`_club_ordering`; the result does not depend on the number of
    threads. (Python threads rather than a ``prange`` kernel: numba's parallel
    machinery cost seconds of compile time on a cold cache for a loop over a
    handful of clubs.)

    Returns ``(pools, plen, complete, pres, prlen, nelig)``; club c's prefix is
    ``pres[c, :prlen[c]]``.
    """
    n_clubs, n, _ = vals.shape
    own = sizes.sum(axis=1)
    total = int(own.sum())
    pre_k = np.minimum(n, 2 * own + 64)
    pool_k = np.maximum(pre_k, min(total, n))  # the prefix lies inside the pool
    kmax = int(pre_k.max()) if n_clubs else 0
    pmax = min(n, max(kmax, total) + total // 8 + 64)
    pools = np.empty((n_clubs, pmax), np.int64)
    plen = np.zeros(n_clubs, np.int64)
    complete = np.zeros(n_clubs, np.bool_)
    pres = np.empty((n_clubs, kmax), np.int64)
    prlen = np.zeros(n_clubs, np.int64)
    nelig = np.zeros(n_clubs, np.int64)
    nslots = max(1, min(n_clubs, numba.get_num_threads()))

    def work(slot):
        keys = np.empty(n, np.uint64)
        rows = np.empty(n, np.int64)
        for c in range(slot, n_clubs, nslots):
            plen[c], complete[c], prlen[c], nelig[c] = _club_ordering(
                vals[c], bits[c], hashes, use_hash, int(pool_k[c]), int(pre_k[c]), keys, rows, pools[c],
                pres[c])

    if nslots == 1:
        work(0)
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(nslots) as ex:
            list(ex.map(work, range(nslots)))
    return pools, plen, complete, pres, prlen, nelig


@njit(inline="always", **JIT)
def _extend(vals, bits, hashes, use_hash, pool, use_pool, pre, more):
    """``pre`` followed by the next ``>= more`` customers of the club's ordering."""
    after = pre[pre.size - 1] if pre.size > 0 else np.int64(-1)
    chunk, _ = _top_sorted(vals, bits, hashes, use_hash, pool, use_pool, np.ones(1, np.bool_),
                           np.bool_(False), more, after)
    if chunk.size == 0:
        raise RuntimeError("club ordering exhausted its candidate pool (internal error)")
    out = np.empty(pre.size + chunk.size, np.int64)
    out[: pre.size] = pre
    out[pre.size:] = chunk
    return out


@njit(inline="always", **JIT)
def _flatten(pres):
    off = np.zeros(len(pres) + 1, np.int64)
    for c in range(len(pres)):
        off[c + 1] = off[c] + pres[c].size
    flat = np.empty(off[len(pres)], np.int64)
    for c in range(len(pres)):
        flat[off[c]: off[c + 1]] = pres[c]
    return flat, off


# --------------------------------------------------------------------------
# strategy 1: priority
# --------------------------------------------------------------------------
@njit(**JIT)
def _priority(vals, bits, hashes, use_hash, sizes, club_of, tier_of, pools, plen, complete, pres2,
              prlen, nelig):
    n_clubs, n_tiers = sizes.shape
    pres = [pres2[c, : prlen[c]].copy() for c in range(n_clubs)]  # each grows on demand
    ptr = np.zeros(n_clubs, np.int64)  # every position before ptr[c] is taken
    own = np.zeros(n_clubs, np.int64)
    taken = 0
    for t in range(n_tiers):
        for c in range(n_clubs):
            need = sizes[c, t]
            got = 0
            pre = pres[c]
            p = ptr[c]
            while got < need:
                if p == pre.size:
                    if p >= nelig[c]:
                        break  # no eligible customer left for this club
                    # Every position < p is taken, so at most (taken - p)
                    # taken customers lie deeper and depth r + taken always
                    # suffices; aim lower using the share of other clubs'
                    # members seen so far.
                    r = need - got
                    f = (p - own[c] - got) / p if p > 0 else 0.0
                    est = p + int(r / max(1.0 - f, 0.05) * 1.25) + 64
                    newk = min(nelig[c], r + taken + got, max(est, p + p // 2))
                    pre = _extend(vals[c], bits[c], hashes, use_hash,
                                  pools[c, : plen[c]], complete[c], pre, newk - p)
                    pres[c] = pre
                    continue
                i = pre[p]
                p += 1
                if club_of[i] < 0:
                    club_of[i] = c
                    tier_of[i] = t + 1
                    got += 1
            ptr[c] = p
            own[c] += got
            taken += got
    return _flatten(pres)


# --------------------------------------------------------------------------
# strategy 2: best rank (stable matching per tier)
# --------------------------------------------------------------------------
@njit(**JIT)
def _sift_down(hr, hi, base, size, pos):
    """Max-heap on ``hr[base:base+size]`` (largest = worst-ranked member on top)."""
    while True:
        left = 2 * pos + 1
        if left >= size:
            return
        big = left
        if left + 1 < size and hr[base + left + 1] > hr[base + left]:
            big = left + 1
        if hr[base + pos] >= hr[base + big]:
            return
        a = base + pos
        b = base + big
        hr[a], hr[b] = hr[b], hr[a]
        hi[a], hi[b] = hi[b], hi[a]
        pos = big


@njit(**JIT)
def _sift_up(hr, hi, base, pos):
    while pos > 0:
        parent = (pos - 1) // 2
        a = base + parent
        b = base + pos
        if hr[a] >= hr[b]:
            return
        hr[a], hr[b] = hr[b], hr[a]
        hi[a], hi[b] = hi[b], hi[a]
        pos = parent


@njit(**JIT_PARALLEL)
def _favourites(pct, cap, free, fav):
    """``fav[i]``: free customer i's favourite club among those with seats this tier.

    Highest percentile, ties to the lower club index; -1 when the customer is
    not eligible for any of them, -2 when it is no longer free. Customer i
    prefers another club over c exactly when ``fav[i] != c``.
    """
    n_clubs, n = pct.shape
    for i in prange(n):
        best = -1
        if not free[i]:
            best = -2
        else:
            bp = 0.0
            for c in range(n_clubs):
                p = pct[c, i]
                if cap[c] > 0 and not np.isnan(p) and (best < 0 or p > bp):
                    best = c
                    bp = p
        fav[i] = best


@njit(**JIT)
def _deferred_acceptance(lst, loff, cap, pct, slot):
    """Customer-proposing deferred acceptance of one tier.

    ``lst[loff[c]:loff[c + 1]]`` lists club c's acceptable customers best
    first (the offset in that slice is the club's ranking). ``slot`` is an
    all ``-1`` scratch array of length n and is left that way. Returns
    ``(members, counts)``: club c's members are ``members[o_c : o_c +
    counts[c]]`` with ``o_c = cap[:c].sum()``.
    """
    n_clubs = cap.size
    n_ent = loff[n_clubs]
    cust = np.empty(n_ent, np.int64)  # compact customer ids: u -> row
    start = np.zeros(n_ent + 1, np.int64)
    nu = 0
    for e in range(n_ent):
        i = lst[e]
        if slot[i] < 0:
            slot[i] = nu
            cust[nu] = i
            nu += 1
        start[slot[i] + 1] += 1
    for u in range(nu):
        start[u + 1] += start[u]
    ent_c = np.empty(n_ent, np.int64)
    ent_r = np.empty(n_ent, np.int64)
    cur = start[:nu].copy()
    for c in range(n_clubs):  # club order: equal percentiles stay in priority order
        for e in range(loff[c], loff[c + 1]):
            u = slot[lst[e]]
            pos = cur[u]
            cur[u] = pos + 1
            ent_c[pos] = c
            ent_r[pos] = e - loff[c]
    for u in range(nu):  # each customer's list by descending percentile (stable)
        i = cust[u]
        a = start[u]
        for e in range(a + 1, start[u + 1]):
            c = ent_c[e]
            r = ent_r[e]
            pv = pct[c, i]
            v = e - 1
            while v >= a and pct[ent_c[v], i] < pv:
                ent_c[v + 1] = ent_c[v]
                ent_r[v + 1] = ent_r[v]
                v -= 1
            ent_c[v + 1] = c
            ent_r[v + 1] = r
    hoff = np.zeros(n_clubs + 1, np.int64)
    for c in range(n_clubs):
        hoff[c + 1] = hoff[c] + cap[c]
    hr = np.empty(hoff[n_clubs], np.int64)
    hu = np.empty(hoff[n_clubs], np.int64)
    hsz = np.zeros(n_clubs, np.int64)
    nxt = start[:nu].copy()
    for u0 in range(nu):
        u = u0
        while u >= 0:  # u proposes; a displaced member proposes next
            e = nxt[u]
            if e == start[u + 1]:
                break  # list exhausted: stays free this tier
            nxt[u] = e + 1
            c = ent_c[e]
            r = ent_r[e]
            base = hoff[c]
            if hsz[c] < cap[c]:
                hr[base + hsz[c]] = r
                hu[base + hsz[c]] = u
                _sift_up(hr, hu, base, hsz[c])
                hsz[c] += 1
                u = -1
            elif r < hr[base]:
                displaced = hu[base]
                hr[base] = r
                hu[base] = u
                _sift_down(hr, hu, base, hsz[c], np.int64(0))
                u = displaced
    for c in range(n_clubs):
        for h in range(hoff[c], hoff[c] + hsz[c]):
            hu[h] = cust[hu[h]]
    for u in range(nu):
        slot[cust[u]] = -1
    return hu, hsz


@njit(**JIT)
def _best_rank(vals, bits, hashes, use_hash, sizes, pct, club_of, tier_of, pools, plen, complete, pres2,
               prlen, nelig):
    n_clubs, n_tiers = sizes.shape
    n = vals.shape[1]
    pres = [pres2[c, : prlen[c]].copy() for c in range(n_clubs)]  # each grows on demand
    free = np.ones(n, np.bool_)
    fav = np.empty(n, np.int32)
    slot = np.full(n, -1, np.int64)
    ptr = np.zeros(n_clubs, np.int64)  # every position before ptr[c] is taken
    cap = np.empty(n_clubs, np.int64)
    loff = np.zeros(n_clubs + 1, np.int64)
    for t in range(n_tiers):
        total = 0
        for c in range(n_clubs):
            cap[c] = sizes[c, t]
            total += cap[c]
        if total == 0:
            continue
        _favourites(pct, cap, free, fav)
        # Each club lists its best free customers, up to the first length L
        # with L >= cap + #(listed customers preferring another club with
        # seats), and never more than the tier's total capacity: members of
        # any stable matching lie within that (module docstring).
        lst = np.empty(min(2 * total, n_clubs * n) + 16, np.int64)
        w = 0
        for c in range(n_clubs):
            loff[c] = w
            if cap[c] == 0:
                continue
            pre = pres[c]
            p = ptr[c]
            while p < pre.size and fav[pre[p]] == -2:
                p += 1
            ptr[c] = p
            listed = 0
            elsewhere = 0
            while listed < cap[c] + elsewhere and listed < total:
                if p == pre.size:
                    if p >= nelig[c]:
                        break
                    more = max(cap[c] + elsewhere - listed + 64, p // 2)
                    pre = _extend(vals[c], bits[c], hashes, use_hash,
                                  pools[c, : plen[c]], complete[c], pre, more)
                    pres[c] = pre
                    continue
                i = pre[p]
                p += 1
                f = fav[i]
                if f == -2:
                    continue  # taken in an earlier tier
                if w == lst.size:
                    grown = np.empty(2 * lst.size, np.int64)
                    grown[:w] = lst[:w]
                    lst = grown
                lst[w] = i
                w += 1
                listed += 1
                if f != c:
                    elsewhere += 1
        loff[n_clubs] = w
        members, counts = _deferred_acceptance(lst, loff, cap, pct, slot)
        base = 0
        for c in range(n_clubs):
            for h in range(base, base + counts[c]):
                i = members[h]
                club_of[i] = c
                tier_of[i] = t + 1
                free[i] = False
            base += cap[c]
    return _flatten(pres)


# --------------------------------------------------------------------------
# shared summary
# --------------------------------------------------------------------------
@njit(**JIT_PARALLEL)
def _finalize(vals, sizes, club_of, tier_of, flat, off,
              position, qualified, size, threshold, skipped):
    """Per club (in parallel) from its sorted prefix: positions, tier statistics, qualification.

    The prefix covers the club's best ``sum(sizes[c])`` customers and every
    member (the strategies walked past them).
    """
    n_clubs, n_tiers = sizes.shape
    for c in prange(n_clubs):
        q = 0
        for t in range(n_tiers):
            q += sizes[c, t]
        others = 0
        for p in range(off[c + 1] - off[c]):
            i = flat[off[c] + p]
            if p < q:
                qualified[c, i] = True
            k = club_of[i]
            if k == c:
                position[i] = p
                t = tier_of[i] - 1
                size[c, t] += 1
                threshold[c, t] = vals[c, i, 0]  # the last one seen is the worst
                skipped[c, t] = others
            elif k >= 0:
                others += 1


# --------------------------------------------------------------------------
# public wrappers
# --------------------------------------------------------------------------
def _coerce(keys, hashes, sizes):
    if isinstance(keys, np.ndarray) and keys.ndim == 3:
        vals = np.ascontiguousarray(keys, dtype=np.float64)
    else:
        mats = [np.asarray(k, dtype=np.float64) for k in keys]
        mats = [k.reshape(-1, 1) if k.ndim == 1 else k for k in mats]
        if not mats:
            raise ValueError("keys: need at least one club")
        n = mats[0].shape[0]
        if any(k.ndim != 2 or k.shape[0] != n for k in mats):
            raise ValueError("keys: every club needs a (n, m_c) matrix with the same n")
        m = max(k.shape[1] for k in mats)
        vals = np.full((len(mats), n, m), np.nan)  # pad with NaN tie-breakers (no effect)
        for c, k in enumerate(mats):
            vals[c, :, : k.shape[1]] = k
    n_clubs, n, m = vals.shape
    if m < 1:
        raise ValueError("keys: each club needs at least the primary column")
    sz = np.asarray(sizes)
    if sz.ndim == 1:
        sz = sz.reshape(-1, 1)
    if sz.ndim != 2 or sz.shape[0] != n_clubs:
        raise ValueError(f"sizes must have shape ({n_clubs}, T), got {sz.shape}")
    if sz.dtype.kind not in "iu":
        raise TypeError(f"sizes must be integers, got {sz.dtype}")
    sz = np.ascontiguousarray(sz, dtype=np.int64)
    if np.any(sz < 0):
        raise ValueError(f"sizes must be >= 0, got min {int(sz.min())}")
    if sz.shape[1] > 127:
        raise ValueError(f"at most 127 tiers, got {sz.shape[1]}")
    h, use_hash = _coerce_hashes(hashes, n)
    return vals, h, use_hash, sz


def _run(vals, h, use_hash, sz, strategy, pct=None):
    n_clubs, n, _ = vals.shape
    n_tiers = sz.shape[1]
    bits = vals.view(np.uint64)
    club = np.full(n, -1, np.int32)
    tier = np.zeros(n, np.int8)
    sz = np.minimum(sz, n)  # no club holds more than n (keeps every buffer within bounds)
    orderings = _orderings(vals, bits, h, use_hash, sz)
    if strategy == "priority":
        flat, off = _priority(vals, bits, h, use_hash, sz, club, tier, *orderings)
    else:
        flat, off = _best_rank(vals, bits, h, use_hash, sz, pct, club, tier, *orderings)
    position = np.full(n, -1, np.int64)
    qualified = np.zeros((n_clubs, n), np.bool_)
    size = np.zeros((n_clubs, n_tiers), np.int64)
    threshold = np.full((n_clubs, n_tiers), np.nan)
    skipped = np.zeros((n_clubs, n_tiers), np.int64)
    _finalize(vals, sz, club, tier, flat, off, position, qualified, size, threshold, skipped)
    return club, tier, position, size, threshold, skipped, qualified.T


def assign_priority(keys, hashes, sizes):
    """Overlap-free clubs by priority: earlier tiers and clubs choose first.

    For tier 1, clubs in order each take their best-ranked eligible customers
    not yet taken, up to ``sizes[c, 0]``; then tier 2 the same way over the
    customers still free; and so on.

    Parameters
    ----------
    keys : ndarray of float, shape (C, n, m), or sequence of C arrays (n, m_c)
        Per club, its key matrix oriented so that larger is better: column 0
        is the primary metric (NaN = not eligible for that club), further
        columns break ties (NaN last). A sequence is padded with NaN
        tie-breaker columns, which do not change the order.
    hashes : ndarray of uint64, shape (n,), or None
        Seeded id hashes; the smaller hash wins a full tie (then the smaller
        index). None: the smaller index wins.
    sizes : array_like of int, shape (C, T) or (C,)
        Members per club and tier.

    Returns
    -------
    club : ndarray of int32, shape (n,)
        Club index, -1 for none.
    tier : ndarray of int8, shape (n,)
        1-based tier, 0 for none.
    position : ndarray of int64, shape (n,)
        For members: 0-based position in their club's ordering of all its
        eligible customers; -1 for non-members.
    size : ndarray of int64, shape (C, T)
        Members per club and tier: ``sizes[c, t]`` unless the club ran out of
        eligible free customers.
    threshold : ndarray of float64, shape (C, T)
        Primary key of the tier's last (worst-ranked) member; NaN when empty.
    skipped : ndarray of int64, shape (C, T)
        Customers ranked better in the club than the tier's last member who
        belong to another club (taken by an earlier club or tier). Counts from
        the top of the ordering, so it is cumulative over the tiers; 0 when
        the tier is empty.
    qualified : ndarray of bool, shape (n, C)
        Customer is within the top ``sizes[c].sum()`` of club c's ordering
        before overlap removal.

    Notes
    -----
    Results are identical at any thread count (threads only compute whole
    clubs' orderings).
    """
    vals, h, use_hash, sz = _coerce(keys, hashes, sizes)
    return _run(vals, h, use_hash, sz, "priority")


def assign_best_rank(keys, hashes, sizes, pct):
    """Overlap-free clubs by stable matching: each customer goes where it ranks best.

    Tier by tier over the customers still free: customers prefer the club in
    which their percentile ``pct[c, i]`` is highest (ties: lower club index),
    clubs prefer customers by their ordering (as in :func:`assign_priority`),
    and the customer-optimal stable matching with capacities
    ``sizes[:, t]`` is taken (deferred acceptance). A club is filled to its
    size unless every free customer eligible for it was placed in this tier.

    Parameters
    ----------
    keys, hashes, sizes
        As in :func:`assign_priority`.
    pct : array_like of float, shape (C, n)
        Percentile of customer i in club c's metric (as given by the engine,
        e.g. ``rank_pct``); NaN exactly where the primary key is NaN.

    Returns
    -------
    club, tier, position, size, threshold, skipped, qualified
        As in :func:`assign_priority`; ``skipped`` counts the customers ranked
        better in the club than the tier's last member who went to another
        club (in this or an earlier tier).
    """
    vals, h, use_hash, sz = _coerce(keys, hashes, sizes)
    n_clubs, n, _ = vals.shape
    p = np.ascontiguousarray(pct, dtype=np.float64)
    if p.shape != (n_clubs, n):
        raise ValueError(f"pct must have shape ({n_clubs}, {n}), got {p.shape}")
    bad = np.isnan(p) != np.isnan(vals[:, :, 0])
    if bad.any():
        c, i = (int(x[0]) for x in np.nonzero(bad))
        raise ValueError(
            f"pct must be NaN exactly where the primary key is NaN; club {c}, row {i}: "
            f"pct={p[c, i]!r}, key={vals[c, i, 0]!r}"
        )
    return _run(vals, h, use_hash, sz, "best_rank", p)
