"""Poisson bootstrap of grouped sums, parallel over replicates.

The uplift job needs bootstrap intervals for skewed outcomes (revenue,
margin) and ratio metrics (revenue per order) in every (segment, arm) cell of
up to tens of millions of customers. A classic resample draws ``n`` rows with
replacement per replicate and per group; this kernel uses the *Poisson
bootstrap* instead (Hanley & MacGibbon 2006; Chamandy et al., "Estimating
uncertainty for massive data streams", Google 2012): every row gets an
independent weight ``w ~ Poisson(1)`` per replicate and the replicate's
statistic is computed from the weighted sums. It is the standard large-``n``
equivalent of the multinomial resample (the multinomial counts of a resample
of size ``n`` are ``n`` Poisson(1) counts conditioned on their total), needs no
per-group sampling and no index arrays, and every statistic that is a function
of sums -- means, differences of means, ratios of sums -- comes out of one
pass.

What the kernel returns is, for each replicate ``b`` and group ``g``,
``out[b, g, 0] = sum_i w_bi`` and ``out[b, g, 1 + k] = sum_i w_bi * y[k, i]``
over the rows ``i`` of group ``g`` (rows sorted by group, ``offsets`` giving
the group boundaries). The engine turns these into replicate statistics.

Rows whose outcomes are all zero (customers who did not respond: usually
most of them) need not be listed: they only add their weights to
``out[..., 0]``, and a sum of ``m`` independent Poisson(1) weights is a single
Poisson(``m``) draw, so ``zeros[g]`` such rows cost one draw per group and
replicate (the sufficient-statistic form of the same bootstrap).

Random numbers
--------------
``seeds[b]`` (drawn outside the kernel from a ``numpy.random.SeedSequence``)
seeds replicate ``b``. Weights come from a counter-based generator, so a
weight depends only on (seed, replicate, row): rows are cut into tiles of
``2 * H`` rows (``H = 1024``); in tile ``t``, ``h = mix64(seeds[b] + (t * H + j)
* 0x9E3779B97F4A7C15)`` (the ``(t * H + j)``-th output of a SplitMix64 stream;
``mix64`` as in ``_hash.py``) gives row ``t * 2H + j`` its high 32 bits and row
``t * 2H + H + j`` its low 32 bits as a uniform ``u``, and ``w = #{k : u >=
T_k}`` with ``T_k = floor(2**32 * P(Poisson(1) <= k))`` -- inversion of the
Poisson(1) distribution function at 32-bit resolution (each probability off
by less than 2**-32). One hash per two rows and a branch-free count of the
first five thresholds keep the generator vectorised; the rare tail (w >= 5,
probability 0.0037) is finished in a second pass. Each replicate's sums are
accumulated in one fixed order, so results are bit-identical at any thread
count.

Layout: ``prange`` over blocks of replicates (each block writes only its own
rows of ``out``); inside a block, tile by tile, every replicate of the block
generates the tile's weights into a per-block buffer and adds one dot product
per (group, outcome) while the tile's values are still in cache.

Cost: ``n * b`` weights for the ``n`` listed rows (10**10 for 10M rows x
1,000 replicates if all are listed), plus ``g * b`` block draws; see
``benchmarks/bench_uplift.py``.
"""

import math

import numpy as np
from numba import njit, prange

from ._flags import JIT, JIT_PARALLEL
from .hashing import _GOLDEN, _mix64

_U64_MAX = (1 << 64) - 1


def _poisson1_thresholds(kmax=24):
    """``T_k = floor(2**64 * P(Poisson(1) <= k))`` for k < kmax, as uint64 (clipped at 2**64 - 1)."""
    cdf, term, out = 0.0, math.exp(-1.0), []
    for k in range(kmax):
        cdf += term
        term /= k + 1
        out.append(min(int(cdf * 2.0**64), _U64_MAX))
    return np.array(out, dtype=np.uint64)


THRESHOLDS = _poisson1_thresholds()
#: the 32-bit thresholds the kernel compares against (``T_k >> 32``)
THRESHOLDS32 = (THRESHOLDS >> np.uint64(32)).astype(np.uint32)
_HALF = 1024  # a tile is 2 * _HALF rows; one hash gives the weights of rows j and j + _HALF
_TILE = 2 * _HALF
_BLOCK = 16
_LOW32 = np.uint64(0xFFFFFFFF)


