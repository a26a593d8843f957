"""Per-customer top-k item recommendations from item-item neighbour scores.

A customer's candidate score is ``sum_i w_i * s(i, j)`` over the items ``i`` of
their history (weights ``w_i``, e.g. recency-decayed purchase counts) and the
neighbours ``j`` of ``i`` (scores ``s``, e.g. cosine or lift of co-occurrence
counts). Items already bought are left out (``new_only``) or boosted by
``boost * w_j`` (items of weight 0, e.g. returned in full, count as bought but
are not boosted). The best ``k`` are selected with the selection kernel of
:mod:`centile.kernels.topk` (no full sort of the candidates); ties go to the
smaller item code. When fewer than ``k`` candidates score, the rest is filled
from the customer's segment popularity order (again without bought items
under ``new_only``).

Customers are processed in fixed blocks in parallel, each writing its own
rows, and every sum runs in the order of the inputs: the result is the same
for any thread count.
"""

import numpy as np
from numba import njit, prange

from ._flags import JIT_PARALLEL
from .topk import _top_sorted

_BLOCK = 256  # customers per parallel block


@njit(**JIT_PARALLEL)
def _recommend(h_off, h_items, h_w, n_off, n_items, n_score, new_only, boost, seg, pop_order, pop_len,
               k, m):
    nc = h_off.size - 1
    out = np.full((nc, k), -1, np.int64)
    score = np.full((nc, k), np.nan)
    source = np.zeros((nc, k), np.int8)
    nblocks = (nc + _BLOCK - 1) // _BLOCK
    no_hash = np.zeros(1, np.uint64)
    no_mask = np.ones(1, np.bool_)
    for blk in prange(nblocks):
        vals = np.empty((m, 2))
        for j in range(m):
            vals[j, 0] = np.nan
            vals[j, 1] = -j  # ties: the smaller item code first
        bits = vals.view(np.uint64)
        touched = np.empty(m, np.int64)
        bought = np.zeros(m, np.bool_)
        chosen = np.zeros(m, np.bool_)
        for c in range(blk * _BLOCK, min(nc, (blk + 1) * _BLOCK)):
            nt = 0
            for p in range(h_off[c], h_off[c + 1]):
                i = h_items[p]
                w = h_w[p]
                bought[i] = True
                for q in range(n_off[i], n_off[i + 1]):
                    j = n_items[q]
                    if np.isnan(vals[j, 0]):
                        vals[j, 0] = 0.0
                        touched[nt] = j
                        nt += 1
                    vals[j, 0] += w * n_score[q]
            for p in range(h_off[c], h_off[c + 1]):
                i = h_items[p]
                if new_only:
                    vals[i, 0] = np.nan
                elif h_w[p] > 0:
                    if np.isnan(vals[i, 0]):
                        vals[i, 0] = 0.0
                        touched[nt] = i
                        nt += 1
                    vals[i, 0] += boost * h_w[p]
            got = 0
            if nt > 0:
                # typed flags, not literals: one compiled _top_sorted for every caller
                rows, _s = _top_sorted(vals, bits, no_hash, np.bool_(False), touched[:nt], np.bool_(True),
                                       no_mask, np.bool_(False), k, np.int64(-1))
                got = min(k, rows.size)
                for r in range(got):
                    j = rows[r]
                    out[c, r] = j
                    score[c, r] = vals[j, 0]
                    chosen[j] = True
            g = seg[c]
            t = 0
            while got < k and t < pop_len[g]:
                j = pop_order[g, t]
                t += 1
                if chosen[j] or (new_only and bought[j]):
                    continue
                out[c, got] = j
                source[c, got] = 1
                chosen[j] = True
                got += 1
            for s in range(nt):
                vals[touched[s], 0] = np.nan
            for p in range(h_off[c], h_off[c + 1]):
                i = h_items[p]
                bought[i] = False
                vals[i, 0] = np.nan
            for r in range(got):
                chosen[out[c, r]] = False
    return out, score, source


def recommend(h_off, h_items, h_weight, n_off, n_items, n_score, n_total, k, *, new_only=True, boost=1.0,
              segment=None, pop_order=None, pop_len=None):
    """Top-k items per customer.

    Parameters
    ----------
    h_off, h_items, h_weight : array_like
        Histories as CSR: customer ``c`` bought ``h_items[h_off[c]:h_off[c+1]]``
        (distinct item codes) with weights ``h_weight`` (finite, >= 0).
    n_off, n_items, n_score : array_like
        Neighbours as CSR over item codes: item ``i`` has neighbours
        ``n_items[n_off[i]:n_off[i+1]]`` with scores ``n_score`` (finite).
    n_total : int
        Number of item codes ``m``.
    k : int
        Recommendations per customer.
    new_only : bool
        Leave out items in the customer's history; otherwise add ``boost * w_j``
        (only for ``w_j > 0``).
    segment : array_like of int, shape (n_customers,), optional
        Segment code per customer (default all 0).
    pop_order : array_like of int, shape (n_segments, L), optional
        Items per segment, most popular first (fallback).
    pop_len : array_like of int, shape (n_segments,), optional
        Valid entries of each ``pop_order`` row.

    Returns
    -------
    items : ndarray of int64, shape (n_customers, k)
        Item codes best first, -1 where fewer than ``k`` exist.
    score : ndarray of float64, shape (n_customers, k)
        Neighbour score; NaN for popularity fill-ins.
    source : ndarray of int8, shape (n_customers, k)
        0 = neighbour score, 1 = segment popularity.
    """
    h_off = np.ascontiguousarray(h_off, np.int64)
    h_items = np.ascontiguousarray(h_items, np.int64)
    h_w = np.ascontiguousarray(h_weight, np.float64)
    n_off = np.ascontiguousarray(n_off, np.int64)
    n_items = np.ascontiguousarray(n_items, np.int64)
    n_score = np.ascontiguousarray(n_score, np.float64)
    m = int(n_total)
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if n_off.size != m + 1 or n_off[-1] != n_items.size or n_score.size != n_items.size:
        raise ValueError("neighbour CSR arrays do not match n_total")
    if h_off.size < 1 or h_off[-1] != h_items.size or h_w.size != h_items.size:
        raise ValueError("history CSR arrays do not match")
    for name, a in (("h_items", h_items), ("n_items", n_items)):
        if a.size and (a.min() < 0 or a.max() >= m):
            raise ValueError(f"{name} must lie in [0, {m})")
    if not (np.all(np.isfinite(h_w)) and np.all(np.isfinite(n_score))):
        raise ValueError("weights and scores must be finite")
    nc = h_off.size - 1
    seg = np.zeros(nc, np.int64) if segment is None else np.ascontiguousarray(segment, np.int64)
    if pop_order is None:
        pop_order = np.zeros((1, 0), np.int64)
        pop_len = np.zeros(1, np.int64)
    pop_order = np.ascontiguousarray(pop_order, np.int64)
    pop_len = np.ascontiguousarray(pop_len, np.int64)
    if pop_order.ndim != 2 or pop_len.shape != (pop_order.shape[0],) or seg.shape != (nc,):
        raise ValueError("segment / pop_order / pop_len shapes do not match")
    if nc and (seg.min() < 0 or seg.max() >= pop_order.shape[0]):
        raise ValueError("segment codes must index pop_order rows")
    return _recommend(h_off, h_items, h_w, n_off, n_items, n_score, bool(new_only), float(boost), seg,
                      pop_order, pop_len, k, m)
