"""Kernels of the synthetic data generator: purchase times and order lines.

Pure functions over NumPy arrays. Every random number is drawn by the caller
and passed in, so the output depends on the inputs only (the same at any
thread count, and the same whatever order the chunks are computed in).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ._flags import JIT

__all__ = ["repeat_purchase_times", "segmented_cumsum", "choose_line_products"]


def _f64(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float64)


def _i64(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.int64)


def repeat_purchase_times(
    start: np.ndarray,
    horizon: np.ndarray,
    n_repeat: np.ndarray,
    spacings: np.ndarray,
    tail: np.ndarray,
) -> np.ndarray:
    """Times of the first repeat purchases of each customer's Poisson process.

    Given that a Poisson process has ``n`` arrivals in ``(0, T]``, the arrival
    times are ``n`` sorted uniforms on ``(0, T]``. The ``j``-th of them is
    ``T * S_j / S_(n+1)``, where ``S_j`` is the sum of ``j`` standard
    exponentials (Devroye 1986, *Non-Uniform Random Variate Generation*,
    ch. V.2). Only the first ``m <= n`` are needed (a BG/NBD customer stops
    after the purchase at which they drop out), so the caller passes ``m``
    exponential spacings and ``S_(n+1) - S_m ~ Gamma(n + 1 - m, 1)`` as
    ``tail``.

    Parameters
    ----------
    start : ndarray of float64, shape (k,)
        Time of each customer's first purchase (time zero of the process).
    horizon : ndarray of float64, shape (k,)
        Length ``T`` of the observation window after ``start``.
    n_repeat : ndarray of int64, shape (k,)
        Number ``m`` of repeat purchases to place, ``m >= 0``.
    spacings : ndarray of float64, shape (n_repeat.sum(),)
        Standard exponential draws, ``m`` per customer in customer order.
    tail : ndarray of float64, shape (k,)
        Draws of ``Gamma(n + 1 - m, 1)``.

    Returns
    -------
    ndarray of float64, shape (n_repeat.sum(),)
        Purchase times, ascending within each customer, each in
        ``(start, start + horizon)``.
    """
    start, horizon, spacings, tail = _f64(start), _f64(horizon), _f64(spacings), _f64(tail)
    n_repeat = _i64(n_repeat)
    k = start.shape[0]
    if not (horizon.shape[0] == n_repeat.shape[0] == tail.shape[0] == k):
        raise ValueError("start, horizon, n_repeat and tail must have the same length")
    if n_repeat.size and n_repeat.min() < 0:
        raise ValueError("n_repeat must be >= 0")
    if spacings.shape[0] != int(n_repeat.sum()):
        raise ValueError(f"spacings has {spacings.shape[0]} values, expected n_repeat.sum() = "
                         f"{int(n_repeat.sum())}")
    out = np.empty(spacings.shape[0], dtype=np.float64)
    _repeat_purchase_times(start, horizon, n_repeat, spacings, tail, out)
    return out


@njit(**JIT)
def _repeat_purchase_times(start, horizon, n_repeat, spacings, tail, out):
    pos = 0
    for i in range(start.shape[0]):
        m = n_repeat[i]
        if m == 0:
            continue
        total = tail[i]
        for j in range(m):
            total += spacings[pos + j]
        acc = 0.0
        for j in range(m):
            acc += spacings[pos + j]
            out[pos + j] = start[i] + horizon[i] * (acc / total)
        pos += m


def segmented_cumsum(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Cumulative sum restarted at the start of every segment.

    Parameters
    ----------
    values : ndarray of float64, shape (counts.sum(),)
        Values, segment after segment.
    counts : ndarray of int64, shape (k,)
        Segment lengths, each ``>= 0``.

    Returns
    -------
    ndarray of float64, shape (counts.sum(),)
        ``out[s + j] = values[s] + ... + values[s + j]`` for a segment starting at ``s``.
    """
    values, counts = _f64(values), _i64(counts)
    if counts.size and counts.min() < 0:
        raise ValueError("counts must be >= 0")
    if values.shape[0] != int(counts.sum()):
        raise ValueError(f"values has {values.shape[0]} entries, counts sum to {int(counts.sum())}")
    out = np.empty_like(values)
    _segmented_cumsum(values, counts, out)
    return out


