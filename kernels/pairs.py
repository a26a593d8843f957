"""Exact item and pair counts over baskets (market-basket analysis).

Baskets come as CSR arrays: basket ``t`` holds ``items[offsets[t]:offsets[t+1]]``,
dense item codes in ``[0, n_items)``, strictly increasing inside a basket (an
item counts once per basket). Every count is an integer, so counts of disjoint
sets of baskets (customer partitions) merge by addition.

Pairs are counted row-wise: an inverted index lists, for every frequent item
``a``, the baskets holding it; for each ``a`` a dense counter over ``b > a``
is filled from those baskets and the pairs at or above ``min_count`` are read
off in ``b`` order. A pair can only reach ``min_count`` when both of its items
do (anti-monotonicity), so infrequent items never enter the index. Work is
``sum over baskets of (frequent items)^2 / 2``; memory is the index plus one
counter of ``n_items`` per block of items. The items are processed in fixed
blocks in parallel and each block writes its own slice, so the result is the
same for any thread count.
"""

import numpy as np
from numba import njit, prange

from ._flags import JIT, JIT_PARALLEL

_BLOCK = 64  # items per parallel block (fixed: the output never depends on the thread count)


@njit(**JIT)
def _item_counts(offsets, items, n_items):
    out = np.zeros(n_items, np.int64)
    for p in range(offsets[-1]):
        out[items[p]] += 1
    return out


@njit(**JIT)
def _index(offsets, items, counts, min_count, n_items):
    """Baskets per frequent item (CSR), each list in basket order (sized by this data's counts)."""
    local = _item_counts(offsets, items, n_items)
    start = np.zeros(n_items + 1, np.int64)
    for i in range(n_items):
        start[i + 1] = start[i] + (local[i] if counts[i] >= min_count else 0)
    fill = start[:-1].copy()
    idx = np.empty(start[-1], np.int64)
    nb = offsets.size - 1
    for t in range(nb):
        for p in range(offsets[t], offsets[t + 1]):
            i = items[p]
            if counts[i] >= min_count:
                idx[fill[i]] = t
                fill[i] += 1
    return start, idx


@njit(**JIT)
def _row(a, offsets, items, counts, min_count, start, idx, cnt, touched):
    """Fill ``cnt`` for pairs (a, b > a); returns the number of touched b (listed in ``touched``)."""
    nt = 0
    for q in range(start[a], start[a + 1]):
        t = idx[q]
        lo = offsets[t]
        hi = offsets[t + 1]
        p = lo
        while p < hi and items[p] <= a:  # items are increasing: skip to the ones after a
            p += 1
        for r in range(p, hi):
            b = items[r]
            if counts[b] < min_count:
                continue
            if cnt[b] == 0:
                touched[nt] = b
                nt += 1
            cnt[b] += 1
    return nt


