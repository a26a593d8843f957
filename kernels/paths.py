"""Attribution over touchpoint paths held in CSR form.

A set of journeys is ``offsets`` (int64, length n + 1) and ``channels``
(int32 channel ids ``0 .. C-1``): journey ``j`` is
``channels[offsets[j]:offsets[j + 1]]`` in time order. Per journey there are
weights ``conv`` (conversions), ``null`` (journeys without a conversion) and
``value`` (conversion value); per touch ``age`` (days before the conversion).

Every kernel runs serially over the journeys in their order, so the result is
the same bytes at any thread count (the loops are a single pass and far from
the bottleneck, which is reading and grouping the touchpoints).

* :func:`heuristic_credits` -- first, last, linear, time decay, position
  based and the simplified Shapley value (Zhao et al. 2018: a journey's
  conversions split equally over its *distinct* channels) in one pass.
* :func:`transition_edges` -- the transitions of the order-``k`` Markov chain
  (states: the last ``min(k, i)`` channels, encoded in base ``C + 1``) with
  their conversion + null weights.
* :func:`channel_masks` and :func:`shapley_values` -- the exact Shapley value
  by subset enumeration with bit masks, for coalition value = conversions /
  journeys among journeys whose channel set lies within the coalition.
"""

import numpy as np
from numba import njit

from ._flags import JIT, JIT_EXACT

#: row order of :func:`heuristic_credits`
HEURISTICS = ("first_touch", "last_touch", "linear", "time_decay", "position_based", "shapley_simplified")
START, CONVERSION, NULL = -1, -2, -3
MAX_SHAPLEY_CHANNELS = 20


def _csr(offsets, channels, n_channels):
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    channels = np.ascontiguousarray(channels, dtype=np.int32)
    if offsets.ndim != 1 or offsets.size < 1 or offsets[0] != 0 or offsets[-1] != channels.size:
        raise ValueError("offsets must start at 0 and end at len(channels)")
    if np.any(np.diff(offsets) < 1):
        raise ValueError("every journey needs at least one touch")
    if channels.size and (channels.min() < 0 or channels.max() >= n_channels):
        raise ValueError("channel ids must lie in [0, n_channels)")
    # always a read-only view: Arrow-backed arrays are read-only, NumPy ones are not, and numba
    # would compile every kernel twice (once per flag); the kernels never write channels
    channels = channels.view()
    channels.flags.writeable = False
    return offsets, channels


def _weights(w, n, name):
    w = np.ascontiguousarray(w, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"{name} must have one value per journey")
    return w


def heuristic_credits(offsets, channels, age_days, conv, value, n_channels, half_life_days=7.0):
    """Credits per model and channel.

    Parameters
    ----------
    offsets, channels : CSR journeys (see module docstring).
    age_days : float64 per touch, days from the touch to the conversion (>= 0).
    conv, value : float64 per journey.
    n_channels : int
    half_life_days : float > 0 -- time decay weight ``0.5 ** (age / half_life)``.

    Returns
    -------
    (credit_conv, credit_value) : float64 arrays of shape ``(6, n_channels)`` in the
    order of :data:`HEURISTICS`. Per journey each model's weights sum to 1, so every
    row sums to ``conv.sum()`` (resp. ``value.sum()``).
    """
    offsets, channels = _csr(offsets, channels, n_channels)
    n = offsets.size - 1
    age = np.ascontiguousarray(age_days, dtype=np.float64)
    if age.shape != channels.shape:
        raise ValueError("age_days must have one value per touch")
    if age.size and not (np.isfinite(age).all() and age.min() >= 0):
        raise ValueError("age_days must be finite and >= 0 (NaN policy: refuse; pass 0 where time is unknown)")
    if not half_life_days > 0:
        raise ValueError("half_life_days must be positive")
    return _heuristics(offsets, channels, age, _weights(conv, n, "conv"), _weights(value, n, "value"),
                       int(n_channels), float(half_life_days))


