"""Recommendations: the kernel against a brute-force scorer, the new-only rule, the evaluation metrics."""

import datetime as dt
from fractions import Fraction

import numpy as np
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from centile.baskets.recommend import compute_recommendations, evaluate, topn_metrics
from centile.baskets.settings import parse_recommend
from centile.errors import ConfigError
from centile.kernels.recommend import recommend
from centile.runtime import numba_threads
from tests import reference_baskets as ref

M = 6


def _brute(hist, neigh, k, new_only, boost, pop):
    """Score every item by its definition, sort everything, take the head, fill from popularity."""
    out = []
    for h in hist:
        scores = {}
        for i, w in h.items():
            for j, s in neigh.get(i, {}).items():
                scores[j] = scores.get(j, 0.0) + w * s
        for i, w in h.items():
            if new_only:
                scores.pop(i, None)
            elif w > 0:
                scores[i] = scores.get(i, 0.0) + boost * w
        ranked = [j for j, _ in sorted(scores.items(), key=lambda t: (-t[1], t[0]))][:k]
        for j in pop:
            if len(ranked) >= k:
                break
            if j not in ranked and not (new_only and j in h):
                ranked.append(j)
        out.append(ranked)
    return out


hist_st = st.lists(st.dictionaries(st.integers(0, M - 1), st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0]), max_size=4),
                   min_size=1, max_size=8)
neigh_st = st.dictionaries(st.tuples(st.integers(0, M - 1), st.integers(0, M - 1)).filter(lambda t: t[0] != t[1]),
                           st.sampled_from([0.125, 0.25, 0.5, 1.0]), max_size=12)


@given(hist_st, neigh_st, st.integers(1, 4), st.booleans())
def test_kernel_matches_brute_force(hist, pairs, k, new_only):
    neigh = {}
    for (i, j), s in sorted(pairs.items()):
        neigh.setdefault(i, {})[j] = s
    h_off = np.cumsum([0] + [len(h) for h in hist])
    h_items = [i for h in hist for i in sorted(h)]
    h_w = [h[i] for h in hist for i in sorted(h)]
    n_off = np.cumsum([0] + [len(neigh.get(i, {})) for i in range(M)])
    n_items = [j for i in range(M) for j in sorted(neigh.get(i, {}))]
    n_s = [neigh[i][j] for i in range(M) for j in sorted(neigh.get(i, {}))]
    pop = [3, 1, 5, 0, 2, 4]
    out, _score, source = recommend(h_off, h_items, h_w, n_off, n_items, n_s, M, k, new_only=new_only, boost=0.5,
                                    segment=np.zeros(len(hist), np.int64), pop_order=np.array([pop]),
                                    pop_len=np.array([M]))
    want = _brute(hist, neigh, k, new_only, 0.5, pop)
    for c, w in enumerate(want):
        got = [j for j in out[c].tolist() if j >= 0]
        assert got == w
        if new_only:
            assert not set(got) & set(hist[c])
        assert all(source[c, r] == 1 for r in range(len(got)) if r >= len(got) - sum(source[c] == 1))


def _lines(rows):
    return pl.DataFrame(rows, schema={"customer_id": pl.Int64, "order_id": pl.Int64, "order_ts": pl.Datetime("us"),
                                      "item": pl.String}, orient="row")


def _demo_lines(seed=3, n=4000):
    rng = np.random.default_rng(seed)
    rows = []
    base = dt.datetime(2024, 1, 1)
    for t in range(n):
        c = int(rng.integers(0, 300))
        day = base + dt.timedelta(days=int(rng.integers(0, 365)))
        start = int(rng.integers(0, 30))
        for i in set(rng.integers(start, start + 8, int(rng.integers(1, 5))).tolist()):
            rows.append((c, t, day, f"p{i:02d}"))
    return _lines(rows)


def test_new_only_never_recommends_a_bought_item_and_threads_give_same_bytes():
    lines = _demo_lines()
    seg = pl.DataFrame({"customer_id": list(range(0, 320)), "rfm_segment": ["x", "y", "z", "w"] * 80})
    st_ = parse_recommend({"k": 5})
    res = compute_recommendations(lines, st_, dt.date(2025, 1, 1), seg)
    recs = res.recommendations
    bought = lines.select("customer_id", "item").unique()
    assert recs.join(bought, on=["customer_id", "item"]).height == 0
    assert recs.group_by("customer_id").len()["len"].max() == 5
    # customers only in the segments frame (no history) get their segment's popular items
    fresh = recs.filter(pl.col("customer_id") >= 300)
    assert fresh.height == 20 * 5 and set(fresh["source"]) == {"popularity"}
    with numba_threads(1):
        one = compute_recommendations(lines, st_, dt.date(2025, 1, 1), seg)
    assert one.recommendations.equals(recs)
    allowed = compute_recommendations(lines, parse_recommend({"k": 5, "new_only": False}), dt.date(2025, 1, 1), seg)
    assert allowed.recommendations.join(bought, on=["customer_id", "item"]).height > 0


