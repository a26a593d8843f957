"""Slow, obviously correct references for basket analysis and recommendation metrics.

Plain Python: every itemset of size 1 and 2 is enumerated per basket with
``itertools.combinations``, counted in a dict, and every rule metric is
computed with ``fractions.Fraction`` from its definition.
"""

import itertools
import math
from fractions import Fraction


def itemset_counts(baskets, max_size=2):
    """{(a,): count, (a, b): count, ...} over baskets given as iterables of items (duplicates count once)."""
    out = {}
    for basket in baskets:
        items = sorted(set(basket))
        for size in range(1, max_size + 1):
            for combo in itertools.combinations(items, size):
                out[combo] = out.get(combo, 0) + 1
    return out


def rules(baskets, threshold, max_size=2, all_splits=False):
    """{(antecedent tuple, consequent tuple): metrics} for every itemset of 2..max_size items held by
    >= threshold baskets: every split into antecedent and consequent (all_splits) or those with one
    consequent item."""
    counts = itemset_counts(baskets, max_size)
    n = len(baskets)
    out = {}
    for key, cab in counts.items():
        if len(key) < 2 or cab < threshold:
            continue
        for r in range(1, len(key)):
            for cons in itertools.combinations(key, r):
                if r > 1 and not all_splits:
                    continue
                a = tuple(i for i in key if i not in cons)
                c = cons
                out[(a, c)] = _metrics(counts[a], counts[c], cab, n)
    return out


def _metrics(ca, cc, cab, n):
    """Every metric from its definition, in exact fractions."""
    support = Fraction(cab, n)
    confidence = Fraction(cab, ca)
    lift = confidence / Fraction(cc, n)
    leverage = support - Fraction(ca, n) * Fraction(cc, n)
    conviction = math.inf if confidence == 1 else (1 - Fraction(cc, n)) / (1 - confidence)
    return {"count_antecedent": ca, "count_consequent": cc, "count_both": cab, "n_baskets": n,
            "support": support, "confidence": confidence, "lift": lift, "leverage": leverage,
            "conviction": conviction}


def topn_metrics(recs, relevant, k):
    """HitRate@k, Precision@k, Recall@k over the users of ``relevant`` ({user: set}); ``recs`` {user: list}."""
    users = [u for u, rel in relevant.items() if rel]
    hits = [len(set(recs.get(u, [])[:k]) & relevant[u]) for u in users]
    n = len(users)
    return {"users": n,
            "hit_rate": Fraction(sum(h > 0 for h in hits), n),
            "precision": Fraction(sum(hits), n * k),
            "recall": sum((Fraction(h, len(relevant[u])) for h, u in zip(hits, users, strict=True)), Fraction(0)) / n}