@njit(**JIT_EXACT)
def _heuristics(offsets, channels, age, conv, value, n_channels, half_life):
    m = 6
    out_c = np.zeros((m, n_channels))
    out_v = np.zeros((m, n_channels))
    w = np.zeros(channels.size)
    seen = np.full(n_channels, -1, np.int64)
    for j in range(offsets.size - 1):
        c = conv[j]
        v = value[j]
        if c == 0.0 and v == 0.0:
            continue
        a = offsets[j]
        b = offsets[j + 1]
        n = b - a
        # first, last
        out_c[0, channels[a]] += c
        out_v[0, channels[a]] += v
        out_c[1, channels[b - 1]] += c
        out_v[1, channels[b - 1]] += v
        # linear: every touch 1/n (repeats count)
        for i in range(a, b):
            out_c[2, channels[i]] += c / n
            out_v[2, channels[i]] += v / n
        # time decay, normalised per journey
        tot = 0.0
        for i in range(a, b):
            w[i] = 0.5 ** (age[i] / half_life)
            tot += w[i]
        for i in range(a, b):
            out_c[3, channels[i]] += c * w[i] / tot
            out_v[3, channels[i]] += v * w[i] / tot
        # position based 40 / 20 / 40
        if n == 1:
            out_c[4, channels[a]] += c
            out_v[4, channels[a]] += v
        elif n == 2:
            for i in range(a, b):
                out_c[4, channels[i]] += 0.5 * c
                out_v[4, channels[i]] += 0.5 * v
        else:
            out_c[4, channels[a]] += 0.4 * c
            out_v[4, channels[a]] += 0.4 * v
            out_c[4, channels[b - 1]] += 0.4 * c
            out_v[4, channels[b - 1]] += 0.4 * v
            mid = 0.2 / (n - 2)
            for i in range(a + 1, b - 1):
                out_c[4, channels[i]] += mid * c
                out_v[4, channels[i]] += mid * v
        # simplified Shapley: equal split over the distinct channels
        k = 0
        for i in range(a, b):
            if seen[channels[i]] != j:
                seen[channels[i]] = j
                k += 1
        for i in range(a, b):
            if seen[channels[i]] == j:
                seen[channels[i]] = -2 - j  # credited once
                out_c[5, channels[i]] += c / k
                out_v[5, channels[i]] += v / k
    return out_c, out_v


def transition_edges(offsets, channels, conv, null, value, n_channels, order=1):
    """Every transition of every journey in the order-``order`` chain, not yet aggregated.

    States: :data:`START`, :data:`CONVERSION`, :data:`NULL` and, for a touch at position
    ``i``, the last ``min(order, i + 1)`` channels encoded as ``sum (c + 1) * (C + 1) ** p``
    (``p = 0`` the newest). A journey adds weight ``conv + null`` to start → s1 → ... → sn,
    ``conv`` to sn → conversion (with ``value``) and ``null`` to sn → null.

    Returns
    -------
    (src, dst, weight, value) : int64, int64, float64, float64 arrays.
    """
    offsets, channels = _csr(offsets, channels, n_channels)
    n = offsets.size - 1
    if order < 1 or (n_channels + 1) ** order >= 2 ** 62:
        raise ValueError("order must be >= 1 and (n_channels + 1) ** order must fit in int64")
    return _edges(offsets, channels, _weights(conv, n, "conv"), _weights(null, n, "null"),
                  _weights(value, n, "value"), int(n_channels), int(order))


@njit(**JIT)
def _edges(offsets, channels, conv, null, value, n_channels, order):
    n = offsets.size - 1
    m = channels.size + 2 * n
    src = np.empty(m, np.int64)
    dst = np.empty(m, np.int64)
    wt = np.empty(m)
    val = np.zeros(m)
    base = n_channels + 1
    top = base ** (order - 1)
    e = 0
    for j in range(n):
        w = conv[j] + null[j]
        prev = -1  # START
        key = 0
        for i in range(offsets[j], offsets[j + 1]):
            if i - offsets[j] >= order:
                key = key % top  # drop the oldest channel
            key = key * base + channels[i] + 1 if order > 1 else channels[i] + 1
            src[e] = prev
            dst[e] = key
            wt[e] = w
            e += 1
            prev = key
        src[e] = prev
        dst[e] = -2
        wt[e] = conv[j]
        val[e] = value[j]
        e += 1
        src[e] = prev
        dst[e] = -3
        wt[e] = null[j]
        e += 1
    return src, dst, wt, val


#: above this many cells (states x successors) :func:`transition_counts` is not used
MAX_DENSE_CELLS = 20_000_000


def transition_counts(offsets, channels, conv, null, value, n_channels, order=1):
    """The transitions of the order-``order`` chain aggregated in one pass, as dense tables.

    A state (the last ``min(order, i)`` channels, key as in :func:`transition_edges`; key 0 is
    the start) has at most ``C + 2`` successors: the next channel ``x`` (column ``x``),
    conversion (column ``C``) and null (column ``C + 1``).

    Returns
    -------
    (weight, value) : float64 arrays of shape ``((C + 1) ** order, C + 2)``.
    """
    offsets, channels = _csr(offsets, channels, n_channels)
    n = offsets.size - 1
    if order < 1 or (n_channels + 1) ** order * (n_channels + 2) > MAX_DENSE_CELLS:
        raise ValueError("order must be >= 1 and (C + 1) ** order * (C + 2) at most MAX_DENSE_CELLS")
    return _counts(offsets, channels, _weights(conv, n, "conv"), _weights(null, n, "null"),
                   _weights(value, n, "value"), int(n_channels), int(order))


