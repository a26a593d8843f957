"""Primal side of the contact plan: the repair of a Lagrangian plan that breaks a
capacity, and its improvement in what is left (:mod:`centile.steering.solve` calls these).

* ``repair``: drop the lowest-value contacts of every (medium, period) and medium over
  its capacity; dropping a contact keeps every other constraint met.
* ``refill``: the customers who lost contacts are planned again by the DP in the room
  left by everyone else; contacts over a capacity are dropped again, lowest value first.
* ``improve``: best responses (the DP of a customer with the full cells made
  ineligible) taken in order of gain while every capacity and the global budget hold,
  so the plan's value never falls.
"""

from __future__ import annotations

import math

import numpy as np

from centile.kernels.contact_plan import accept_moves, plans_at
from centile.steering.values import Values

BIG = np.iinfo(np.int64).max // 4


def plan_value(values: Values, medium: np.ndarray) -> float:
    ii, tt = np.nonzero(medium >= 0)
    return math.fsum(values.at(ii, medium[ii, tt], tt).tolist())


def repair(values: Values, medium: np.ndarray, capacity: np.ndarray,
            period_capacity: np.ndarray | None = None) -> np.ndarray:
    """Drop the lowest-value contacts of every (medium, period) over its capacity per
    period, then of every medium over its capacity (ties: the later customer, then the
    later period, go first). Dropping a contact keeps every other constraint met."""
    med = medium.copy()
    if period_capacity is not None:
        for m in np.flatnonzero(period_capacity < BIG):
            for t in range(values.shape[2]):
                ii = np.flatnonzero(med[:, t] == m)
                over = ii.size - int(period_capacity[m])
                if over <= 0:
                    continue
                order = np.lexsort((-ii, values.at(ii, np.full(ii.size, m), np.full(ii.size, t))))[:over]
                med[ii[order], t] = -1
    for m in range(values.shape[1]):
        if capacity[m] >= BIG:
            continue
        ii, tt = np.nonzero(med == m)
        over = ii.size - int(capacity[m])
        if over <= 0:
            continue
        val = values.at(ii, np.full(ii.size, m), tt)
        order = np.lexsort((-tt, -ii, val))[:over]
        med[ii[order], tt[order]] = -1
    return med


def refill(values, medium, repaired, costs, since, cap, gap, mcap, capacity, pcap, rounds=12):
    """Give the customers who lost contacts in the repair a new plan in what is left.

    Each such customer is planned again by the DP (``plans_at``) with every (medium,
    period) and medium that is full for the others made ineligible and a spend of at
    most their plan's spend before the repair (so the global budget still holds);
    contacts over a capacity after that are dropped again (lowest value first), and
    the round repeats with the customers who lost contacts this time. A customer's new
    plan replaces theirs only when it is worth more."""
    M, T = values.shape[1], values.shape[2]
    med = repaired
    hit = np.flatnonzero((medium != repaired).any(axis=1))
    for _ in range(rounds):
        if hit.size == 0:
            break
        others = med.copy()
        others[hit] = -1
        flat = np.where(others >= 0, others, M)
        per_t = np.stack([np.bincount(flat[:, t], minlength=M + 1)[:M] for t in range(T)], axis=1)
        total = per_t.sum(axis=1)
        rows = values.rows(hit)
        v = rows.copy()
        v[:, total >= capacity] = np.nan
        v[:, per_t >= pcap[:, None]] = np.nan
        spend = np.where(medium[hit] >= 0, costs[np.maximum(medium[hit], 0)], 0).sum(axis=1)
        new = plans_at(v, costs, spend, since[hit], cap=cap, gap=gap, medium_cap=mcap)
        old_val = np.nansum(np.where(med[hit] >= 0, np.take_along_axis(
            rows, np.maximum(med[hit], 0)[:, None, :], 1)[:, 0, :], 0.0), axis=1)
        new_val = np.nansum(np.where(new >= 0, np.take_along_axis(
            rows, np.maximum(new, 0)[:, None, :], 1)[:, 0, :], 0.0), axis=1)
        better = new_val > old_val
        trial = med.copy()
        trial[hit[better]] = new[better]
        fixed = repair(values, trial, capacity, pcap)
        hit = np.flatnonzero((trial != fixed).any(axis=1))
        med = fixed
    return med


def plan_spend(medium: np.ndarray, costs: np.ndarray) -> np.ndarray:
    """(n,) int64: each customer's spend, one period at a time (no (n, T) int64 temporary)."""
    ext = np.append(np.asarray(costs, np.int64), 0)  # index -1: no contact, no cost
    out = np.zeros(medium.shape[0], np.int64)
    for t in range(medium.shape[1]):
        out += ext[medium[:, t]]
    return out


