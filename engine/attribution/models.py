"""The attribution models over one set of :class:`~centile.attribution.journeys.Journeys`.

* rule based -- ``first_touch``, ``last_touch``, ``linear`` (1/n per touch, so repeats count),
  ``time_decay`` (``0.5 ** (age / half_life)`` normalised per journey; needs timestamps, so
  not for path tables), ``position_based`` (1; 0.5/0.5; 0.4 first, 0.4 last, 0.2/(n-2) between);
* ``shapley_simplified`` -- Zhao et al. (2018): a journey's conversions split equally over its
  distinct channels, the exact Shapley value of the additive game
  ``v(S) = conversions of journeys whose channel set lies within S``;
* ``shapley`` -- the exact Shapley value of ``v(S) = conversion rate of the journeys whose channel
  set lies within S`` by subset enumeration (at most 20 channels); the values sum to the overall
  conversion rate and are scaled to the total conversions (value: the same with value per journey);
* ``markov_k`` -- the order-k absorbing Markov chain (states: the last k channels, start,
  conversion, null). ``P(conversion)`` solves ``(I - Q) x = r`` (a dense LU up to 300 transient
  states; beyond, the fixed point ``x = r + Q x`` iterated to machine precision) -- no simulation. Removing channel ``c`` sends every state that contains
  ``c`` to null; ``RE_c = 1 - P(conversion | c removed) / P(conversion)``. Conversions are shared
  by ``RE_c / sum RE``. Value: the conversion step of each last state carries the mean value of
  the conversions that end there, so ``V = sum_s P(reach s, convert) * mean value(s)`` and the
  value removal effects ``1 - V(c removed) / V`` share the total value the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from centile.attribution.journeys import Journeys
from centile.errors import ConfigError
from centile.kernels import paths as kp

RULE_MODELS = kp.HEURISTICS


@dataclass(frozen=True)
class MarkovResult:
    order: int
    p_conversion: float
    value_per_journey: float
    removal: pl.DataFrame  # channel, removal_effect, removal_effect_value, p_conversion_removed
    transitions: pl.DataFrame  # from_state, to_state, weight, probability


def rule_based(j: Journeys, half_life_days: float) -> pl.DataFrame:
    """Rows (model, channel, conversions, value) of the rule-based models and the simplified Shapley."""
    cc, cv = kp.heuristic_credits(j.offsets, j.channel, np.nan_to_num(j.age_days), j.conv, j.value,
                                  len(j.channels), half_life_days)
    rows = []
    for m, name in enumerate(RULE_MODELS):
        if name == "time_decay" and not j.has_time:
            continue
        rows.append(pl.DataFrame({"model": name, "channel": list(j.channels), "conversions": cc[m], "value": cv[m]}))
    return pl.concat(rows)


def shapley(j: Journeys) -> pl.DataFrame:
    """Rows of the full Shapley value (see module docstring); refuses more than 20 channels."""
    c = len(j.channels)
    if c > kp.MAX_SHAPLEY_CHANNELS:
        raise ConfigError(f"[attribution] shapley: the full Shapley value enumerates 2**C coalitions and is "
                          f"limited to {kp.MAX_SHAPLEY_CHANNELS} channels; these journeys have {c}. "
                          "Set shapley = false (the simplified Shapley value has no limit) or map channels "
                          "into fewer groups")
    masks = kp.channel_masks(j.offsets, j.channel, c)
    pc, pv = kp.shapley_values(masks, j.conv, j.conv + j.null, j.value, c)
    total_c, total_v = float(j.conv.sum()), float(j.value.sum())
    sc, sv = pc.sum(), pv.sum()
    return pl.DataFrame({"model": "shapley", "channel": list(j.channels),
                         "conversions": pc / sc * total_c if sc else np.zeros(c),
                         "value": pv / sv * total_v if sv else np.zeros(c)})


def _absorb(q, r, keep: np.ndarray | None):
    """x solving (I - Q) x = r over the transient states ``keep`` (others fixed to 0).

    Up to 300 states: a dense LU. Beyond (order 2 and 3 with many channels, where a sparse LU
    fills in badly): the fixed point ``x = r + Q x`` iterated until no entry moves by more than
    1e-15 of the largest (the chain is absorbing, so this converges geometrically at the rate of
    the longest-path probability), then one residual check; a sparse LU if it did not converge.
    """
    import scipy.sparse as sp

    if keep is not None:
        q = q[keep][:, keep]
        r = r[keep]
    n = q.shape[0]
    if n == 0:
        return np.zeros(r.shape)
    if n <= _DENSE_MAX:
        return np.linalg.solve(np.identity(n) - q.toarray(), r)
    q = q.tocsr()
    x = r.copy()
    scale = max(float(np.abs(r).max()), 1e-300)
    for _ in range(_MAX_ITER):
        nxt = r + q @ x
        moved = float(np.abs(nxt - x).max())
        x = nxt
        if moved <= 1e-15 * max(scale, float(np.abs(x).max())):
            return x
    from scipy.sparse.linalg import splu

    return splu((sp.identity(n, format="csc") - q).tocsc()).solve(np.ascontiguousarray(r))


_MAX_ITER = 100_000
_DENSE_MAX = 300


def markov(j: Journeys, order: int) -> MarkovResult:
    """The exact order-``order`` Markov removal effects and the named transition matrix."""
    import scipy.sparse as sp

    c = len(j.channels)
    base = c + 1
    if base ** order * (c + 2) <= kp.MAX_DENSE_CELLS:
        # one pass into (state, successor) tables, then only the cells that occur
        wtab, vtab = kp.transition_counts(j.offsets, j.channel, j.conv, j.null, j.value, c, order)
        rows, cols = np.nonzero(wtab)
        w, val = wtab[rows, cols], vtab[rows, cols]
        digits = np.zeros(rows.size, np.int64)  # channels in the from-state
        for d in range(1, order + 1):
            digits += rows >= base ** (d - 1)
        nxt = np.where(digits >= order, rows % base ** (order - 1) if order > 1 else 0, rows) * base + cols + 1
        src = np.where(rows == 0, kp.START, rows)
        dst = np.where(cols == c, kp.CONVERSION, np.where(cols == c + 1, kp.NULL, nxt))
    else:
        src, dst, w, val = kp.transition_edges(j.offsets, j.channel, j.conv, j.null, j.value, c, order)
    keys, inv = np.unique(np.concatenate([src, dst]), return_inverse=True)
    s_id, d_id = inv[:src.size], inv[src.size:]
    ns = keys.size
    pair = s_id.astype(np.int64) * ns + d_id
    up, pinv = np.unique(pair, return_inverse=True)
    wt = np.bincount(pinv, weights=w, minlength=up.size)
    vt = np.bincount(pinv, weights=val, minlength=up.size)
    ok = wt > 0
    up, wt, vt = up[ok], wt[ok], vt[ok]
    fs, ts = up // ns, up % ns
    out_w = np.bincount(fs, weights=wt, minlength=ns)
    prob = wt / out_w[fs]
    # transient states: start and the channel states (keys >= -1)
    transient = keys >= kp.START
    tid = np.full(ns, -1, np.int64)
    tid[transient] = np.arange(int(transient.sum()))
    conv_state = int(np.searchsorted(keys, kp.CONVERSION))
    has_conv = conv_state < ns and keys[conv_state] == kp.CONVERSION
    nt = int(transient.sum())
    tt = transient[ts]
    q = sp.csr_matrix((prob[tt], (tid[fs[tt]], tid[ts[tt]])), shape=(nt, nt))
    r = np.zeros((nt, 2))
    if has_conv:
        toc = ts == conv_state
        r[tid[fs[toc]], 0] = prob[toc]
        # mean value per conversion of the last state
        r[tid[fs[toc]], 1] = prob[toc] * vt[toc] / wt[toc]
    start = int(tid[np.searchsorted(keys, kp.START)])
    x = _absorb(q, r, None)
    p0, v0 = float(x[start, 0]), float(x[start, 1])
    names = ["(start)" if k == kp.START else "(conversion)" if k == kp.CONVERSION else "(null)" if k == kp.NULL
             else " > ".join(j.channels[i] for i in kp.decode_state(k, c, order)) for k in keys.tolist()]
    tkeys = keys[transient]
    contains = np.zeros((c, nt), dtype=bool)
    for t, k in enumerate(tkeys.tolist()):
        if k != kp.START:
            for ch in set(kp.decode_state(k, c, order)):
                contains[ch, t] = True
    re_c, re_v, p_rm = np.zeros(c), np.zeros(c), np.zeros(c)
    for ch in range(c):
        keep = ~contains[ch]
        xr = _absorb(q, r, keep)
        s_new = int(np.cumsum(keep)[start] - 1)
        p_rm[ch] = float(xr[s_new, 0])
        re_c[ch] = 1.0 - p_rm[ch] / p0 if p0 > 0 else 0.0
        re_v[ch] = 1.0 - float(xr[s_new, 1]) / v0 if v0 > 0 else 0.0
    removal = pl.DataFrame({"channel": list(j.channels), "removal_effect": re_c, "removal_effect_value": re_v,
                            "p_conversion_removed": p_rm})
    transitions = pl.DataFrame({"from_state": [names[i] for i in fs.tolist()],
                                "to_state": [names[i] for i in ts.tolist()],
                                "weight": wt, "probability": prob})
    return MarkovResult(order, p0, v0, removal, transitions)


def markov_rows(res: MarkovResult, j: Journeys) -> pl.DataFrame:
    """Attributed conversions and value of a Markov result: shares of the removal effects."""
    rc = res.removal["removal_effect"].to_numpy()
    rv = res.removal["removal_effect_value"].to_numpy()
    tc, tv = float(j.conv.sum()), float(j.value.sum())
    return pl.DataFrame({"model": f"markov_{res.order}", "channel": res.removal["channel"],
                         "conversions": rc / rc.sum() * tc if rc.sum() > 0 else np.zeros(rc.size),
                         "value": rv / rv.sum() * tv if rv.sum() > 0 else np.zeros(rv.size)})
