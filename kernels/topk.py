"""Top-k rows by a lexicographic key, by selection rather than a full sort.

Order ("better first"):

1. larger ``keys[:, 0]`` (the primary metric; NaN = not eligible);
2. then larger ``keys[:, 1]``, ``keys[:, 2]``, ... (NaN sorts last in its column);
3. then *smaller* ``hashes`` (a seeded hash of the customer id, so ties are
   broken reproducibly but without favouring low ids);
4. then smaller row index.

``-0.0`` and ``0.0`` tie. The order is total, so the result is unique.

Algorithm: the eligible primary values are mapped to order-preserving
``uint64`` keys (inverted, so smaller key = better) and the k-th smallest key
is found by *radix selection* (MSD histogram of the varying bits, keep only
the bucket holding the k-th key, repeat on the next digit: at most six
shrinking passes, no worst case). All rows whose primary is at least that
threshold are gathered and only they are sorted lexicographically: a radix
sort on the primary, then, inside each run of equal primaries, on the next
column, and so on, the hash last (all stable, so rows still equal stay in
index order; short runs are insertion-sorted inside the radix helper).
"""

import numpy as np
from numba import njit

from ._flags import JIT
from .percentile import _asc_key, _bit_span, _radix_sort_range

_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)
_SELECT_BITS = 11
_NO_ROWS = np.zeros(0, np.int64)


@njit(**JIT)
def _desc_key(v, b):
    """uint64 key, ascending = better: larger ``v`` first, NaN last."""
    if np.isnan(v):
        return _ONES
    return _asc_key(v, b) ^ _ONES


@njit(**JIT)
def _lex_before(i, j, vals, hashes, use_hash, col0):
    """True when row ``i`` comes before row ``j``, comparing from column ``col0`` on."""
    for col in range(col0, vals.shape[1]):
        a = vals[i, col]
        b = vals[j, col]
        if a != b:  # also True when either is NaN
            an = np.isnan(a)
            bn = np.isnan(b)
            if an and bn:
                continue
            if an:
                return False
            if bn:
                return True
            return a > b
    if use_hash and hashes[i] != hashes[j]:
        return hashes[i] < hashes[j]
    return i < j


@njit(**JIT)
def _lex_sort(cand, vals, bits, hashes, use_hash):
    """Sort row indices ``cand`` (given in ascending row order) best-first, in place.

    Column by column: a stable radix sort of the whole array on the primary
    key, then of every run of equal keys on the next column, and so on, with
    the hash as the last column. Stability keeps equal rows in row order.
    """
    s = cand.size
    if s < 2:
        return
    m = vals.shape[1]
    nlev = m + 1 if use_hash else m
    keys = np.empty(s, np.uint64)
    kbuf = np.empty(s, np.uint64)
    ibuf = np.empty(s, np.int64)
    cap = s // 2 + 1
    ra = np.empty(cap, np.int64)
    rb = np.empty(cap, np.int64)
    na = np.empty(cap, np.int64)
    nb = np.empty(cap, np.int64)
    nr = 1
    ra[0] = 0
    rb[0] = s
    for lev in range(nlev):
        nn = 0
        for r in range(nr):
            a = ra[r]
            b = rb[r]
            if lev < m:
                for t in range(a, b):
                    i = cand[t]
                    keys[t] = _desc_key(vals[i, lev], bits[i, lev])
            else:
                for t in range(a, b):
                    keys[t] = hashes[cand[t]]
            if _radix_sort_range(keys, cand, kbuf, ibuf, a, b):  # sorted into the buffers
                keys[a:b] = kbuf[a:b]
                cand[a:b] = ibuf[a:b]
            if lev + 1 < nlev:  # runs of equal keys go on to the next column
                t = a
                while t < b:
                    u = t + 1
                    while u < b and keys[u] == keys[t]:
                        u += 1
                    if u - t > 1:
                        na[nn] = t
                        nb[nn] = u
                        nn += 1
                    t = u
        ra, na = na, ra
        rb, nb = nb, rb
        nr = nn
        if nr == 0:
            break


@njit(**JIT)
def _candidates(vals, bits, hashes, use_hash, rows, use_rows, mask, use_mask, after,
                keys_out, rows_out):
    """Collect the candidate rows and their inverted primary keys; returns their count.

    Candidates are the eligible rows (non-NaN primary, in ``mask`` when
    ``use_mask``) among all rows, or among ``rows`` when ``use_rows``, and
    strictly after row ``after`` in the order when ``after >= 0``. Written in
    row order into ``keys_out``/``rows_out``.
    """
    nr = rows.size if use_rows else vals.shape[0]
    after_key = _ONES
    if after >= 0:
        after_key = _desc_key(vals[after, 0], bits[after, 0])
    s = 0
    for t in range(nr):
        i = rows[t] if use_rows else t
        v = vals[i, 0]
        if np.isnan(v) or (use_mask and not mask[i]):
            continue
        key = _desc_key(v, bits[i, 0])
        if key <= after_key and after >= 0:
            if key < after_key or not _lex_before(after, i, vals, hashes, use_hash, np.int64(1)):
                continue
        keys_out[s] = key
        rows_out[s] = i
        s += 1
    return s