@njit(**JIT_PARALLEL)
def _pairs(offsets, items, counts, min_count, n_items):
    start, idx = _index(offsets, items, counts, min_count, n_items)
    nblocks = (n_items + _BLOCK - 1) // _BLOCK
    per_item = np.zeros(n_items, np.int64)
    for pass_ in range(2):
        if pass_ == 1:
            total = 0
            pos = np.empty(n_items + 1, np.int64)
            pos[0] = 0
            for i in range(n_items):
                total += per_item[i]
                pos[i + 1] = total
            out_a = np.empty(total, np.int64)
            out_b = np.empty(total, np.int64)
            out_c = np.empty(total, np.int64)
        else:
            pos = np.zeros(1, np.int64)
            out_a = np.empty(0, np.int64)
            out_b = np.empty(0, np.int64)
            out_c = np.empty(0, np.int64)
        for blk in prange(nblocks):
            cnt = np.zeros(n_items, np.int64)
            touched = np.empty(n_items, np.int64)
            mark = np.zeros(n_items, np.bool_)
            for a in range(blk * _BLOCK, min(n_items, (blk + 1) * _BLOCK)):
                if counts[a] < min_count:
                    continue
                nt = _row(a, offsets, items, counts, min_count, start, idx, cnt, touched)
                if pass_ == 0:
                    k = 0
                    for s in range(nt):
                        b = touched[s]
                        if cnt[b] >= min_count:
                            k += 1
                        cnt[b] = 0
                    per_item[a] = k
                else:
                    # b in increasing order: mark the kept ones, then scan the touched range
                    lo_b = n_items
                    hi_b = -1
                    for s in range(nt):
                        b = touched[s]
                        if cnt[b] >= min_count:
                            mark[b] = True
                            if b < lo_b:
                                lo_b = b
                            if b > hi_b:
                                hi_b = b
                    w = pos[a]
                    if pos[a + 1] - pos[a] > 0:
                        if (pos[a + 1] - pos[a]) * 8 < hi_b - lo_b:
                            sub = np.empty(pos[a + 1] - pos[a], np.int64)
                            k = 0
                            for s in range(nt):
                                if mark[touched[s]]:
                                    sub[k] = touched[s]
                                    k += 1
                            sub.sort()
                            for s in range(k):
                                b = sub[s]
                                out_a[w] = a
                                out_b[w] = b
                                out_c[w] = cnt[b]
                                w += 1
                        else:
                            for b in range(lo_b, hi_b + 1):
                                if mark[b]:
                                    out_a[w] = a
                                    out_b[w] = b
                                    out_c[w] = cnt[b]
                                    w += 1
                    for s in range(nt):
                        b = touched[s]
                        cnt[b] = 0
                        mark[b] = False
    return out_a, out_b, out_c


def _check(offsets, items, n_items):
    off = np.ascontiguousarray(offsets, dtype=np.int64)
    it = np.ascontiguousarray(items, dtype=np.int64)
    n_items = int(n_items)
    if off.ndim != 1 or off.size < 1 or off[0] != 0 or off[-1] != it.size or np.any(np.diff(off) < 0):
        raise ValueError("offsets must start at 0, be non-decreasing and end at len(items)")
    if n_items < 0:
        raise ValueError(f"n_items must be >= 0, got {n_items}")
    if it.size and (it.min() < 0 or it.max() >= n_items):
        raise ValueError(f"item codes must lie in [0, {n_items})")
    if it.size > 1:
        d = np.diff(it)
        inner = np.ones(it.size - 1, np.bool_)
        ends = off[1:-1]
        inner[ends[(ends > 0) & (ends < it.size)] - 1] = False
        if np.any(d[inner] <= 0):
            raise ValueError("items must be strictly increasing inside each basket (one count per basket)")
    return off, it, n_items


def item_counts(offsets, items, n_items):
    """Number of baskets holding each item.

    Parameters
    ----------
    offsets : array_like of int, shape (n_baskets + 1,)
        CSR offsets into ``items``.
    items : array_like of int, shape (n_lines,)
        Item codes in ``[0, n_items)``, strictly increasing inside each basket.
    n_items : int
        Number of distinct item codes.

    Returns
    -------
    ndarray of int64, shape (n_items,)
    """
    off, it, n = _check(offsets, items, n_items)
    return _item_counts(off, it, n)


def pair_counts(offsets, items, n_items, min_count=1, counts=None):
    """Exact co-occurrence counts of every item pair held by at least ``min_count`` baskets.

    Parameters
    ----------
    offsets, items, n_items
        Baskets as in :func:`item_counts`.
    min_count : int
        Pairs held by fewer baskets are left out (an integer threshold: no
        floating-point comparison decides a pair's presence).
    counts : array_like of int, shape (n_items,), optional
        Item counts to prune with instead of this data's own (e.g. counts
        merged over every partition: an item below ``min_count`` there cannot
        be in a pair at ``min_count``). Only items with ``counts >= min_count``
        enter the counting.

    Returns
    -------
    a, b, count : ndarray of int64
        Pairs ``a < b`` sorted by ``(a, b)`` and the number of baskets holding both.
    """
    off, it, n = _check(offsets, items, n_items)
    min_count = int(min_count)
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}")
    if counts is None:
        c = _item_counts(off, it, n)
    else:
        c = np.ascontiguousarray(counts, dtype=np.int64)
        if c.shape != (n,):
            raise ValueError(f"counts must have shape ({n},), got {c.shape}")
    return _pairs(off, it, c, min_count, n)


