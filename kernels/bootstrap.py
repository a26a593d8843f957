"""Poisson bootstrap of grouped sums, parallel over replicates, weights keyed by the row's identity.

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

Random numbers: keyed, so the sums can be split and merged
-----------------------------------------------------------
``seeds[b]`` (drawn outside the kernel from a ``numpy.random.SeedSequence``)
seeds replicate ``b``; ``keys[i]`` is a 64-bit identity of row ``i`` (the
engine passes a seeded hash of (customer id, campaign)). The weight of row
``i`` in replicate ``b`` is ``w = #{k : u >= T_k}`` with ``u`` the high 32 bits
of ``mix64(seeds[b] ^ keys[i])`` (``mix64`` as in ``hashing.py``, the
SplitMix64 output function) and ``T_k = floor(2**32 * P(Poisson(1) <= k))`` --
inversion of the Poisson(1) distribution function at 32-bit resolution (each
probability off by less than 2**-32). A weight depends on (seed, replicate,
key) only, never on the row's position, so the rows may be cut into any
partitions and their sums added: the result is the same whatever the
partitioning. A branch-free count of the first five thresholds keeps the
generator vectorised; the rare tail (w >= 5, probability 0.0037) is finished
in a second pass.

Integer values (``int64``: money in integer units, counts) are summed in
``int64``: exact, so the sums do not depend on the order of addition (and the
wrapper refuses values whose sums could overflow). Float values are summed in
``float64`` in one fixed order per replicate, so results are bit-identical at
any thread count.

Rows whose outcomes are all zero (customers who did not respond: usually
most of them) need not be listed: they only add their weights to
``out[..., 0]``, and a sum of ``m`` independent Poisson(1) weights is a single
Poisson(``m``) draw (:func:`poisson_count_draws`). The engine draws it once per
cell after merging the partitions' counts, so the draw does not depend on the
partitioning either.

Layout: ``prange`` over blocks of replicates (each block writes only its own
rows of ``out``); inside a block, tile by tile, every replicate of the block
generates the tile's weights into a per-block buffer and adds one dot product
per (group, outcome) while the tile's values are still in cache.

Cost: ``n * b`` weights for the ``n`` listed rows, plus ``g * b`` block draws;
see ``benchmarks/bench_uplift.py``.
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
#: the largest weight the inversion can give
MAX_WEIGHT = int(THRESHOLDS32.size)
_TILE = 2048  # rows whose weights are generated together (per replicate, in a per-block buffer)
_BLOCK = 16
_SHIFT32 = np.uint64(32)


@njit(**JIT)
def _tile_weights(seed, keys, r0, r1, thr, buf):
    """Poisson(1) weights of rows ``r0 .. r1 - 1`` for the replicate seeded ``seed``, into
    ``buf[0 : r1 - r0]``: the high 32 bits of ``mix64(seed ^ keys[i])`` inverted against ``thr``."""
    t0 = thr[0]
    t1 = thr[1]
    t2 = thr[2]
    t3 = thr[3]
    t4 = thr[4]
    m = r1 - r0
    for j in range(m):  # branch-free (vectorised): counts up to 5
        a = np.uint32(_mix64(seed ^ keys[r0 + j]) >> _SHIFT32)
        buf[j] = (np.int32(a >= t0) + np.int32(a >= t1) + np.int32(a >= t2)
                  + np.int32(a >= t3) + np.int32(a >= t4))
    for j in range(m):  # the tail (P = 0.0037) by the same inversion
        if buf[j] == 5:
            a = np.uint32(_mix64(seed ^ keys[r0 + j]) >> _SHIFT32)
            k = 5
            while k < thr.size and a >= thr[k]:
                k += 1
            buf[j] = k


_STREAM = np.uint64(0xA0761D6478BD642F)  # separates the block streams from the row weights


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
def _poisson_sums(values, keys, offsets, seeds, thr, block, out):
    n_rep = seeds.size
    n = values.shape[1]
    n_out = values.shape[0]
    n_tiles = (n + _TILE - 1) // _TILE
    n_blocks = (n_rep + block - 1) // block
    for blk in prange(n_blocks):
        b0 = blk * block
        b1 = min(b0 + block, n_rep)
        buf = np.empty(_TILE, out.dtype)  # int64 weights for integer values: exact sums
        g0 = 0
        for t in range(n_tiles):
            r0 = t * _TILE
            r1 = min(r0 + _TILE, n)
            while offsets[g0 + 1] <= r0:  # first group with rows in this tile
                g0 += 1
            for b in range(b0, b1):
                _tile_weights(seeds[b], keys, r0, r1, thr, buf)
                g = g0
                lo = r0
                while lo < r1:
                    while offsets[g + 1] <= lo:  # skip empty groups
                        g += 1
                    hi = min(offsets[g + 1], r1)
                    w = buf[lo - r0:hi - r0]  # slices: plain 0-based loops vectorise
                    s = w[0] * 0
                    for j in range(w.size):
                        s += w[j]
                    out[b, g, 0] += s
                    for k in range(n_out):
                        y = values[k, lo:hi]
                        s = w[0] * 0
                        for j in range(w.size):
                            s += w[j] * y[j]
                        out[b, g, 1 + k] += s
                    lo = hi


@njit(**JIT_PARALLEL)
def _block_draws(seeds, counts, stream, out):
    for b in prange(seeds.size):
        sd = seeds[b] ^ stream
        for g in range(counts.size):
            if counts[g] > 0:
                out[b, g] = _poisson_block(sd, g, np.float64(counts[g]))


def replicate_seeds(seed, replicates):
    """Per-replicate 64-bit seeds from ``numpy.random.SeedSequence(seed)``.

    Parameters
    ----------
    seed : int or sequence of int
        Entropy for the ``SeedSequence`` (e.g. ``cfg.seed``).
    replicates : int
        Number of bootstrap replicates.

    Returns
    -------
    ndarray of uint64, shape (replicates,)
    """
    if replicates < 0:
        raise ValueError(f"replicates must be >= 0, got {replicates}")
    return np.random.SeedSequence(seed).generate_state(int(replicates), dtype=np.uint64)


def _u64(x):
    return np.uint64(int(x) & _U64_MAX)


def poisson_count_draws(seeds, counts, stream=0):
    """One Poisson(``counts[g]``) draw per replicate and group: the summed weights of
    ``counts[g]`` rows that are not listed (all their outcomes are 0).

    Parameters
    ----------
    seeds : array_like of uint64, shape (b,)
        The replicate seeds (:func:`replicate_seeds`).
    counts : array_like of int, shape (g,)
        Non-negative row counts per group.
    stream : int
        Any 64-bit value that separates independent sets of groups (e.g. a hash of the
        campaign and breakdown): replicate ``b`` draws from ``seeds[b] ^ stream``.

    Returns
    -------
    ndarray of int64, shape (b, g)
        Group ``g``'s draw depends only on (seed, stream, g, count).
    """
    sd = np.ascontiguousarray(seeds, dtype=np.uint64).reshape(-1)
    c = np.ascontiguousarray(counts, dtype=np.int64).reshape(-1)
    if np.any(c < 0):
        raise ValueError(f"counts must be non-negative, got {c!r}")
    out = np.zeros((sd.size, c.size), np.int64)
    if sd.size and c.any():
        _block_draws(sd, c, _u64(stream), out)
    return out


def poisson_bootstrap_sums(values, offsets, seeds, keys, *, zeros=None, stream=0, block=_BLOCK):
    """Poisson-bootstrap replicate sums of grouped outcomes, weights keyed by ``keys``.

    Parameters
    ----------
    values : array_like, shape (k, n)
        ``k`` outcome columns over ``n`` rows, the rows sorted by group. Integer
        values (money in integer units, counts) are summed exactly in ``int64``;
        anything else is converted to float64. NaN is not allowed (fill missing
        outcomes before calling: a NaN would poison the whole group's sums).
    offsets : array_like of int, shape (g + 1,)
        Group ``j`` is rows ``offsets[j]:offsets[j + 1]``; non-decreasing,
        ``offsets[0] == 0`` and ``offsets[-1] == n``.
    seeds : array_like of uint64, shape (b,)
        One seed per replicate (see :func:`replicate_seeds`).
    keys : array_like of uint64, shape (n,)
        The identity of each row (e.g. a seeded hash of customer and campaign):
        a row's weight in replicate ``b`` depends on ``seeds[b]`` and its key only.
    zeros : array_like of int, shape (g,), optional
        Rows whose outcomes are all 0, left out of ``values`` and counted here per
        group; adds :func:`poisson_count_draws` ``(seeds, zeros, stream)`` to ``[..., 0]``.
    stream : int
        The stream of the ``zeros`` draws (see :func:`poisson_count_draws`).
    block : int
        Replicates per parallel task (speed only; the result does not depend on it).

    Returns
    -------
    ndarray, shape (b, g, k + 1)
        ``int64`` for integer values, else ``float64``. ``[..., 0]`` is the sum of the
        Poisson(1) weights of the group's rows, ``[..., 1 + j]`` the weighted sum of
        outcome ``j`` (module docstring). Identical at any thread count, and for any
        split of the rows into parts whose sums are added (integer values exactly).
    """
    raw = np.asarray(values)
    exact = raw.dtype.kind in "iub"
    vals = np.ascontiguousarray(raw, dtype=np.int64 if exact else np.float64)
    if vals.ndim == 1:
        vals = vals.reshape(1, -1)
    if vals.ndim != 2:
        raise ValueError(f"values must be 2-D (k, n), got shape {vals.shape}")
    n = vals.shape[1]
    off = np.ascontiguousarray(offsets, dtype=np.int64)
    if off.ndim != 1 or off.size < 1 or off[0] != 0 or off[-1] != n or np.any(np.diff(off) < 0):
        raise ValueError(f"offsets must be non-decreasing from 0 to n = {n}, got {off!r}")
    if not exact and np.isnan(vals).any():
        raise ValueError("values contain NaN; fill or drop missing outcomes first")
    if exact and n and float(np.abs(vals.astype(np.float64)).sum(axis=1).max()) * MAX_WEIGHT >= 2.0**62:
        raise ValueError("integer values too large for exact int64 replicate sums; pass them as float64")
    k = np.ascontiguousarray(keys, dtype=np.uint64).reshape(-1)
    if k.size != n:
        raise ValueError(f"keys must hold one key per row ({n}), got {k.size}")
    sd = np.ascontiguousarray(seeds, dtype=np.uint64).reshape(-1)
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    out = np.zeros((sd.size, off.size - 1, vals.shape[0] + 1), np.int64 if exact else np.float64)
    if sd.size and n:
        _poisson_sums(vals, k, off, sd, THRESHOLDS32, int(block), out)
    if zeros is not None:
        z = np.ascontiguousarray(zeros, dtype=np.int64)
        if z.shape != (off.size - 1,) or np.any(z < 0):
            raise ValueError(f"zeros must hold {off.size - 1} non-negative counts, got {z!r}")
        out[..., 0] += poisson_count_draws(sd, z, stream)
    return out


def poisson_weights(seed, keys):
    """The Poisson(1) weights of rows keyed ``keys`` in the replicate seeded ``seed``.

    The same numbers :func:`poisson_bootstrap_sums` uses (for tests and baselines).

    Returns
    -------
    ndarray of int64, shape (len(keys),)
    """
    k = np.ascontiguousarray(keys, dtype=np.uint64).reshape(-1)
    out = np.empty(k.size, np.int64)
    sd = _u64(seed)
    for r0 in range(0, k.size, _TILE):
        r1 = min(r0 + _TILE, k.size)
        _tile_weights(sd, k, r0, r1, THRESHOLDS32, out[r0:r1])
    return out