@njit(**JIT)
def _tile_weights(seed, tile, thr, buf):
    """Poisson(1) weights of the ``_TILE`` rows of ``tile`` for one replicate, into ``buf``.

    Row ``tile * _TILE + j`` (``j < _HALF``) takes the high 32 bits of
    ``h = mix64(seed + (tile * _HALF + j) * golden)`` and row ``... + j + _HALF``
    the low 32 bits; each 32-bit uniform is inverted against ``thr``.
    """
    t0 = thr[0]
    t1 = thr[1]
    t2 = thr[2]
    t3 = thr[3]
    t4 = thr[4]
    base = seed + np.uint64(tile) * np.uint64(_HALF) * _GOLDEN
    for q in range(_HALF):  # branch-free (vectorised): counts up to 5
        h = _mix64(base + np.uint64(q) * _GOLDEN)
        a = np.uint32(h >> np.uint64(32))
        c = np.uint32(h & _LOW32)
        buf[q] = np.float64(np.int32(a >= t0) + np.int32(a >= t1) + np.int32(a >= t2)
                            + np.int32(a >= t3) + np.int32(a >= t4))
        buf[_HALF + q] = np.float64(np.int32(c >= t0) + np.int32(c >= t1) + np.int32(c >= t2)
                                    + np.int32(c >= t3) + np.int32(c >= t4))
    for j in range(_TILE):  # the tail (P = 0.0037) by the same inversion
        if buf[j] == 5.0:
            q = j if j < _HALF else j - _HALF
            h = _mix64(base + np.uint64(q) * _GOLDEN)
            u = np.uint32(h >> np.uint64(32)) if j < _HALF else np.uint32(h & _LOW32)
            k = 5
            while k < thr.size and u >= thr[k]:
                k += 1
            buf[j] = np.float64(k)


_STREAM = np.uint64(0xA0761D6478BD642F)  # separates the block streams from the row counters