@njit(**JIT)
def _triples_of(a, offsets, items, start, idx, okb, buf):
    """Codes ``b * m + c`` (a < b < c, both ``okb``) of every basket holding ``a``; returns how many."""
    m = okb.size
    w = 0
    for q in range(start[a], start[a + 1]):
        t = idx[q]
        lo = offsets[t]
        hi = offsets[t + 1]
        for r in range(lo, hi):
            b = items[r]
            if b <= a or not okb[b]:
                continue
            for s in range(r + 1, hi):
                c = items[s]
                if okb[c]:
                    if buf.size > 0:
                        buf[w] = b * m + c
                    w += 1
    return w


@njit(**JIT_PARALLEL)
def _triples(offsets, items, counts, min_count, n_items, p_off, p_b):
    start, idx = _index(offsets, items, counts, min_count, n_items)
    nblocks = (n_items + _BLOCK - 1) // _BLOCK
    per_item = np.zeros(n_items, np.int64)
    empty = np.empty(0, np.int64)
    for pass_ in range(2):
        if pass_ == 1:
            pos = np.empty(n_items + 1, np.int64)
            pos[0] = 0
            for i in range(n_items):
                pos[i + 1] = pos[i] + per_item[i]
            total = pos[n_items]
        else:
            pos = np.zeros(1, np.int64)
            total = 0
        out_a = np.empty(total, np.int64)
        out_b = np.empty(total, np.int64)
        out_c = np.empty(total, np.int64)
        out_n = np.empty(total, np.int64)
        for blk in prange(nblocks):
            okb = np.zeros(n_items, np.bool_)
            for a in range(blk * _BLOCK, min(n_items, (blk + 1) * _BLOCK)):
                if counts[a] < min_count or p_off[a + 1] - p_off[a] < 2:
                    continue
                for q in range(p_off[a], p_off[a + 1]):
                    okb[p_b[q]] = True
                size = _triples_of(a, offsets, items, start, idx, okb, empty)
                buf = np.empty(size, np.int64)
                _triples_of(a, offsets, items, start, idx, okb, buf)
                buf.sort()
                k = 0
                w = pos[a] if pass_ == 1 else 0
                u = 0
                while u < size:
                    v = u + 1
                    while v < size and buf[v] == buf[u]:
                        v += 1
                    if v - u >= min_count:
                        if pass_ == 1:
                            out_a[w] = a
                            out_b[w] = buf[u] // n_items
                            out_c[w] = buf[u] % n_items
                            out_n[w] = v - u
                            w += 1
                        k += 1
                    u = v
                if pass_ == 0:
                    per_item[a] = k
                for q in range(p_off[a], p_off[a + 1]):
                    okb[p_b[q]] = False
    return out_a, out_b, out_c, out_n


