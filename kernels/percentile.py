"""Percentile ranks of customers on one or many metrics.

For every eligible, non-NaN value (within its group, if groups are given):

* ``rank`` -- 1-based *descending* competition rank: ``1 + #{strictly greater}``,
  so ties share the best rank (SQL ``rank() OVER (ORDER BY v DESC)``);
* ``pct_rank`` -- exactly DuckDB's ``percent_rank() OVER (ORDER BY v)`` over the
  *ascending* metric: ``(rank_asc - 1) / (m - 1)`` with
  ``rank_asc = 1 + #{strictly smaller}`` and ``m`` the eligible count of the
  group; ``0.0`` when ``m == 1``.

Ineligible and NaN values get ``rank == 0`` (the engine turns it into null) and
``pct_rank == NaN``. ``-0.0`` and ``0.0`` are equal (they tie).

The sort is a stable radix sort on order-preserving ``uint64`` images of the
float64 bits (IEEE 754 bits with the sign bit flipped for positives and all
bits flipped for negatives; Knuth, TAOCP 5.2.5; Terdiman, "Radix sort
revisited"), no ``argsort``. Only the bit span that actually varies is
sorted, and digits on which all keys agree are skipped: integer-valued
metrics (order counts) need one or two LSD passes of at most 11 bits.
Long arrays of wide keys (money, rates) get one MSD pass on the top
``log2(n) - 10`` varying bits and then 8-bit LSD passes inside each
cache-sized bucket -- two trips through main memory instead of six. Ranks
are then written with one scattered 8-byte store per row (``#smaller`` and
``#greater`` packed) and decoded in a sequential pass.

The radix helpers here are shared with :mod:`centile.kernels.topk`.

Compile time: numba compiles a kernel once per distinct argument-type tuple, and a
constant passed from one kernel to another (``0``, ``False``) is typed as a *literal*,
which is a type of its own. Calls between kernels therefore pass typed values
(``np.int64(0)``, ``np.bool_(False)``) -- otherwise the whole radix sort below a call is
compiled, optimised and emitted again for every literal (on a cold cache that cost
seconds per call site). ``tests/test_issue18_compile.py`` checks that each kernel is
compiled for one type tuple.
"""

import numba
import numpy as np
from numba import njit

from ._flags import JIT

_SIGN = np.uint64(0x8000000000000000)
_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)
_ONE = np.uint64(1)
_MAX_DIGIT_BITS = 11
_INSERTION = 24  # ranges this short use insertion sort
_MSD_MIN = 1 << 16  # ranges this long (and wide keys) start with one MSD pass


# --------------------------------------------------------------------------
# radix helpers (also used by topk)
# --------------------------------------------------------------------------
@njit(**JIT)
def _asc_key(v, b):
    """Order-preserving uint64 image of a non-NaN float64 ``v`` with bits ``b``."""
    if v == 0.0:  # -0.0 == 0.0: one key for both
        return _SIGN
    if b & _SIGN:
        return b ^ _ONES
    return b | _SIGN


@njit(**JIT)
def _bit_span(vary):
    """``(lo, hi)``: lowest set bit and one past the highest set bit of ``vary != 0``."""
    lo = 0
    while (vary >> np.uint64(lo)) & _ONE == 0:
        lo += 1
    hi = 64
    while (vary >> np.uint64(hi - 1)) & _ONE == 0:
        hi -= 1
    return lo, hi


@njit(**JIT)
def _insertion_sort(keys, idx, a, b):
    for i in range(a + 1, b):
        k = keys[i]
        x = idx[i]
        j = i - 1
        while j >= a and keys[j] > k:
            keys[j + 1] = keys[j]
            idx[j + 1] = idx[j]
            j -= 1
        keys[j + 1] = k
        idx[j + 1] = x