@njit(**JIT)
def _counts(offsets, channels, conv, null, value, n_channels, order):
    base = n_channels + 1
    top = base ** (order - 1)
    wt = np.zeros((base ** order, n_channels + 2))
    val = np.zeros((base ** order, n_channels + 2))
    for j in range(offsets.size - 1):
        w = conv[j] + null[j]
        if w == 0.0:
            continue
        key = 0
        for i in range(offsets[j], offsets[j + 1]):
            wt[key, channels[i]] += w
            if i - offsets[j] >= order:
                key = key % top
            key = key * base + channels[i] + 1 if order > 1 else channels[i] + 1
        wt[key, n_channels] += conv[j]
        val[key, n_channels] += value[j]
        wt[key, n_channels + 1] += null[j]
    return wt, val


def decode_state(key, n_channels, order):
    """The channel ids (oldest first) of a state key of :func:`transition_edges`."""
    if order == 1:
        return (int(key) - 1,)
    base = n_channels + 1
    out = []
    k = int(key)
    while k:
        out.append(k % base - 1)
        k //= base
    return tuple(reversed(out))


def channel_masks(offsets, channels, n_channels):
    """The set of channels of each journey as a bit mask (int64; ``n_channels <= 62``)."""
    offsets, channels = _csr(offsets, channels, n_channels)
    if n_channels > 62:
        raise ValueError("at most 62 channels fit a bit mask")
    return _masks(offsets, channels)


@njit(**JIT)
def _masks(offsets, channels):
    out = np.zeros(offsets.size - 1, np.int64)
    for j in range(offsets.size - 1):
        m = 0
        for i in range(offsets[j], offsets[j + 1]):
            m |= 1 << channels[i]
        out[j] = m
    return out


def shapley_values(masks, conv, weight, value, n_channels):
    """Exact Shapley values with coalition value ``v(S) = conv(S) / weight(S)`` (and the same for
    ``value``), where ``conv(S)`` sums the journeys whose channel set is a subset of ``S``.

    ``v(∅) = 0`` and ``v(S) = 0`` when no journey lies within ``S``. By efficiency the values
    sum to ``v(all channels)``, the overall conversion rate (value per journey).

    Returns
    -------
    (phi_conv, phi_value) : float64 arrays of length ``n_channels``.
    """
    if n_channels > MAX_SHAPLEY_CHANNELS:
        raise ValueError(f"the full Shapley value enumerates 2**C coalitions; at most "
                         f"{MAX_SHAPLEY_CHANNELS} channels")
    masks = np.ascontiguousarray(masks, dtype=np.int64)
    n = masks.size
    return _shapley(masks, _weights(conv, n, "conv"), _weights(weight, n, "weight"),
                    _weights(value, n, "value"), int(n_channels))


@njit(**JIT)
def _shapley(masks, conv, weight, value, n_channels):
    size = 1 << n_channels
    fc = np.zeros(size)
    fw = np.zeros(size)
    fv = np.zeros(size)
    for j in range(masks.size):
        fc[masks[j]] += conv[j]
        fw[masks[j]] += weight[j]
        fv[masks[j]] += value[j]
    # subset sums (zeta transform): f(S) = sum over T ⊆ S
    for b in range(n_channels):
        bit = 1 << b
        for s in range(size):
            if s & bit:
                fc[s] += fc[s ^ bit]
                fw[s] += fw[s ^ bit]
                fv[s] += fv[s ^ bit]
    rc = np.zeros(size)
    rv = np.zeros(size)
    for s in range(1, size):
        if fw[s] > 0:
            rc[s] = fc[s] / fw[s]
            rv[s] = fv[s] / fw[s]
    # weights |S|! (C - |S| - 1)! / C!
    coef = np.zeros(n_channels)
    for k in range(n_channels):
        lg = 0.0
        for t in range(1, k + 1):
            lg += np.log(t)
        for t in range(1, n_channels - k):
            lg += np.log(t)
        for t in range(1, n_channels + 1):
            lg -= np.log(t)
        coef[k] = np.exp(lg)
    pc = np.zeros(n_channels)
    pv = np.zeros(n_channels)
    for s in range(size):
        k = 0
        x = s
        while x:
            x &= x - 1
            k += 1
        if k == n_channels:
            continue
        for c in range(n_channels):
            bit = 1 << c
            if not s & bit:
                pc[c] += coef[k] * (rc[s | bit] - rc[s])
                pv[c] += coef[k] * (rv[s | bit] - rv[s])
    return pc, pv