def triple_counts(offsets, items, n_items, min_count, pair_a, pair_b, counts=None):
    """Exact counts of every item triple held by at least ``min_count`` baskets (candidate counting).

    Parameters
    ----------
    offsets, items, n_items
        Baskets as in :func:`item_counts`.
    min_count : int
        Triples held by fewer baskets are left out.
    pair_a, pair_b : array_like of int
        The pairs ``a < b`` held by at least ``min_count`` baskets, sorted by ``(a, b)``
        (:func:`pair_counts`): a triple can only reach ``min_count`` when its three pairs
        do, so only items paired with ``a`` are extended.
    counts : array_like of int, optional
        Item counts to prune with (as in :func:`pair_counts`).

    Returns
    -------
    a, b, c, count : ndarray of int64
        Triples ``a < b < c`` sorted by ``(a, b, c)``.

    Notes
    -----
    For each item ``a``, every pair ``(b, c)`` of a basket holding ``a`` with ``(a, b)`` and
    ``(a, c)`` frequent is listed as one code and the codes are sorted and run-length counted;
    work is the sum over those baskets of (their frequent partners of ``a``) squared / 2.
    """
    off, it, n = _check(offsets, items, n_items)
    min_count = int(min_count)
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}")
    if n and n > 3_037_000_499:  # b * n + c must fit in int64
        raise ValueError("too many item codes for triple counting")
    pa = np.ascontiguousarray(pair_a, dtype=np.int64)
    pb = np.ascontiguousarray(pair_b, dtype=np.int64)
    if pa.shape != pb.shape or (pa.size and (np.any(pa >= pb) or pa.min() < 0 or pb.max() >= n)):
        raise ValueError("pairs must be a < b item codes")
    if pa.size > 1 and np.any((np.diff(pa) < 0) | ((np.diff(pa) == 0) & (np.diff(pb) <= 0))):
        raise ValueError("pairs must be sorted by (a, b) without duplicates")
    c = _item_counts(off, it, n) if counts is None else np.ascontiguousarray(counts, dtype=np.int64)
    p_off = np.zeros(n + 1, np.int64)
    np.add.at(p_off, pa + 1, 1)
    p_off = np.cumsum(p_off)
    return _triples(off, it, c, min_count, n, p_off, pb)


@njit(**JIT)
def _merge_counts(ka, ca, kb, cb):
    out_k = np.empty(ka.size + kb.size, np.int64)
    out_c = np.empty(ka.size + kb.size, np.int64)
    i = 0
    j = 0
    w = 0
    while i < ka.size and j < kb.size:
        if ka[i] < kb[j]:
            out_k[w] = ka[i]
            out_c[w] = ca[i]
            i += 1
        elif kb[j] < ka[i]:
            out_k[w] = kb[j]
            out_c[w] = cb[j]
            j += 1
        else:
            out_k[w] = ka[i]
            out_c[w] = ca[i] + cb[j]
            i += 1
            j += 1
        w += 1
    while i < ka.size:
        out_k[w] = ka[i]
        out_c[w] = ca[i]
        i += 1
        w += 1
    while j < kb.size:
        out_k[w] = kb[j]
        out_c[w] = cb[j]
        j += 1
        w += 1
    return out_k[:w].copy(), out_c[:w].copy()


def merge_counts(keys_a, counts_a, keys_b, counts_b):
    """Two count lists over sorted distinct keys merged by addition (counts of disjoint sets of baskets,
    e.g. two customer partitions, into the counts of their union).

    Parameters
    ----------
    keys_a, counts_a, keys_b, counts_b : array_like of int
        Keys strictly increasing within each list (e.g. ``a * n_items + b`` of pairs sorted by
        ``(a, b)``, as :func:`pair_counts` returns them), and their counts.

    Returns
    -------
    keys, counts : ndarray of int64
        The union of the keys, strictly increasing, with the counts of both lists added.
    """
    arrays = [np.ascontiguousarray(x, dtype=np.int64) for x in (keys_a, counts_a, keys_b, counts_b)]
    ka, ca, kb, cb = arrays
    if ka.shape != ca.shape or kb.shape != cb.shape or ka.ndim != 1 or kb.ndim != 1:
        raise ValueError("keys and counts must be 1-d arrays of the same length")
    for k in (ka, kb):
        if k.size > 1 and np.any(k[1:] <= k[:-1]):
            raise ValueError("keys must be strictly increasing")
    return _merge_counts(ka, ca, kb, cb)