@njit(**JIT)
def _radix_select(keys, s, k):
    """k-th smallest of ``keys[:s]`` by MSD radix selection (``keys`` is not modified).

    Returns ``(kth_key, n_at_or_below)`` for ``kth = min(k, s)``, or ``(0, 0)``
    when ``kth == 0``. Each round histograms the next (at most 11) varying
    bits and keeps only the bucket holding the k-th key, so there are at most
    six rounds over shrinking data and no bad inputs.
    """
    kth = min(k, s)
    if kth <= 0:
        return np.uint64(0), 0
    if kth == s:
        worst = keys[0]
        for t in range(1, s):
            if keys[t] > worst:
                worst = keys[t]
        return worst, s
    k0 = keys[0]
    vary = np.uint64(0)
    for t in range(1, s):
        vary |= keys[t] ^ k0
    if vary == 0:
        return k0, s
    lo, hi = _bit_span(vary)
    hist = np.empty(1 << _SELECT_BITS, np.int64)
    buf = keys  # first round reads the input; later rounds a compacted copy
    cur = s
    below = 0
    first = True
    while True:
        if cur == 1:
            return buf[0], below + 1
        if hi <= lo:  # every remaining key is equal
            return buf[0], below + cur
        dbits = min(_SELECT_BITS, hi - lo)
        shift = np.uint64(hi - dbits)
        msk = np.uint64((1 << dbits) - 1)
        hist[: 1 << dbits] = 0
        for t in range(cur):
            hist[np.intp((buf[t] >> shift) & msk)] += 1
        acc = 0
        d = 0
        while acc + hist[d] < kth:
            acc += hist[d]
            d += 1
        kth -= acc
        below += acc
        ud = np.uint64(d)
        if hist[d] == 1 or hi - dbits <= lo:  # the k-th key is decided: find it
            for t in range(cur):
                if (buf[t] >> shift) & msk == ud:
                    return buf[t], below + hist[d]
        dst = np.empty(hist[d], np.uint64) if first else buf
        w = 0
        for t in range(cur):
            x = buf[t]
            if (x >> shift) & msk == ud:
                dst[w] = x
                w += 1
        buf = dst
        first = False
        cur = w
        hi -= dbits


@njit(**JIT)
def _top_sorted(vals, bits, hashes, use_hash, rows, use_rows, mask, use_mask, k, after):
    """Candidate rows with primary at least the k-th best, sorted best-first.

    Candidates as in :func:`_candidates`. Returned are the best ``min(k,
    n_candidates)`` plus any rows tied with the k-th on the primary.
    Returns ``(rows, n_candidates)``. Callers in other kernels pass typed flags and
    numbers (``np.bool_(False)``, ``np.int64(-1)``), never literal constants, so one
    compiled version serves every caller (see :mod:`centile.kernels.percentile`).
    """
    nr = rows.size if use_rows else vals.shape[0]
    keys = np.empty(nr, np.uint64)
    cand = np.empty(nr, np.int64)
    s = _candidates(vals, bits, hashes, use_hash, rows, use_rows, mask, use_mask, after, keys,
                    cand)
    thr, _ = _radix_select(keys, s, k)
    w = 0
    for t in range(s):  # keep rows at or above the threshold, in row order
        if keys[t] <= thr:
            cand[w] = cand[t]
            w += 1
    out = cand[:w]
    _lex_sort(out, vals, bits, hashes, use_hash)
    return out, s


def topk(keys, k, hashes=None, eligible=None):
    """Indices of the k best rows in lexicographic order, by selection.

    Parameters
    ----------
    keys : array_like of float, shape (n, m) or (n,)
        Column 0 is the primary metric (larger is better, NaN = not
        eligible); columns 1.. break ties (larger is better, NaN last).
        Converted to C-contiguous float64.
    k : int
        How many rows to return (``k >= 0``).
    hashes : array_like of uint64, shape (n,), optional
        Seeded id hashes (see :mod:`centile.kernels.hashing`); after the key
        columns the *smaller* hash wins. Without hashes the smaller index wins.
    eligible : array_like of bool, shape (n,), optional
        Rows that may be selected; default all rows with a non-NaN primary.

    Returns
    -------
    indices : ndarray of int64, shape (min(k, n_eligible),)
        Best first; equal to sorting all eligible rows by the order above and
        taking the head.
    threshold : float
        Primary value of the last returned row (the k-th best primary), NaN
        when nothing is returned.

    Notes
    -----
    O(n) selection plus O(c log c) for the c rows tied at or above the
    threshold (usually c is close to k).
    """
    vals = np.asarray(keys, dtype=np.float64)
    if vals.ndim == 1:
        vals = vals.reshape(-1, 1)
    if vals.ndim != 2 or vals.shape[1] < 1:
        raise ValueError(f"keys must have shape (n, m) with m >= 1, got {vals.shape}")
    vals = np.ascontiguousarray(vals)
    n = vals.shape[0]
    k = int(k)
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    h, use_hash = _coerce_hashes(hashes, n)
    if eligible is None:
        mask, use_mask = np.ones(1, np.bool_), False
    else:
        mask = np.ascontiguousarray(eligible, dtype=np.bool_)
        if mask.shape != (n,):
            raise ValueError(f"eligible must have shape ({n},), got {mask.shape}")
        use_mask = True
    cand, s = _top_sorted(vals, vals.view(np.uint64), h, use_hash, _NO_ROWS, False, mask,
                          use_mask, min(k, n), -1)
    kk = min(k, int(s))
    out = cand[:kk].copy()
    threshold = float(vals[out[-1], 0]) if kk else float("nan")
    return out, threshold


def _coerce_hashes(hashes, n):
    if hashes is None:
        return np.zeros(1, np.uint64), False
    h = np.ascontiguousarray(hashes)
    if h.dtype != np.uint64:
        if h.dtype.kind not in "iu":
            raise TypeError(f"hashes must be uint64, got {h.dtype}")
        h = h.astype(np.uint64)
    if h.shape != (n,):
        raise ValueError(f"hashes must have shape ({n},), got {h.shape}")
    return h, True