@njit(**JIT)
def _lsd(keys, idx, kbuf, ibuf, a, b, lo, hi, maxbits, hist):
    """Stable LSD passes over bits ``[lo, hi)`` of ``keys[a:b]`` (all other bits equal).

    Digits are balanced and at most ``maxbits`` wide; ``hist`` is scratch of
    shape at least ``(passes, 2**maxbits)``. Returns True when the result is in
    ``kbuf``/``ibuf``.
    """
    s = b - a
    width = hi - lo
    npass = (width + maxbits - 1) // maxbits
    dbits = (width + npass - 1) // npass
    nb = 1 << dbits
    mask = np.uint64(nb - 1)
    ulo = np.uint64(lo)
    for p in range(npass):
        for d in range(nb):
            hist[p, d] = 0
    for i in range(a, b):
        kk = keys[i] >> ulo
        for p in range(npass):
            hist[p, np.intp((kk >> np.uint64(p * dbits)) & mask)] += 1
    k0 = keys[a]
    src_k, src_i, dst_k, dst_i = keys, idx, kbuf, ibuf
    in_buf = False
    for p in range(npass):
        shift = np.uint64(lo + p * dbits)
        if hist[p, np.intp((k0 >> shift) & mask)] == s:
            continue  # every key has the same digit: nothing to reorder
        total = a
        for d in range(nb):
            c = hist[p, d]
            hist[p, d] = total
            total += c
        for i in range(a, b):
            kk = src_k[i]
            d = np.intp((kk >> shift) & mask)
            pos = hist[p, d]
            hist[p, d] = pos + 1
            dst_k[pos] = kk
            dst_i[pos] = src_i[i]
        src_k, dst_k = dst_k, src_k
        src_i, dst_i = dst_i, src_i
        in_buf = not in_buf
    return in_buf


@njit(**JIT)
def _vary(keys, a, b):
    k0 = keys[a]
    vary = np.uint64(0)
    for i in range(a + 1, b):
        vary |= keys[i] ^ k0
    return vary


