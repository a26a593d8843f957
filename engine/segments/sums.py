"""Exact sums of floats per group, as mergeable state: the segment profiles' sums, means and
standard deviations are the same bytes for any partitioning of the customers.

A float sum depends on the order of its additions, so partial sums of partitions, added up,
do not give the bits of one pass over every customer. Here every float64 is split exactly into
an integer mantissa and a power of two (``numpy.frexp``); each group's mantissa halves are
summed per exponent with ``numpy.bincount`` (exact: each half is below 2**27 in magnitude, so a
sum over fewer than 2**26 values stays below 2**53), and the bins are folded into one Python
integer in units of ``2**-SHIFT``. Squares are summed exactly too: ``x * x = p + e`` with both
``p`` and ``e`` floats (Dekker's product, Veltkamp's split), so the variance is computed from
exact sums and rounded once. Merging adds the integers; the floats are derived at the end,
each rounded once (``fractions.Fraction`` to ``float`` is correctly rounded).

NaN and infinities are counted apart and propagate as in Polars: a NaN (or both infinities)
makes the group's sum, mean and standard deviation NaN; nulls are skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

#: every finite float64 is an integer multiple of 2**-SHIFT (the smallest subnormal is 2**-1074;
#: a mantissa of 53 bits puts the exponent of its last bit at -1126 at most)
SHIFT = 1126
_EXPONENTS = 2200  # frexp exponents -1073 .. 1024 shifted by SHIFT - 53 lie in [0, 2200)
_CHUNK = 1 << 25  # rows per bincount: sums of 27-bit halves stay exact in float64 below 2**53
_SPLIT = 134217729.0  # 2**27 + 1, Veltkamp's split of a float64 into two 26-bit halves
_SAFE = 2.0 ** 500  # below this a square's split cannot overflow
_TINY = 2.0 ** -400  # above this (or zero) a square's error term cannot underflow


def _pack(v: int) -> tuple[int, int]:
    zeros = (v & -v).bit_length() - 1 if v else 0
    return v >> zeros, zeros


def _unpack(packed: tuple[int, int]) -> int:
    return packed[0] << packed[1]


@dataclass
class Moments:
    """Mergeable state of one group's values: the non-null count, exact sums of the values and
    (if kept) of their squares in units of ``2**-SHIFT``, and counts of NaN, +inf and -inf."""

    count: int = 0
    total: int = 0
    squares: int | None = None
    nan: int = 0
    pinf: int = 0
    ninf: int = 0

    def __getstate__(self) -> tuple:
        # the sums are sent without their trailing zero bits (the unit 2**-SHIFT makes them long)
        return (self.count, _pack(self.total), None if self.squares is None else _pack(self.squares),
                self.nan, self.pinf, self.ninf)

    def __setstate__(self, state: tuple) -> None:
        count, total, squares, self.nan, self.pinf, self.ninf = state
        self.count, self.total = count, _unpack(total)
        self.squares = None if squares is None else _unpack(squares)

    def add(self, other: Moments) -> Moments:
        """This state with ``other`` merged in (exact: integer additions)."""
        self.count += other.count
        self.total += other.total
        if self.squares is not None and other.squares is not None:
            self.squares += other.squares
        else:
            self.squares = None
        self.nan += other.nan
        self.pinf += other.pinf
        self.ninf += other.ninf
        return self

    def _special(self) -> float | None:
        if self.nan or (self.pinf and self.ninf):
            return math.nan
        if self.pinf:
            return math.inf
        if self.ninf:
            return -math.inf
        return None

    def sum(self) -> float:
        """The sum, rounded once (0.0 without values, as Polars' ``sum``)."""
        special = self._special()
        return special if special is not None else float(Fraction(self.total, 1 << SHIFT))

    def mean(self) -> float | None:
        """The mean, rounded once (None without values)."""
        if self.count == 0:
            return None
        special = self._special()
        return special if special is not None else float(Fraction(self.total, self.count << SHIFT))

    def std(self, ddof: int = 1) -> float | None:
        """The standard deviation (``ddof`` 1: the sample's, None below two values; 0: the
        population's, None without values): the variance from the exact sums, rounded once, then
        its square root."""
        if self.squares is None:
            raise ValueError("these moments were collected without squares")
        if self.count < 1 + ddof or self.count == 0:
            return None
        if self._special() is not None:
            return math.nan
        n = self.count
        # sum (x - mean)^2 = Q - S^2 / n, in units of 2**-SHIFT for Q and S
        var = Fraction(self.squares * n * (1 << SHIFT) - self.total * self.total, n * (n - ddof) << (2 * SHIFT))
        return math.sqrt(max(float(var), 0.0))


@dataclass
class GroupMoments:
    """:class:`Moments` per group label (a mergeable state)."""

    groups: dict[object, Moments] = field(default_factory=dict)

    def add(self, other: GroupMoments) -> GroupMoments:
        for key, m in other.groups.items():
            mine = self.groups.get(key)
            self.groups[key] = m if mine is None else mine.add(m)
        return self

    def get(self, key: object, squares: bool = False) -> Moments:
        return self.groups.get(key) or Moments(squares=0 if squares else None)


def _two_square(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``x * x == p + e`` exactly, ``p`` the rounded square (Dekker, Veltkamp; every numpy
    operation is one IEEE rounding)."""
    ax = np.abs(x)
    if x.size and (float(ax.max()) >= _SAFE or bool(np.any((ax > 0) & (ax < _TINY)))):
        raise ValueError("a value out of the range of exact squares (2**-400 <= |x| < 2**500, or 0)")
    c = _SPLIT * x
    xh = c - (c - x)
    xl = x - xh
    p = x * x
    e = ((xh * xh - p) + 2.0 * xh * xl) + xl * xl
    return p, e


@dataclass(frozen=True)
class Split:
    """A column's values split once for exact sums (:func:`split_values`), so that several
    groupings of the same rows (the segmentations) reuse it: the rows taken (``rows``: valid and
    finite), each part's exponent bin and mantissa halves (the values; with ``squares`` also the
    two parts of each exact square), and the rows with NaN, +inf and -inf."""

    n: int
    valid: np.ndarray | None
    rows: np.ndarray | None
    parts: tuple[tuple[np.ndarray, np.ndarray, np.ndarray], ...]
    square_parts: tuple[tuple[np.ndarray, np.ndarray, np.ndarray], ...] | None
    nan: np.ndarray
    pinf: np.ndarray
    ninf: np.ndarray


def _halves(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each finite float64 as ``(hi * 2**26 + lo) * 2**(e - SHIFT)``: its exponent bin ``e`` and its
    integer mantissa's halves as float64 (exact: below 2**27 in magnitude)."""
    mant, exp = np.frexp(x)
    m = np.ldexp(mant, 53).astype(np.int64)  # exact: |m| < 2**53
    hi = m >> 26  # m = hi * 2**26 + lo, 0 <= lo < 2**26
    lo = m - (hi << 26)
    return exp.astype(np.int64) + (SHIFT - 53), hi.astype(np.float64), lo.astype(np.float64)


def split_values(x: np.ndarray, valid: np.ndarray | None = None, *, squares: bool = False) -> Split:
    """Split the values ``x`` (float64; ``valid``: the rows that count, default all) for
    :func:`grouped`."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    v = x if valid is None else x[valid]
    finite = np.isfinite(v)
    rows = None if finite.all() else np.flatnonzero(finite)
    vf = v if rows is None else v[rows]
    if valid is not None:
        vrows = np.flatnonzero(valid)
        rows = vrows if rows is None else vrows[rows]
    sq = None
    if squares:
        sq = tuple(_halves(t) for t in _two_square(vf))
    return Split(x.size, valid, rows, (_halves(vf),), sq, np.isnan(v), v == np.inf, v == -np.inf)


def _fold(codes: np.ndarray, k: int, parts: tuple[tuple[np.ndarray, np.ndarray, np.ndarray], ...]) -> list[int]:
    """Exact sums per group code ``0 .. k-1`` of the split parts, in units of 2**-SHIFT."""
    out = [0] * k
    size = k * _EXPONENTS
    for e, hi, lo in parts:
        key = codes * _EXPONENTS + e
        for a in range(0, e.size, _CHUNK):  # each chunk's bins are whole numbers below 2**53
            b = a + _CHUNK
            shi = np.bincount(key[a:b], weights=hi[a:b], minlength=size)
            slo = np.bincount(key[a:b], weights=lo[a:b], minlength=size)
            used = np.flatnonzero((shi != 0) | (slo != 0))
            for idx, h, low in zip(used.tolist(), shi[used].astype(np.int64).tolist(),
                                   slo[used].astype(np.int64).tolist(), strict=True):
                g, ex = divmod(idx, _EXPONENTS)
                out[g] += ((h << 26) + low) << ex
    return out


def grouped(codes: np.ndarray, labels: list[object], split: Split) -> GroupMoments:
    """The moments of a split column per group: ``codes`` (one per row of the column, ``0 ..
    len(labels) - 1``) name each row's group."""
    codes = np.ascontiguousarray(codes, dtype=np.int64)
    if codes.size != split.n:
        raise ValueError(f"{codes.size} group codes for {split.n} values")
    k = len(labels)
    cv = codes if split.valid is None else codes[split.valid]
    count = np.bincount(cv, minlength=k)
    special = [np.bincount(cv[m], minlength=k) if m.any() else np.zeros(k, np.int64)
               for m in (split.nan, split.pinf, split.ninf)]
    cf = codes if split.rows is None else codes[split.rows]
    totals = _fold(cf, k, split.parts)
    sq = None if split.square_parts is None else _fold(cf, k, split.square_parts)
    out = GroupMoments()
    for g, lab in enumerate(labels):
        if count[g]:
            out.groups[lab] = Moments(int(count[g]), totals[g], None if sq is None else sq[g],
                                      int(special[0][g]), int(special[1][g]), int(special[2][g]))
    return out


def group_moments(codes: np.ndarray, labels: list[object], x: np.ndarray, *, squares: bool = False
                  ) -> GroupMoments:
    """The moments of ``x`` per group (one grouping; :func:`split_values` and :func:`grouped` for
    several groupings of the same values).

    Parameters
    ----------
    codes : ndarray of int
        The group of each value, ``0 .. len(labels) - 1``.
    labels : list
        The group labels (the keys of the result).
    x : ndarray of float64
        The values, nulls already removed (with their codes).
    squares : bool
        Also keep the exact sum of squares (for a standard deviation).
    """
    return grouped(codes, labels, split_values(x, squares=squares))
