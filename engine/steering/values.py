"""Contact values v[i, m, t], dense or computed per block of customers.

The solver reads the values one block of customers at a time (``block``), plus a few
elements (``at``) and the rows of a few customers (``rows``). ``Dense`` wraps an
(n, M, T) array (user proposals); ``Factored`` keeps v = scale[i, m] x season[t] -
cost[m] as its factors -- (n, M) instead of (n, M, T), 13 times less at 13 periods
-- and builds each block when asked, with the same floating-point operations as
the dense array, so both give identical bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: customers per block (5 media x 13 periods x 8 bytes x 65,536 = 34 MB)
BLOCK = 1 << 16


@dataclass(frozen=True)
class Dense:
    """Values held as one (n, M, T) array; NaN or <= 0: not eligible."""

    values: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.values.shape

    def block(self, a: int, b: int) -> np.ndarray:
        return self.values[a:b]

    def rows(self, idx: np.ndarray) -> np.ndarray:
        return self.values[idx]

    def at(self, ii: np.ndarray, mm: np.ndarray, tt: np.ndarray) -> np.ndarray:
        return self.values[ii, mm, tt]


@dataclass(frozen=True)
class Factored:
    """v[i, m, t] = scale[i, m] * season[t] - cost[m]; a NaN scale marks a contact that is
    not eligible."""

    scale: np.ndarray
    season: np.ndarray
    cost: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.scale.shape[0], self.scale.shape[1], self.season.size

    def block(self, a: int, b: int) -> np.ndarray:
        return self.scale[a:b, :, None] * self.season[None, None, :] - self.cost[None, :, None]

    def rows(self, idx: np.ndarray) -> np.ndarray:
        return self.scale[idx, :, None] * self.season[None, None, :] - self.cost[None, :, None]

    def at(self, ii: np.ndarray, mm: np.ndarray, tt: np.ndarray) -> np.ndarray:
        return self.scale[ii, mm] * self.season[tt] - self.cost[mm]


Values = Dense | Factored


def as_values(values: np.ndarray | Values) -> Values:
    """Wrap a plain array as :class:`Dense` (float64, C order)."""
    if isinstance(values, Dense | Factored):
        return values
    return Dense(np.ascontiguousarray(values, dtype=np.float64))


def blocks(n: int, size: int | None = None):
    """(start, stop) of every block of ``size`` (default ``BLOCK``) customers."""
    size = size or BLOCK
    for a in range(0, n, size):
        yield a, min(n, a + size)


def max_positive(vals: Values) -> np.ndarray:
    """(M, T): the largest positive value of each (medium, period), 0 when none."""
    n, M, T = vals.shape
    out = np.zeros((M, T))
    for a, b in blocks(n):
        v = vals.block(a, b)
        np.maximum(out, np.where(v > 0, v, 0.0).max(axis=0), out=out)  # NaN > 0 is False
    return out
