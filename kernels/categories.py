"""The category columns of the feature table from one row per (customer, category).

Each row carries the customer's row in the feature table (``pos``), the category's rank
by name (``code``), its net revenue exactly (the 128-bit unscaled integer of a DECIMAL,
as a signed high word and the low word's bits) and as a double. Per customer:

* the top category: the category with the most net revenue among the positive ones,
  compared exactly; equal revenue goes to the lower code (the first name);
* for each of the ``top`` categories, the double of its net revenue (0 without a row).

One pass over the rows, no sort: the result does not depend on the rows' order,
because a customer holds at most one row per category (the caller's precondition).
"""

import numpy as np
from numba import njit

from ._flags import JIT_EXACT
from .category_sort import checked


@njit(**JIT_EXACT)
def _greater(hi_a, lo_a, hi_b, lo_b):
    """Is the 128-bit integer (hi_a, lo_a) greater than (hi_b, lo_b)? (high words signed, low unsigned)"""
    if hi_a != hi_b:
        return hi_a > hi_b
    return np.uint64(lo_a) > np.uint64(lo_b)


@njit(**JIT_EXACT)
def _pivot(pos, code, hi, lo, value, column, best, best_hi, best_lo, values):
    for i in range(pos.size):
        p = pos[i]
        c = code[i]
        j = column[c]
        if j >= 0:
            values[j, p] = value[i]
        h = hi[i]
        low = lo[i]
        if h < 0 or (h == 0 and low == 0):  # not positive
            continue
        b = best[p]
        if (b < 0 or _greater(h, low, best_hi[p], best_lo[p])
                or (h == best_hi[p] and low == best_lo[p] and c < b)):
            best[p] = c
            best_hi[p] = h
            best_lo[p] = low


def category_pivot(pos, code, hi, lo, value, customers, categories, top):
    """Each customer's top category and the net revenue of the ``top`` categories.

    Parameters
    ----------
    pos : (n,) int64
        The row's customer: its row in the feature table, ``0 <= pos < customers``.
    code : (n,) int32
        The row's category: its rank by name, ``0 <= code < categories``.
    hi, lo : (n,) int64
        The exact net revenue: the high word (signed) and the low word (its bits) of the
        unscaled 128-bit integer of a DECIMAL of one scale for all rows.
    value : (n,) float64
        The same net revenue as a double (how the caller's SQL casts it).
    customers : int
        Rows of the feature table.
    categories : int
        Number of category codes.
    top : (k,) int64
        Codes of the top categories, in the order of their columns; ``-1`` for a top category
        no row has.

    Returns
    -------
    best : (customers,) int32
        Code of the category with the most net revenue among the customer's positive ones
        (equal revenue: the lower code), ``-1`` when none is positive.
    values : (k, customers) float64
        ``values[j, p]``: the double net revenue of top category ``j`` for customer ``p``, 0 when
        the customer has no row of it.

    Notes
    -----
    Each (customer, category) must occur at most once (the rows of a GROUP BY customer, category).
    """
    pos, code, hi, lo, value, top = checked(pos, code, hi, lo, value, customers, categories, top)
    n = pos.size
    column = np.full(max(int(categories), 1), -1, np.int64)
    for j in range(top.size - 1, -1, -1):  # a code given twice: its first column
        if top[j] >= 0:
            column[top[j]] = j
    best = np.full(customers, -1, np.int32)
    best_hi = np.zeros(customers, np.int64)
    best_lo = np.zeros(customers, np.int64)
    values = np.zeros((top.size, customers), np.float64)
    if n:
        _pivot(pos, code, hi, lo, value, column, best, best_hi, best_lo, values)
    for j in range(top.size):
        if top[j] >= 0 and column[top[j]] != j:
            values[j] = values[column[top[j]]]
    return best, values
