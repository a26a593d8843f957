"""Slow, obviously correct plain-Python references for the kernels.

Everything here is loops, ``sorted`` and Python integers: no numba, no
clever tricks. Kernel tests compare against these on small inputs.
"""

import math

_U64 = (1 << 64) - 1


# --------------------------------------------------------------------------
# hashes
# --------------------------------------------------------------------------
def mix64(x):
    """SplitMix64 output function on a Python int (mod 2**64)."""
    z = (x + 0x9E3779B97F4A7C15) & _U64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _U64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _U64
    return z ^ (z >> 31)


def hash_int64(ids, seed):
    key = mix64(seed & _U64)
    return [mix64((int(i) & _U64) ^ key) for i in ids]


def hash_bytes(strings, seed):
    key = mix64(seed & _U64)
    out = []
    for s in strings:
        h = 0xCBF29CE484222325 ^ key
        for byte in s:
            h = ((h ^ byte) * 0x100000001B3) & _U64
        out.append(mix64(h ^ len(s)))
    return out


# --------------------------------------------------------------------------
# ranks
# --------------------------------------------------------------------------
def rank_pct(values, eligible=None, groups=None):
    """Descending competition rank and ascending percent_rank, by counting."""
    n = len(values)
    ok = [
        (eligible is None or bool(eligible[i]))
        and not math.isnan(values[i])
        and (groups is None or groups[i] >= 0)
        for i in range(n)
    ]
    rank = [0] * n
    pct = [math.nan] * n
    for i in range(n):
        if not ok[i]:
            continue
        peers = [
            values[j] for j in range(n) if ok[j] and (groups is None or groups[j] == groups[i])
        ]
        m = len(peers)
        greater = sum(1 for v in peers if v > values[i])
        smaller = sum(1 for v in peers if v < values[i])
        rank[i] = 1 + greater
        pct[i] = 0.0 if m == 1 else smaller / (m - 1)
    return rank, pct


# --------------------------------------------------------------------------
# orderings and top-k
# --------------------------------------------------------------------------
def sort_key(keys, hashes, i):
    """Ascending sort key = better first: larger primary, larger tie-breakers
    (NaN last), smaller hash, smaller index."""
    row = keys[i]
    parts = [-row[0]]
    for v in row[1:]:
        parts.append((1, 0.0) if math.isnan(v) else (0, -v))
    parts.append(0 if hashes is None else int(hashes[i]))
    parts.append(i)
    return tuple(parts)


def order(keys, hashes=None, eligible=None):
    """All eligible rows (non-NaN primary), best first."""
    rows = [
        i
        for i in range(len(keys))
        if not math.isnan(keys[i][0]) and (eligible is None or bool(eligible[i]))
    ]
    return sorted(rows, key=lambda i: sort_key(keys, hashes, i))


def topk(keys, k, hashes=None, eligible=None):
    return order(keys, hashes, eligible)[:k]


# --------------------------------------------------------------------------
# clubs
# --------------------------------------------------------------------------
def _summarise(keys, hashes, sizes, club, tier):
    """position / size / threshold / skipped / qualified from an assignment."""
    n_clubs, n_tiers = len(sizes), len(sizes[0])
    n = len(club)
    position = [-1] * n
    size = [[0] * n_tiers for _ in range(n_clubs)]
    threshold = [[math.nan] * n_tiers for _ in range(n_clubs)]
    skipped = [[0] * n_tiers for _ in range(n_clubs)]
    qualified = [[False] * n_clubs for _ in range(n)]
    for c in range(n_clubs):
        ordc = order(keys[c], hashes)
        for p, i in enumerate(ordc):
            if p < sum(sizes[c]):
                qualified[i][c] = True
            if club[i] == c:
                position[i] = p
        for t in range(n_tiers):
            members = [i for i in range(n) if club[i] == c and tier[i] == t + 1]
            size[c][t] = len(members)
            if members:
                last = max(members, key=lambda i: position[i])
                threshold[c][t] = keys[c][last][0]
                skipped[c][t] = sum(
                    1 for i in ordc[: position[last]] if club[i] not in (-1, c)
                )
    return club, tier, position, size, threshold, skipped, qualified


def assign_priority(keys, hashes, sizes):
    """keys[c][i] = tuple of floats; sizes[c][t]."""
    n_clubs, n_tiers = len(sizes), len(sizes[0])
    n = len(keys[0])
    club = [-1] * n
    tier = [0] * n
    orders = [order(keys[c], hashes) for c in range(n_clubs)]
    for t in range(n_tiers):
        for c in range(n_clubs):
            got = 0
            for i in orders[c]:
                if got == sizes[c][t]:
                    break
                if club[i] == -1:
                    club[i] = c
                    tier[i] = t + 1
                    got += 1
    return _summarise(keys, hashes, sizes, club, tier)


def assign_best_rank(keys, hashes, sizes, pct):
    """Tier by tier Gale-Shapley over all free customers, full preference lists."""
    n_clubs, n_tiers = len(sizes), len(sizes[0])
    n = len(keys[0])
    club = [-1] * n
    tier = [0] * n
    club_rank = []
    for c in range(n_clubs):
        club_rank.append({i: p for p, i in enumerate(order(keys[c], hashes))})
    for t in range(n_tiers):
        free = [i for i in range(n) if club[i] == -1]
        prefs = {}
        for i in free:
            ok = [c for c in range(n_clubs) if i in club_rank[c] and sizes[c][t] > 0]
            prefs[i] = sorted(ok, key=lambda c: (-pct[c][i], c))
        held = {c: [] for c in range(n_clubs)}
        nxt = dict.fromkeys(free, 0)
        queue = list(free)
        while queue:
            i = queue.pop()
            if nxt[i] >= len(prefs[i]):
                continue
            c = prefs[i][nxt[i]]
            nxt[i] += 1
            held[c].append(i)
            if len(held[c]) > sizes[c][t]:
                worst = max(held[c], key=lambda j: club_rank[c][j])
                held[c].remove(worst)
                queue.append(worst)
        for c in range(n_clubs):
            for i in held[c]:
                club[i] = c
                tier[i] = t + 1
    return _summarise(keys, hashes, sizes, club, tier)


# --------------------------------------------------------------------------
# category columns of the feature table
# --------------------------------------------------------------------------
def category_pivot(pos, code, net, value, customers, top):
    """Per customer: the code of the category with the most positive ``net`` (Python ints; equal:
    the lower code; -1 none), and per top code the ``value`` of its row (0.0 without one)."""
    best = []
    for p in range(customers):
        rows = [(net[i], code[i]) for i in range(len(pos)) if pos[i] == p and net[i] > 0]
        best.append(min(rows, key=lambda r: (-r[0], r[1]))[1] if rows else -1)
    values = [[0.0] * customers for _ in top]
    for j, c in enumerate(top):
        for i in range(len(pos)):
            if code[i] == c:
                values[j][pos[i]] = value[i]
    return best, values