@njit(**JIT)
def _next_uniform(state):
    """SplitMix64 step: ``(state + golden, mix64(state) / 2**64)`` at 53-bit resolution."""
    return state + _GOLDEN, np.float64(_mix64(state) >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(**JIT)
def _poisson_block(seed, g, mu):
    """A Poisson(``mu``) draw for group ``g`` of the replicate seeded ``seed``.

    Stream: SplitMix64 from ``seed ^ mix64(g + 0xA0761D6478BD642F)``. ``mu < 10``:
    multiplication method; otherwise PTRS, the transformed rejection of Hörmann
    (1993), "The transformed rejection method for generating Poisson random
    variables" (the algorithm and constants NumPy uses).
    """
    if mu <= 0.0:
        return 0.0
    state = seed ^ _mix64(np.uint64(g) + _STREAM)
    if mu < 10.0:
        enlam = math.exp(-mu)
        x = 0
        prod = 1.0
        while True:
            state, u = _next_uniform(state)
            prod *= u
            if prod > enlam:
                x += 1
            else:
                return np.float64(x)
    slam = math.sqrt(mu)
    loglam = math.log(mu)
    b = 0.931 + 2.53 * slam
    a = -0.059 + 0.02483 * b
    invalpha = 1.1239 + 1.1328 / (b - 3.4)
    vr = 0.9277 - 3.6224 / (b - 2.0)
    while True:
        state, u = _next_uniform(state)
        u -= 0.5
        state, v = _next_uniform(state)
        us = 0.5 - abs(u)
        k = math.floor((2.0 * a / us + b) * u + mu + 0.43)
        if us >= 0.07 and v <= vr:
            return np.float64(k)
        if k < 0 or (us < 0.013 and v > us):
            continue
        if (math.log(v) + math.log(invalpha) - math.log(a / (us * us) + b)) <= (
                -mu + k * loglam - math.lgamma(k + 1.0)):
            return np.float64(k)


@njit(**JIT_PARALLEL)
def _poisson_sums(values, offsets, zeros, seeds, thr, block, out):
    n_rep = seeds.size
    n_groups = offsets.size - 1
    n = values.shape[1]
    n_out = values.shape[0]
    n_tiles = (n + _TILE - 1) // _TILE
    n_blocks = (n_rep + block - 1) // block
    for blk in prange(n_blocks):
        b0 = blk * block
        b1 = min(b0 + block, n_rep)
        buf = np.empty(_TILE, np.float64)
        g0 = 0
        for t in range(n_tiles):
            r0 = t * _TILE
            r1 = min(r0 + _TILE, n)
            while offsets[g0 + 1] <= r0:  # first group with rows in this tile
                g0 += 1
            for b in range(b0, b1):
                _tile_weights(seeds[b], t, thr, buf)
                g = g0
                lo = r0
                while lo < r1:
                    while offsets[g + 1] <= lo:  # skip empty groups
                        g += 1
                    hi = min(offsets[g + 1], r1)
                    w = buf[lo - r0:hi - r0]  # slices: plain 0-based loops vectorise
                    s = 0.0
                    for j in range(w.size):
                        s += w[j]
                    out[b, g, 0] += s
                    for k in range(n_out):
                        y = values[k, lo:hi]
                        s = 0.0
                        for j in range(w.size):
                            s += w[j] * y[j]
                        out[b, g, 1 + k] += s
                    lo = hi
        for b in range(b0, b1):  # the collapsed all-zero rows: one Poisson(count) per group
            for g in range(n_groups):
                if zeros[g] > 0:
                    out[b, g, 0] += _poisson_block(seeds[b], g, np.float64(zeros[g]))


def replicate_seeds(seed, replicates):
    """Per-replicate 64-bit seeds from ``numpy.random.SeedSequence(seed)``.

    Parameters
    ----------
    seed : int or sequence of int
        Entropy for the ``SeedSequence`` (e.g. ``(cfg.seed, campaign_index)``).
    replicates : int
        Number of bootstrap replicates.

    Returns
    -------
    ndarray of uint64, shape (replicates,)
    """
    if replicates < 0:
        raise ValueError(f"replicates must be >= 0, got {replicates}")
    return np.random.SeedSequence(seed).generate_state(int(replicates), dtype=np.uint64)


def poisson_bootstrap_sums(values, offsets, seeds, *, zeros=None, block=_BLOCK):
    """Poisson-bootstrap replicate sums of grouped outcomes.

    Parameters
    ----------
    values : array_like of float, shape (k, n)
        ``k`` outcome columns over ``n`` rows, the rows sorted by group.
        Converted to C-contiguous float64. NaN is not allowed (fill missing
        outcomes before calling: a NaN would poison the whole group's sums).
    offsets : array_like of int, shape (g + 1,)
        Group ``j`` is rows ``offsets[j]:offsets[j + 1]``; non-decreasing,
        ``offsets[0] == 0`` and ``offsets[-1] == n``.
    seeds : array_like of uint64, shape (b,)
        One seed per replicate (see :func:`replicate_seeds`).
    zeros : array_like of int, shape (g,), optional
        Rows whose outcomes are all 0, left out of ``values`` and counted here
        per group. Their weights only enter ``[..., 0]``, and a sum of ``m``
        independent Poisson(1) weights is one Poisson(``m``) draw, so the
        result has exactly the distribution of listing them as rows -- at the
        cost of one draw per group instead of ``m`` (most customers do not
        respond to a campaign). Drawn from a stream of the replicate's seed
        separate from the row weights.
    block : int
        Replicates per parallel task (speed only; the result does not depend on it).

    Returns
    -------
    ndarray of float64, shape (b, g, k + 1)
        ``[..., 0]`` is the sum of the Poisson(1) weights of the group's rows,
        ``[..., 1 + j]`` the weighted sum of outcome ``j`` (module docstring).
        Identical at any thread count.
    """
    vals = np.ascontiguousarray(values, dtype=np.float64)
    if vals.ndim == 1:
        vals = vals.reshape(1, -1)
    if vals.ndim != 2:
        raise ValueError(f"values must be 2-D (k, n), got shape {vals.shape}")
    off = np.ascontiguousarray(offsets, dtype=np.int64)
    if off.ndim != 1 or off.size < 1 or off[0] != 0 or off[-1] != vals.shape[1] or np.any(np.diff(off) < 0):
        raise ValueError(f"offsets must be non-decreasing from 0 to n = {vals.shape[1]}, got {off!r}")
    if np.isnan(vals).any():
        raise ValueError("values contain NaN; fill or drop missing outcomes first")
    sd = np.ascontiguousarray(seeds, dtype=np.uint64).reshape(-1)
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    z = np.zeros(off.size - 1, np.int64) if zeros is None else np.ascontiguousarray(zeros, dtype=np.int64)
    if z.shape != (off.size - 1,) or np.any(z < 0):
        raise ValueError(f"zeros must hold {off.size - 1} non-negative counts, got {z!r}")
    out = np.zeros((sd.size, off.size - 1, vals.shape[0] + 1), np.float64)
    if sd.size and (vals.shape[1] or z.any()):
        _poisson_sums(vals, off, z, sd, THRESHOLDS32, int(block), out)
    return out


def poisson_weights(seed, n):
    """The Poisson(1) weights of rows ``0 .. n - 1`` in the replicate seeded ``seed``.

    The same numbers :func:`poisson_bootstrap_sums` uses (for tests and baselines).

    Returns
    -------
    ndarray of float64, shape (n,)
    """
    n = int(n)
    n_tiles = (n + _TILE - 1) // _TILE
    out = np.empty(n_tiles * _TILE, np.float64)
    sd = np.uint64(int(seed) & _U64_MAX)
    for t in range(n_tiles):
        _tile_weights(sd, t, THRESHOLDS32, out[t * _TILE:(t + 1) * _TILE])
    return out[:n]