def test_topn_metrics_on_a_hand_computed_example():
    recs = pl.DataFrame({"customer_id": [1, 1, 2, 2, 3, 3], "rank": [1, 2] * 3,
                         "item": ["a", "b", "c", "d", "a", "c"]})
    relevant = pl.DataFrame({"customer_id": [1, 1, 1, 2, 3], "item": ["a", "b", "z", "q", "c"]})
    got = topn_metrics(recs, relevant, 2)
    # user 1: 2 hits of 3 relevant; user 2: 0 of 1; user 3: 1 of 1
    assert got == {"users": 3, "hit_rate": 2 / 3, "precision": 3 / 6, "recall": pytest.approx((2 / 3 + 0 + 1) / 3)}
    want = ref.topn_metrics({1: ["a", "b"], 2: ["c", "d"], 3: ["a", "c"]},
                            {1: {"a", "b", "z"}, 2: {"q"}, 3: {"c"}}, 2)
    assert want["hit_rate"] == Fraction(2, 3) and want["precision"] == Fraction(1, 2)
    assert got["recall"] == pytest.approx(float(want["recall"]))


def test_evaluation_by_hand():
    d0, d1 = dt.datetime(2024, 1, 1), dt.datetime(2024, 6, 1)
    rows = [  # a and b always go together before the cutoff; c is the most popular single item
        (1, 1, d0, "a"), (1, 1, d0, "b"), (2, 2, d0, "a"), (2, 2, d0, "b"), (3, 3, d0, "c"), (4, 4, d0, "c"),
        (5, 5, d0, "c"), (7, 10, d0, "c"), (6, 6, d0, "a"),
        (6, 7, d1, "b"),  # customer 6 bought a before: the recommender says b, popularity says c
        (3, 8, d1, "c"),  # customer 3 rebuys c: relevant for "all items" only
        (9, 9, d1, "a"),  # no history before the cutoff: not scored
    ]
    ev, _notes = evaluate(_lines(rows), parse_recommend({"k": 1, "min_pair_count": 1, "segment_by": "", "repurchase_boost": 0.5}),
                          dt.date(2024, 3, 1))
    got = {(r["protocol"], r["model"]): r for r in ev.iter_rows(named=True)}
    assert got[("new items only", "centile")]["users"] == 1
    assert got[("new items only", "centile")]["hit_rate"] == 1.0
    assert got[("new items only", "popularity")]["hit_rate"] == 0.0
    assert got[("new items only", "centile")]["beats_popularity"] is True
    # all items: users 3 (relevant c) and 6 (relevant b); centile with repurchases: 3 -> c, 6 -> b or a
    assert got[("all items", "centile")]["users"] == 2
    assert got[("all items", "popularity")]["hit_rate"] == 0.5  # everyone gets c: user 3 hits
    assert got[("all items", "centile")]["hit_rate"] == 1.0  # 3 -> c (repurchase boost), 6 -> b (cosine 0.82)
    assert got[("all items", "centile")]["precision"] == 1.0 and got[("all items", "centile")]["recall"] == 1.0
    with pytest.raises(ConfigError, match="cutoff"):
        evaluate(_lines(rows), parse_recommend({}), dt.date(2030, 1, 1))


def test_merge_puts_each_partition_in_place_as_a_concatenation_would():
    """Issue 12: the lists of every partition are held once, not three times; same arrays."""
    from centile.baskets.recommend import _merge

    rng = np.random.default_rng(3)
    ids = rng.permutation(40).astype(np.int64)
    cuts = [0, 7, 7, 20, 40]
    outs = [(pl.Series("customer_id", ids[a:b]), rng.integers(-1, 9, (b - a, 3)).astype(np.int32),
             rng.random((b - a, 3)), rng.integers(0, 3, (b - a, 3)).astype(np.int8)) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    order = np.argsort(ids, kind="stable")
    want = [np.concatenate([o[i] for o in outs])[order] for i in (1, 2, 3)]
    recs = _merge(list(outs), pl.Series("item", [f"i{i}" for i in range(9)]))
    assert recs.customers.to_list() == sorted(ids.tolist())
    for got, w in zip((recs.codes, recs.score, recs.source), want, strict=True):
        assert got.dtype == w.dtype and np.array_equal(got, w)
    emptied = list(outs)
    _merge(emptied, pl.Series("item", ["a"]))
    assert emptied == []
