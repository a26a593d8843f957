"""The Poisson bootstrap with NumPy array operations: the same keyed weights as
:mod:`centile.kernels.bootstrap`, one replicate at a time.

The reference of the bootstrap kernel's tests and the baseline of
``benchmarks/bench_uplift.py``; it is not part of the library.
"""

from __future__ import annotations

import numpy as np

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN_NP = np.uint64(0x9E3779B97F4A7C15)


def _mix64_np(z: np.ndarray) -> np.ndarray:
    z = z + _GOLDEN_NP
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def poisson_weights_numpy(seed: int, keys: np.ndarray) -> np.ndarray:
    """The kernel's Poisson(1) weights of rows keyed ``keys`` computed with NumPy array operations:
    the high 32 bits of ``mix64(seed ^ key)`` inverted against the Poisson(1) distribution function."""
    from centile.kernels.bootstrap import THRESHOLDS32

    k = np.asarray(keys, dtype=np.uint64)
    with np.errstate(over="ignore"):
        h = _mix64_np(np.uint64(int(seed) & 0xFFFFFFFFFFFFFFFF) ^ k)
    u = (h >> np.uint64(32)).astype(np.uint32)
    return np.searchsorted(THRESHOLDS32, u, side="right").astype(np.int64)


def _u64(x: int) -> np.uint64:
    return np.uint64(x & 0xFFFFFFFFFFFFFFFF)


def poisson_block_py(seed: int, g: int, mu: float) -> float:
    """Plain-Python port of the kernel's per-group Poisson(``mu``) draw (same stream, same numbers)."""
    import math

    from centile.kernels.bootstrap import _STREAM

    if mu <= 0:
        return 0.0
    with np.errstate(over="ignore"):
        state = int(_u64(seed) ^ _mix64_np(np.array([g], np.uint64) + _STREAM)[0])

    def uniform() -> float:
        nonlocal state
        with np.errstate(over="ignore"):
            h = int(_mix64_np(np.array([state], np.uint64))[0])
        state = (state + int(_GOLDEN_NP)) & 0xFFFFFFFFFFFFFFFF
        return float(h >> 11) * (1.0 / 9007199254740992.0)

    if mu < 10:
        enlam, x, prod = math.exp(-mu), 0, 1.0
        while True:
            prod *= uniform()
            if prod > enlam:
                x += 1
            else:
                return float(x)
    slam, loglam = math.sqrt(mu), math.log(mu)
    b = 0.931 + 2.53 * slam
    a = -0.059 + 0.02483 * b
    invalpha = 1.1239 + 1.1328 / (b - 3.4)
    vr = 0.9277 - 3.6224 / (b - 2.0)
    while True:
        u = uniform() - 0.5
        v = uniform()
        us = 0.5 - abs(u)
        k = math.floor((2.0 * a / us + b) * u + mu + 0.43)
        if us >= 0.07 and v <= vr:
            return float(k)
        if k < 0 or (us < 0.013 and v > us):
            continue
        if math.log(v) + math.log(invalpha) - math.log(a / (us * us) + b) <= -mu + k * loglam - math.lgamma(k + 1.0):
            return float(k)


def poisson_bootstrap_sums_numpy(values: np.ndarray, offsets: np.ndarray, seeds: np.ndarray, keys: np.ndarray,
                                 zeros: np.ndarray | None = None, stream: int = 0) -> np.ndarray:
    """NumPy implementation of :func:`centile.kernels.bootstrap.poisson_bootstrap_sums`.

    The same estimator and the same keyed weights (so the same result up to summation
    order, exactly for integer values), one replicate at a time with whole-array
    operations: the baseline of ``benchmarks/bench_uplift.py``.
    """
    vals = np.atleast_2d(np.asarray(values, dtype=np.float64))
    off = np.asarray(offsets, dtype=np.int64)
    seeds = np.asarray(seeds, dtype=np.uint64)
    k, n = vals.shape
    g = off.size - 1
    out = np.zeros((seeds.size, g, k + 1))
    codes = np.repeat(np.arange(g), np.diff(off))
    for b, sd in enumerate(seeds):
        w = poisson_weights_numpy(int(sd), keys).astype(np.float64)
        out[b, :, 0] = np.bincount(codes, weights=w, minlength=g)
        for j in range(k):
            out[b, :, 1 + j] = np.bincount(codes, weights=w * vals[j], minlength=g)
        if zeros is not None:
            out[b, :, 0] += [poisson_block_py(int(sd) ^ (stream & 0xFFFFFFFFFFFFFFFF), j, float(m))
                             for j, m in enumerate(zeros)]
    return out