@njit(**JIT)
def _segmented_cumsum(values, counts, out):
    pos = 0
    for i in range(counts.shape[0]):
        acc = 0.0
        for j in range(counts[i]):
            acc += values[pos + j]
            out[pos + j] = acc
        pos += counts[i]


def choose_line_products(
    line_order: np.ndarray,
    line_customer: np.ndarray,
    line_value: np.ndarray,
    discount: np.ndarray,
    quantity: np.ndarray,
    u_category: np.ndarray,
    pool: np.ndarray,
    cum_affinity: np.ndarray,
    pool_offsets: np.ndarray,
    pool_log_price: np.ndarray,
    pool_product: np.ndarray,
    list_price: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Pick a product and a quantity for every order line so the line is worth its target value.

    The category is drawn from the customer's cumulative category affinities
    with the uniform ``u_category``. Inside that category and the requested
    price pool (e.g. products priced above market), the product is the one
    whose list price, after the line's discount, times the quantity comes
    nearest (in log price) to the target value. The proposed quantity is
    raised when even the dearest product is too cheap; a line worth less than
    the cheapest product of its category buys the nearest-priced product of
    any category instead (small add-on items). What a line misses its target by is carried to
    the next line of the same order (error diffusion), so an order's lines add
    up to the order's value except for a remainder on its last line.

    Parameters
    ----------
    line_order : ndarray of int64, shape (n,)
        Order of each line; the lines of one order are contiguous.
    line_customer : ndarray of int64, shape (n,)
        Row of ``cum_affinity`` for each line.
    line_value : ndarray of float64, shape (n,)
        Target value of the line (quantity x unit price), ``> 0``.
    discount : ndarray of float64, shape (n,)
        Discount off list price, in ``[0, 1)``.
    quantity : ndarray of int64, shape (n,)
        Proposed quantity, ``>= 1``.
    u_category : ndarray of float64, shape (n,)
        Uniforms on ``[0, 1)`` choosing the category.
    pool : ndarray of int64, shape (n,)
        Price pool of each line (row of ``pool_offsets``). Row 0 must be the
        pool of all products; an empty pool falls back to it.
    cum_affinity : ndarray of float64, shape (customers, categories)
        Cumulative category probabilities per customer; last column 1.
    pool_offsets : ndarray of int64, shape (pools, categories + 1)
        ``pool_log_price[pool_offsets[q, c]:pool_offsets[q, c + 1]]`` are the
        ascending log list prices of category ``c`` in pool ``q``.
    pool_log_price : ndarray of float64
        Log list prices, sorted within each (pool, category) slice.
    pool_product : ndarray of int64
        Product index of each entry of ``pool_log_price``.
    list_price : ndarray of float64, shape (products,)
        List price of each product.

    Returns
    -------
    product : ndarray of int64, shape (n,)
    quantity : ndarray of int32, shape (n,)
    """
    line_order, line_customer = _i64(line_order), _i64(line_customer)
    quantity, pool, list_price = _i64(quantity), _i64(pool), _f64(list_price)
    line_value, discount, u_category = _f64(line_value), _f64(discount), _f64(u_category)
    cum_affinity = np.ascontiguousarray(cum_affinity, dtype=np.float64)
    pool_offsets = np.ascontiguousarray(pool_offsets, dtype=np.int64)
    pool_log_price, pool_product = _f64(pool_log_price), _i64(pool_product)
    n = line_customer.shape[0]
    for name, arr in (("line_order", line_order), ("line_value", line_value),
                      ("discount", discount), ("quantity", quantity), ("u_category", u_category),
                      ("pool", pool)):
        if arr.shape[0] != n:
            raise ValueError(f"{name} has {arr.shape[0]} entries, line_customer has {n}")
    if cum_affinity.ndim != 2 or pool_offsets.shape[1] != cum_affinity.shape[1] + 1:
        raise ValueError("pool_offsets must have one column more than cum_affinity")
    if n and (line_customer.min() < 0 or line_customer.max() >= cum_affinity.shape[0]):
        raise ValueError("line_customer out of range of cum_affinity rows")
    if n and (pool.min() < 0 or pool.max() >= pool_offsets.shape[0]):
        raise ValueError("pool out of range of pool_offsets rows")
    if n and not (np.all(line_value > 0) and np.all((discount >= 0) & (discount < 1))
                  and quantity.min() >= 1):
        raise ValueError("need line_value > 0, 0 <= discount < 1 and quantity >= 1")
    if pool_product.size and (pool_product.min() < 0 or pool_product.max() >= list_price.size):
        raise ValueError("pool_product out of range of list_price")
    if not np.all(list_price > 0):
        raise ValueError("list_price must be > 0")
    if np.any(np.diff(pool_offsets[0]) == 0):
        raise ValueError("every category needs at least one product in pool 0")
    product = np.empty(n, dtype=np.int64)
    qty = np.empty(n, dtype=np.int32)
    order = np.argsort(list_price, kind="stable")
    _choose_line_products(line_order, line_customer, line_value, discount, quantity, u_category,
                          pool, cum_affinity, pool_offsets, pool_log_price, pool_product,
                          list_price, np.log(list_price[order]), order.astype(np.int64),
                          product, qty)
    return product, qty


@njit(**JIT)
def _nearest(log_price, lo, hi, target):
    """Index in ``[lo, hi)`` of the sorted ``log_price`` nearest to ``target``."""
    a = lo
    b = hi
    while a < b:
        mid = (a + b) // 2
        if log_price[mid] < target:
            a = mid + 1
        else:
            b = mid
    if a == hi:
        return hi - 1
    if a > lo and target - log_price[a - 1] < log_price[a] - target:
        return a - 1
    return a


@njit(**JIT)
def _choose_line_products(line_order, line_customer, line_value, discount, quantity, u_category,
                          pool, cum_affinity, pool_offsets, pool_log_price, pool_product,
                          list_price, any_log_price, any_product, product, qty):
    n_cat = cum_affinity.shape[1]
    carry = 0.0
    for i in range(line_customer.shape[0]):
        if i == 0 or line_order[i] != line_order[i - 1]:
            carry = 0.0
        # an earlier line overshot: still buy something worth a fair part of this line
        want = max(line_value[i] + carry, 0.25 * line_value[i])
        row = line_customer[i]
        c = 0
        while c < n_cat - 1 and u_category[i] >= cum_affinity[row, c]:
            c += 1
        q = pool[i]
        lo = pool_offsets[q, c]
        hi = pool_offsets[q, c + 1]
        if hi == lo:
            lo = pool_offsets[0, c]
            hi = pool_offsets[0, c + 1]
        net = want / (1.0 - discount[i])  # value at list price
        k = quantity[i]
        cheapest = math.exp(pool_log_price[lo])
        dearest = math.exp(pool_log_price[hi - 1])
        if net / k > dearest:
            k = int(math.ceil(net / dearest))
        elif net / k < cheapest:
            k = max(1, int(round(net / cheapest)))
        if net < cheapest:
            # too small for this category: the nearest small item of any category
            a = _nearest(any_log_price, 0, any_log_price.shape[0], math.log(net))
            product[i] = any_product[a]
        else:
            a = _nearest(pool_log_price, lo, hi, math.log(net / k))
            product[i] = pool_product[a]
        qty[i] = k
        carry += line_value[i] - k * list_price[product[i]] * (1.0 - discount[i])