def usage(medium: np.ndarray, M: int) -> np.ndarray:
    """(M, T) int64: contacts of each medium in each period."""
    T = medium.shape[1]
    out = np.zeros((M, T), np.int64)
    for t in range(T):
        col = medium[:, t]
        out[:, t] = np.bincount(col[col >= 0].astype(np.int64), minlength=M)[:M]
    return out


def _row_values(rows: np.ndarray, med: np.ndarray) -> np.ndarray:
    """Value of each row's plan (rows (k, M, T), med (k, T)), summed over periods in order."""
    v = np.take_along_axis(rows, np.maximum(med, 0)[:, None, :].astype(np.int64), 1)[:, 0, :]
    return np.where(med >= 0, v, 0.0).sum(axis=1)


def _candidates(values, med, hit, free_mt, per_cell):
    """The customers who lost contacts in a repair, and for every limited (medium, period)
    with room left the ``per_cell`` x room customers of highest value there not already in it
    (ties: the earlier customer): the customers most likely to gain from the room."""
    n = values.shape[0]
    picks = [hit]
    for m, t in zip(*np.nonzero(free_mt > 0), strict=True):
        k = int(min(n, per_cell * int(free_mt[m, t])))
        if k <= 0:
            continue
        col = values.at(np.arange(n), np.full(n, m), np.full(n, t))
        col = np.where((col > 0) & (med[:, t] != m), col, -np.inf)  # NaN and <= 0: not eligible
        if k < n:
            top = np.argpartition(-col, k - 1)[:k]
        else:
            top = np.arange(n)
        picks.append(top[np.isfinite(col[top])])
    return np.unique(np.concatenate(picks)) if picks else np.zeros(0, np.int64)


def improve(values, medium, repaired, costs, budgets, since, cap, gap, mcap, capacity, pcap, global_budget,
             rounds=12, per_cell=3):
    """Local improvement of a repaired plan: best responses taken while the capacities hold.

    Each round, every candidate (``_candidates``) is planned again by the DP (``plans_at``)
    with the (medium, period) cells and media that are full made ineligible -- except the
    cells the customer already holds -- and a spend of at most their budget and their plan's
    spend plus the global budget left. The new plans that are worth more are tried in order
    of decreasing gain (ties: the earlier customer) and taken while every capacity and the
    global budget hold (``accept_moves``), so the plan's value never falls; those that did
    not fit are candidates again in the next round. Rounds repeat until no plan is taken."""
    M, T = values.shape[1], values.shape[2]
    med = repaired.copy()  # small integers (int8 for up to 126 media): n x T bytes
    cm = plan_spend(med, costs)
    left = (BIG if global_budget >= BIG else int(global_budget) - int(cm.sum()))
    hit = np.flatnonzero((medium != repaired).any(axis=1))
    for _ in range(rounds):
        u_mt = usage(med, M)
        u_m = u_mt.sum(axis=1)
        room = np.minimum(pcap[:, None] - u_mt, (capacity - u_m)[:, None])
        limited = (pcap[:, None] < BIG) | (capacity[:, None] < BIG)
        free_mt = np.where(limited, np.maximum(room, 0), 0)
        cand = _candidates(values, med, hit, free_mt, per_cell)
        hit = np.zeros(0, np.int64)
        if cand.size == 0:
            break
        rows = values.rows(cand)
        v = rows.copy()
        full = limited & (room <= 0)
        held = np.zeros(v.shape, bool)
        for t in range(T):
            mt = med[cand, t]
            held[np.flatnonzero(mt >= 0), mt[mt >= 0], t] = True
        v[np.broadcast_to(full[None], v.shape) & ~held] = np.nan
        own = cm[cand]
        limit = np.minimum(budgets[cand], own + left) if left < BIG else budgets[cand]
        new = plans_at(v, costs, np.maximum(limit, 0), since[cand], cap=cap, gap=gap, medium_cap=mcap)
        gain = _row_values(rows, new) - _row_values(rows, med[cand])
        better = np.flatnonzero(gain > 1e-12 * np.maximum(1.0, np.abs(_row_values(rows, med[cand]))))
        if better.size == 0:
            break
        order = better[np.lexsort((better, -gain[better]))]
        taken, left_new = accept_moves(order, med[cand].astype(np.int64), new, costs, u_mt, u_m, pcap, capacity,
                                       left if left < BIG else BIG)
        if not taken.any():
            break
        left = left_new if left < BIG else BIG
        hit = cand[better[~taken[better]]]  # worth more but did not fit: planned again next round
        idx = cand[taken]
        med[idx] = new[taken]
        cm[idx] = plan_spend(new[taken], costs)
    return med