@njit(**JIT)
def _radix_sort_range(keys, idx, kbuf, ibuf, a, b):
    """Stable ascending radix sort of ``keys[a:b]``, carrying ``idx[a:b]``.

    ``kbuf``/``ibuf`` are scratch of the same types and at least ``b`` long.
    Returns True when the sorted data ended up in the buffers, False when it
    is in ``keys``/``idx``.

    Short ranges and narrow keys (<= 2 digits) use LSD passes. Long ranges of
    wide keys use one MSD pass on the top ``~log2(s) - 10`` varying bits into
    the buffers and then sort each (cache-sized) bucket in place with 8-bit
    LSD passes: two passes over main memory instead of up to six.
    """
    s = b - a
    if s <= _INSERTION:
        _insertion_sort(keys, idx, a, b)
        return False
    vary = _vary(keys, a, b)
    if vary == 0:
        return False
    lo, hi = _bit_span(vary)
    width = hi - lo
    if s < _MSD_MIN or width <= 2 * _MAX_DIGIT_BITS:
        maxbits = np.int64(_MAX_DIGIT_BITS) if s >= 4096 else np.int64(8)
        hist = np.empty(((width + maxbits - 1) // maxbits, 1 << maxbits), np.int64)
        return _lsd(keys, idx, kbuf, ibuf, a, b, lo, hi, maxbits, hist)
    nbits = 0
    while (s >> nbits) > 1:
        nbits += 1
    dbits = min(max(nbits - 10, 8), 16, width)
    shift = np.uint64(hi - dbits)
    nb = 1 << dbits
    mask = np.uint64(nb - 1)
    start = np.zeros(nb + 1, np.int64)
    for i in range(a, b):
        start[np.intp((keys[i] >> shift) & mask) + 1] += 1
    start[0] = a
    for d in range(nb):
        start[d + 1] += start[d]
    cur = start[:nb].copy()
    for i in range(a, b):
        kk = keys[i]
        d = np.intp((kk >> shift) & mask)
        pos = cur[d]
        cur[d] = pos + 1
        kbuf[pos] = kk
        ibuf[pos] = idx[i]
    # each bucket in cache: insertion sort when short, else 8-bit LSD passes on its varying bits
    hist8 = np.empty((8, 256), np.int64)
    eight = np.int64(8)
    for d in range(nb):
        u = start[d]
        v = start[d + 1]
        if v - u <= _INSERTION:
            _insertion_sort(kbuf, ibuf, u, v)
            continue
        bucket_vary = _vary(kbuf, u, v)
        if bucket_vary == 0:
            continue
        blo, bhi = _bit_span(bucket_vary)
        if _lsd(kbuf, ibuf, keys, idx, u, v, blo, bhi, eight, hist8):
            kbuf[u:v] = keys[u:v]
            ibuf[u:v] = idx[u:v]
    return True


# --------------------------------------------------------------------------
# ranking kernels
# --------------------------------------------------------------------------
@njit(**JIT)
def _assign_run(sk, si, start, end, rank, pct, packed):
    """Ranks of one group's sorted (ascending) segment ``sk[start:end]``.

    With ``packed`` it writes ``(#smaller << 32) | #greater`` into ``rank``
    only -- one random write per row instead of two -- and :func:`_rank_row`
    decodes it sequentially (needs n < 2**31). Otherwise it writes both final
    values directly.
    """
    m = end - start
    i = start
    while i < end:
        j = i + 1
        while j < end and sk[j] == sk[i]:
            j += 1
        smaller = i - start
        greater = end - j
        if packed:
            v = (smaller << 32) | greater
            for t in range(i, j):
                rank[si[t]] = v
        else:
            p = 0.0 if m == 1 else smaller / (m - 1)
            for t in range(i, j):
                rank[si[t]] = 1 + greater
                pct[si[t]] = p
        i = j


@njit(**JIT)
def _rank_row(vals, bits, elig, groups, has_groups, g, rank, pct, keys, idx, kbuf, ibuf):
    n = vals.size
    zero = np.int64(0)  # not a literal 0: that would compile the sort once more (see module docstring)
    s = np.int64(0)
    for i in range(n):
        v = vals[i]
        rank[i] = 0
        if elig[i] and not np.isnan(v) and (not has_groups or groups[i] >= 0):
            keys[s] = _asc_key(v, bits[i])
            idx[s] = i
            s += 1
            pct[i] = 0.0
        else:
            pct[i] = np.nan
    if _radix_sort_range(keys, idx, kbuf, ibuf, zero, s):
        sk, si, ok, oi = kbuf, ibuf, keys, idx
    else:
        sk, si, ok, oi = keys, idx, kbuf, ibuf
    packed = n < 2**31
    size = np.full(1, s, np.int64)
    if not has_groups:
        _assign_run(sk, si, zero, s, rank, pct, packed)
    else:
        # stable counting sort by group code on top of the value order
        start = np.zeros(g + 1, np.int64)
        for t in range(s):
            start[groups[si[t]] + 1] += 1
        for q in range(g):
            start[q + 1] += start[q]
        cur = start[:g].copy()
        for t in range(s):
            q = groups[si[t]]
            pos = cur[q]
            cur[q] = pos + 1
            ok[pos] = sk[t]
            oi[pos] = si[t]
        for q in range(g):
            if start[q + 1] > start[q]:
                _assign_run(ok, oi, start[q], start[q + 1], rank, pct, packed)
        size = start[1:] - start[:-1]
    if not packed:
        return
    # decode sequentially: rank = 1 + #greater, pct = #smaller / (m - 1) (DuckDB)
    low = np.int64(0xFFFFFFFF)
    for i in range(n):
        if pct[i] == 0.0:
            m = size[groups[i]] if has_groups else s
            v = rank[i]
            rank[i] = 1 + (v & low)
            pct[i] = 0.0 if m == 1 else (v >> 32) / (m - 1)


def _rank_many(vals, bits, elig, groups, has_groups, g, rank, pct, idx_dtype, nslots):
    """Rank every row of ``vals[k, n]`` (one metric per row), in parallel over metrics.

    Metrics are dealt round-robin to ``nslots`` threads, each with its own
    scratch (allocated once: fresh pages are expensive) running the GIL-free
    :func:`_rank_row`; every metric is ranked independently, so the result
    does not depend on ``nslots``. (Python threads rather than a ``prange``
    kernel: numba's parallel machinery cost seconds of compile time on a cold
    cache for a loop over a handful of metrics.)
    """
    k, n = vals.shape

    def work(slot):
        keys = np.empty(n, np.uint64)
        idx = np.empty(n, idx_dtype)
        kbuf = np.empty(n, np.uint64)
        ibuf = np.empty(n, idx_dtype)
        for j in range(slot, k, nslots):
            _rank_row(vals[j], bits[j], elig[j], groups, has_groups, g, rank[j], pct[j],
                      keys, idx, kbuf, ibuf)

    if nslots <= 1:
        work(0)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(nslots) as ex:
        list(ex.map(work, range(nslots)))


# --------------------------------------------------------------------------
# public wrappers
# --------------------------------------------------------------------------
def _coerce_groups(groups, n):
    if groups is None:
        return np.zeros(1, np.int64), False, 1
    gr = np.ascontiguousarray(groups, dtype=np.int64)
    if gr.shape != (n,):
        raise ValueError(f"groups must have shape ({n},), got {gr.shape}")
    g = int(gr.max()) + 1 if n else 1
    return gr, True, max(g, 1)


def _idx_dtype(n):
    return np.int32 if n < 2**31 - 1 else np.int64


def rank_pct(values, eligible=None, groups=None):
    """Descending competition rank and DuckDB ``percent_rank`` of one metric.

    Parameters
    ----------
    values : array_like of float, shape (n,)
        The metric; converted to float64. NaN means "not ranked".
    eligible : array_like of bool, shape (n,), optional
        Rows that take part in the ranking; default all rows.
    groups : array_like of int, shape (n,), optional
        Dense group codes ``0 .. g-1``; ranks are computed within each group
        (``PARTITION BY``). A negative code (a null group) makes the row
        ineligible.

    Returns
    -------
    rank : ndarray of int64, shape (n,)
        ``1 + #{eligible values in the group strictly greater}``; 0 for
        ineligible/NaN rows.
    pct_rank : ndarray of float64, shape (n,)
        ``(rank_asc - 1) / (m - 1)`` where ``rank_asc = 1 + #{strictly
        smaller}`` and ``m`` is the eligible count of the group (0.0 when
        ``m == 1``): identical to DuckDB ``percent_rank() OVER (PARTITION BY
        group ORDER BY value)`` on the eligible rows. NaN for ineligible rows.

    Notes
    -----
    O(n * p) time for p radix passes (1 <= p <= 6, see module docstring) and
    O(n) memory; -0.0 ties with 0.0; +-inf are ordinary values.
    """
    v = np.ascontiguousarray(values, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {v.shape}")
    n = v.size
    if eligible is None:
        e = np.ones(n, np.bool_)
    else:
        e = np.ascontiguousarray(eligible, dtype=np.bool_)
        if e.shape != (n,):
            raise ValueError(f"eligible must have shape ({n},), got {e.shape}")
    gr, has_groups, g = _coerce_groups(groups, n)
    rank = np.empty((1, n), np.int64)
    pct = np.empty((1, n), np.float64)
    _rank_many(v.reshape(1, n), v.view(np.uint64).reshape(1, n), e.reshape(1, n),
               gr, has_groups, g, rank, pct, _idx_dtype(n), 1)
    return rank[0], pct[0]


def rank_pct_many(matrix, eligible=None, groups=None):
    """:func:`rank_pct` for k metrics at once, in parallel over the metrics.

    Parameters
    ----------
    matrix : array_like of float, shape (n, k)
        One metric per column; converted to float64. A Fortran-ordered array
        (what ``polars.DataFrame.to_numpy()`` returns) is used without a copy;
        a C-ordered one is transposed into a copy first.
    eligible : array_like of bool, shape (n, k), optional
        Per-metric eligibility; default all rows. NaN is never eligible.
    groups : array_like of int, shape (n,), optional
        Dense group codes shared by all metrics, as in :func:`rank_pct`.

    Returns
    -------
    rank : ndarray of int64, shape (n, k)
    pct_rank : ndarray of float64, shape (n, k)
        Column ``j`` equals ``rank_pct(matrix[:, j], eligible[:, j], groups)``.
        Both are Fortran-ordered (each column contiguous).

    Notes
    -----
    Results do not depend on the number of threads: each thread ranks whole
    metrics and writes only their columns.
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"matrix must be 2-D (n, k), got shape {m.shape}")
    n, k = m.shape
    vt = np.ascontiguousarray(m.T)  # (k, n): a view when m is Fortran-ordered
    if eligible is None:
        et = np.ones((k, n), np.bool_)
    else:
        e = np.asarray(eligible, dtype=np.bool_)
        if e.shape != (n, k):
            raise ValueError(f"eligible must have shape ({n}, {k}), got {e.shape}")
        et = np.ascontiguousarray(e.T)
    gr, has_groups, g = _coerce_groups(groups, n)
    rank = np.empty((k, n), np.int64)
    pct = np.empty((k, n), np.float64)
    nslots = max(1, min(k, numba.get_num_threads()))
    _rank_many(vt, vt.view(np.uint64), et, gr, has_groups, g, rank, pct, _idx_dtype(n), nslots)
    return rank.T, pct.T
