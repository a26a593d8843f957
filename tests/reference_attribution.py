"""Slow, obviously correct references for attribution (pure Python over lists of paths)."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict


def heuristics(paths, ages, conv, value, n_channels, half_life):
    """{model: ([conv per channel], [value per channel])} by the textbook definitions."""
    models = ("first_touch", "last_touch", "linear", "time_decay", "position_based", "shapley_simplified")
    out = {m: ([0.0] * n_channels, [0.0] * n_channels) for m in models}

    def add(m, ch, w, c, v):
        out[m][0][ch] += w * c
        out[m][1][ch] += w * v

    for p, a, c, v in zip(paths, ages, conv, value, strict=True):
        if c == 0 and v == 0:
            continue
        n = len(p)
        add("first_touch", p[0], 1.0, c, v)
        add("last_touch", p[-1], 1.0, c, v)
        for ch in p:
            add("linear", ch, 1.0 / n, c, v)
        ws = [0.5 ** (x / half_life) for x in a]
        for ch, w in zip(p, ws, strict=True):
            add("time_decay", ch, w / sum(ws), c, v)
        if n == 1:
            pos = [1.0]
        elif n == 2:
            pos = [0.5, 0.5]
        else:
            pos = [0.4] + [0.2 / (n - 2)] * (n - 2) + [0.4]
        for ch, w in zip(p, pos, strict=True):
            add("position_based", ch, w, c, v)
        distinct = sorted(set(p))
        for ch in distinct:
            add("shapley_simplified", ch, 1.0 / len(distinct), c, v)
    return out


def shapley_brute(game, players):
    """Shapley values by averaging marginal contributions over every ordering of ``players``."""
    phi = defaultdict(float)
    orders = list(itertools.permutations(players))
    for order in orders:
        s = frozenset()
        for p in order:
            phi[p] += game(s | {p}) - game(s)
            s = s | {p}
    return [phi[p] / len(orders) for p in players]


def rate_game(paths, conv, null):
    """v(S) = conversions / journeys among journeys whose channel set lies within S."""
    sets = [frozenset(p) for p in paths]

    def v(s):
        c = sum(x for ps, x in zip(sets, conv, strict=True) if ps <= s)
        n = sum(x + y for ps, x, y in zip(sets, conv, null, strict=True) if ps <= s)
        return c / n if n > 0 else 0.0
    return v


def additive_game(paths, conv):
    sets = [frozenset(p) for p in paths]
    return lambda s: sum(x for ps, x in zip(sets, conv, strict=True) if ps <= s)


def markov_p_conversion(paths, conv, null, removed=frozenset(), order=1, iterations=20000):
    """P(conversion from start) of the order-``order`` chain by value iteration x <- r + Q x
    (converges geometrically: every state reaches an absorbing one); states containing a
    removed channel go to null."""
    counts = defaultdict(lambda: defaultdict(float))
    for p, c, n in zip(paths, conv, null, strict=True):
        if c + n == 0:
            continue  # a journey without weight adds no transition
        prev = "start"
        for i in range(len(p)):
            st = tuple(p[max(0, i + 1 - order):i + 1])
            counts[prev][st] += c + n
            prev = st
        counts[prev]["conv"] += c
        counts[prev]["null"] += n
    states = list(counts)
    x = {s: 0.0 for s in states}
    for _ in range(iterations):
        new = {}
        for s in states:
            if s != "start" and set(s) & set(removed):
                new[s] = 0.0
                continue
            tot = sum(counts[s].values())
            acc = 0.0
            for t, w in counts[s].items():
                if t == "conv":
                    acc += w / tot
                elif t != "null":
                    acc += w / tot * x[t]
            new[s] = acc
        if max(abs(new[s] - x[s]) for s in states) < 1e-15:
            x = new
            break
        x = new
    return x["start"]


def simulate_p_conversion(paths, conv, null, removed, rng, walks):
    """Monte Carlo estimate (and its standard error) of P(conversion) of the first-order chain."""
    counts = defaultdict(lambda: defaultdict(float))
    for p, c, n in zip(paths, conv, null, strict=True):
        prev = "start"
        for ch in p:
            counts[prev][ch] += c + n
            prev = ch
        counts[prev]["conv"] += c
        counts[prev]["null"] += n
    table = {s: (list(d), [w / sum(d.values()) for w in d.values()]) for s, d in counts.items()}
    hits = 0
    for _ in range(walks):
        s = "start"
        while True:
            nxt, pr = table[s]
            s = nxt[rng.choice(len(nxt), p=pr)]
            if s == "conv":
                hits += 1
                break
            if s == "null" or s in removed:
                break
    p = hits / walks
    return p, math.sqrt(max(p * (1 - p), 1e-12) / walks)
