"""Tie-aware quantile bins (RFM scores) over the percentile rank kernel.

The rule, for ``b`` bins over the ``m`` non-NaN values of an array:

    bin(v) = 1 + floor(b * below(v) / m),   below(v) = #{x : x < v}

so the lowest values get bin 1 and the highest bin ``b``. Tied values have
the same ``below`` and therefore always share a bin (a tie is never split);
a tie group lands in the bin where its *first* member would fall in a
plain ``ntile`` over the sorted values. For distinct values and ``m``
divisible by ``b`` this is exactly SQL ``ntile(b) OVER (ORDER BY v)``; in
general it equals ``1 + floor(b * (rank() OVER (ORDER BY v) - 1) / m)``.
Heavy ties can leave a bin empty (e.g. when half the customers have the
same value, the bins between 1 and the next value's bin stay empty).

``below`` comes from :func:`centile.kernels.percentile.rank_pct` run on the
negated values (its descending competition rank is ``1 + #{strictly
greater}``), i.e. one radix sort; the binning itself is one compiled pass.
"""

import numpy as np
from numba import njit

from ._flags import JIT
from .percentile import rank_pct


@njit(**JIT)
def _bins_from_rank(rank, m, bins, out):
    """``out[i] = 1 + (bins * (rank[i] - 1)) // m`` for ranked rows, 0 for the others."""
    for i in range(rank.size):
        r = rank[i]
        if r == 0:
            out[i] = 0
        else:
            out[i] = 1 + (bins * (r - 1)) // m


def tie_quantile_bins(values, bins=5, eligible=None):
    """Quantile bin ``1 .. bins`` of every value, ties never split across bins.

    Parameters
    ----------
    values : array_like of float, shape (n,)
        Larger values get higher bins. NaN means "no score".
    bins : int
        Number of bins, 2 .. 100.
    eligible : array_like of bool, shape (n,), optional
        Rows that form the universe of the quantiles (default: all non-NaN).

    Returns
    -------
    ndarray of int8, shape (n,)
        ``1 + floor(bins * #{eligible x < v} / m)`` with ``m`` the number of
        eligible non-NaN values; 0 for NaN or ineligible rows.

    Notes
    -----
    O(n) memory and one radix sort (see :mod:`centile.kernels.percentile`).
    ``-0.0`` ties with ``0.0``.
    """
    bins = int(bins)
    if not 2 <= bins <= 100:
        raise ValueError(f"bins must be in 2 .. 100, got {bins}")
    v = np.ascontiguousarray(values, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {v.shape}")
    # rank of -v, descending: 1 + #{-x > -v} = 1 + #{x < v}
    rank, _pct = rank_pct(-v, eligible)
    m = int(np.count_nonzero(rank))
    out = np.zeros(v.size, np.int8)
    if m:
        _bins_from_rank(rank, np.int64(m), np.int64(bins), out)
    return out
