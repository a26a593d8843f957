"""Deterministic, seeded 64-bit hashes of customer ids.

The hashes break ties reproducibly (club membership, control-group draws)
without favouring low ids, and are identical on every platform, for every
input order and at any thread count: each value depends only on its own id
and the seed, computed in wrapping unsigned 64-bit arithmetic.

Algorithms
----------
``mix64(x)`` is the SplitMix64 output function (Steele, Lea & Flood, "Fast
splittable pseudorandom number generators", OOPSLA 2014; the constants are
Vigna's): ``z = x + 0x9E3779B97F4A7C15``;
``z = (z ^ z >> 30) * 0xBF58476D1CE4E5B9``;
``z = (z ^ z >> 27) * 0x94D049BB133111EB``; ``z ^ z >> 31`` -- so
``mix64(s)`` is the first output of a SplitMix64 generator seeded with ``s``.
It is a bijection of the 64-bit integers.

* ``seed_key = mix64(seed mod 2**64)``.
* Integer ids: ``hash = mix64(uint64(id) ^ seed_key)`` (two's complement for
  negative ids). A bijection for a fixed seed: distinct ids never collide.
* String ids (UTF-8 bytes): 64-bit FNV-1a (Fowler/Noll/Vo) over the bytes,
  starting from the FNV offset basis ``0xCBF29CE484222325 ^ seed_key``
  (``h ^= byte; h *= 0x100000001B3``), then ``hash = mix64(h ^ length)``, so
  the low bits are well mixed.
"""

import numpy as np
from numba import njit, prange

from ._flags import JIT, JIT_PARALLEL

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_FNV_BASIS = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_U64 = (1 << 64) - 1


@njit(**JIT)
def _mix64(x):
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


@njit(**JIT_PARALLEL)
def _hash_u64(ids, seed, out):
    key = _mix64(seed)
    for i in prange(ids.size):
        out[i] = _mix64(ids[i] ^ key)


@njit(**JIT_PARALLEL)
def _hash_bytes(offsets, data, seed, out):
    key = _mix64(seed)
    basis = _FNV_BASIS ^ key
    for i in prange(out.size):
        h = basis
        a = offsets[i]
        b = offsets[i + 1]
        for t in range(a, b):
            h = (h ^ np.uint64(data[t])) * _FNV_PRIME
        out[i] = _mix64(h ^ np.uint64(b - a))


def _seed(seed):
    return np.uint64(int(seed) & _U64)


def hash_int64(ids, seed=0):
    """Seeded 64-bit hash of integer customer ids.

    Parameters
    ----------
    ids : array_like of int, shape (n,)
        Customer ids; converted to int64 (then reinterpreted as uint64).
    seed : int, default 0
        Any Python int; taken modulo 2**64.

    Returns
    -------
    ndarray of uint64, shape (n,)
        ``mix64(uint64(id) ^ mix64(seed))`` (see module docstring); distinct
        ids give distinct hashes for a given seed.
    """
    a = np.ascontiguousarray(ids, dtype=np.int64)
    if a.ndim != 1:
        raise ValueError(f"ids must be 1-D, got shape {a.shape}")
    out = np.empty(a.size, np.uint64)
    _hash_u64(a.view(np.uint64), _seed(seed), out)
    return out


def hash_strings(offsets, data, seed=0):
    """Seeded 64-bit hash of string customer ids in an Arrow-style buffer.

    Parameters
    ----------
    offsets : array_like of int, shape (n + 1,)
        Start offsets into ``data``; string ``i`` is
        ``data[offsets[i]:offsets[i + 1]]`` (Arrow ``string`` int32 or
        ``large_string`` int64 offsets; converted to int64). Must be
        non-decreasing and within ``data``.
    data : array_like of uint8
        The concatenated UTF-8 bytes.
    seed : int, default 0
        Any Python int; taken modulo 2**64.

    Returns
    -------
    ndarray of uint64, shape (n,)
        Seeded FNV-1a of the bytes, finished with SplitMix64 (module docstring).
    """
    off = np.ascontiguousarray(offsets, dtype=np.int64)
    buf = np.ascontiguousarray(data)
    if buf.dtype != np.uint8:
        buf = buf.view(np.uint8) if buf.dtype.itemsize == 1 else buf.astype(np.uint8)
    buf = buf.reshape(-1)
    if off.ndim != 1 or off.size < 1:
        raise ValueError(f"offsets must be 1-D with n + 1 >= 1 entries, got shape {off.shape}")
    if off.size > 1:
        if off[0] < 0 or off[-1] > buf.size or np.any(np.diff(off) < 0):
            raise ValueError(
                f"offsets must be non-decreasing within [0, {buf.size}] (len(data)); "
                f"got first {int(off[0])}, last {int(off[-1])}"
            )
    out = np.empty(off.size - 1, np.uint64)
    _hash_bytes(off, buf, _seed(seed), out)
    return out
