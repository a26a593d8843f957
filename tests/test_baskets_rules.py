"""Basket analysis: exact counts and rule metrics against a brute-force enumeration."""

import math
from fractions import Fraction

import numpy as np
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from centile.baskets.compute import compute_baskets
from centile.baskets.settings import parse_baskets
from centile.errors import ConfigError
from centile.kernels.pairs import item_counts, pair_counts
from centile.runtime import numba_threads
from tests import reference_baskets as ref

baskets_st = st.lists(st.lists(st.integers(0, 7), min_size=0, max_size=6), min_size=0, max_size=25)


def _csr(baskets):
    rows = [sorted(set(b)) for b in baskets]
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    items = np.array([i for r in rows for i in r], np.int64)
    return offsets, items


def _lines(baskets, customers=None):
    rows = []
    for t, b in enumerate(baskets):
        cust = customers[t] if customers is not None else t % 5
        for i in b:
            rows.append((cust, t, i))
    return pl.DataFrame(rows, schema={"customer_id": pl.Int64, "order_id": pl.Int64, "item": pl.Int64},
                        orient="row")


@given(baskets_st, st.integers(1, 4))
def test_pair_counts_match_brute_force(baskets, min_count):
    off, items = _csr(baskets)
    counts = ref.itemset_counts(baskets)
    assert item_counts(off, items, 8).tolist() == [counts.get((i,), 0) for i in range(8)]
    a, b, c = pair_counts(off, items, 8, min_count)
    got = list(zip(a.tolist(), b.tolist(), c.tolist(), strict=True))
    want = sorted((k[0], k[1], v) for k, v in counts.items() if len(k) == 2 and v >= min_count)
    assert got == want


def test_pair_counts_reject_unsorted_or_out_of_range_items():
    with pytest.raises(ValueError, match="strictly increasing"):
        pair_counts(np.array([0, 2]), np.array([1, 1]), 3)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        pair_counts(np.array([0, 1]), np.array([3]), 3)


def _key(r):
    a = (r["antecedent"],) if r["antecedent_2"] is None else (r["antecedent"], r["antecedent_2"])
    c = (r["consequent"],) if r["consequent_2"] is None else (r["consequent"], r["consequent_2"])
    return a, c


@given(baskets_st, st.integers(1, 4), st.sampled_from([(2, False), (3, False), (3, True)]))
def test_rule_metrics_match_brute_force(baskets, min_count, size_splits):
    max_size, all_splits = size_splits
    baskets = [b for b in baskets if b]  # a basket is an order with at least one line
    res = compute_baskets(_lines(baskets), parse_baskets({"min_count": min_count, "segment_by": [],
                                                          "max_size": max_size, "all_splits": all_splits}))
    want = ref.rules(baskets, min_count, max_size, all_splits)
    got = {_key(r): r for r in res.rules.iter_rows(named=True)}
    assert set(got) == set(want)
    for key, w in want.items():
        g = got[key]
        for c in ("count_antecedent", "count_consequent", "count_both", "n_baskets"):
            assert g[c] == w[c]
        for c in ("support", "confidence", "lift", "leverage"):
            assert g[c] == pytest.approx(float(w[c]), rel=1e-12, abs=1e-15)
        if w["conviction"] == math.inf:  # confidence 1
            assert g["conviction"] == math.inf
        else:
            assert g["conviction"] == pytest.approx(float(w["conviction"]), rel=1e-12)
    # sorted: lift (9 decimals) and support descending, then antecedent, consequent
    keys = [(-round(r["lift"], 9), -r["support"], *_key(r)) for r in res.rules.iter_rows(named=True)]
    assert keys == sorted(keys)
    counts = ref.itemset_counts(baskets, max_size)
    for size in range(1, max_size + 1):
        sets = res.itemsets.filter(pl.col("size") == size)
        cols = ["item_1", "item_2", "item_3"][:size]
        got_sets = {tuple(r[:size]): r[size] for r in sets.select(*cols, "count").rows()}
        assert got_sets == {k: v for k, v in counts.items() if len(k) == size and v >= min_count}


def test_conviction_is_inf_at_confidence_one_and_ties_sort_by_items():
    baskets = [[1, 2], [1, 2], [3, 4], [3, 4], [5]]
    res = compute_baskets(_lines(baskets), parse_baskets({"min_count": 1, "segment_by": []}))
    assert res.rules["conviction"].to_list() == [math.inf] * 4
    assert res.rules.select("antecedent", "consequent").rows() == [(1, 2), (2, 1), (3, 4), (4, 3)]


def test_min_support_threshold_is_exact_integer():
    # 0.1 * 30 is 3.0000000000000004 in floating point: a float ceil would ask for 4 baskets
    st_ = parse_baskets({"min_support": 0.1, "min_count": 1})
    assert st_.threshold(30) == 3
    assert parse_baskets({"min_support": 0.1, "min_count": 5}).threshold(30) == 5
    baskets = [[1, 2]] * 3 + [[3]] * 27
    res = compute_baskets(_lines(baskets), parse_baskets({"min_support": 0.1, "min_count": 1, "segment_by": []}))
    assert res.rules.height == 2


def test_min_confidence_is_exact():
    baskets = [[1, 2]] * 3 + [[1]] * 7  # confidence(1 -> 2) = 3/10 exactly, (2 -> 1) = 1
    res = compute_baskets(_lines(baskets), parse_baskets({"min_count": 1, "min_confidence": 0.3,
                                                          "segment_by": []}))
    assert res.rules.select("antecedent", "consequent").rows() == [(1, 2), (2, 1)]
    res = compute_baskets(_lines(baskets), parse_baskets({"min_count": 1, "min_confidence": 0.31,
                                                          "segment_by": []}))
    assert res.rules.select("antecedent", "consequent").rows() == [(2, 1)]


def test_large_baskets_are_counted_and_left_out():
    baskets = [[1, 2], [1, 2], list(range(10, 20))]
    res = compute_baskets(_lines(baskets), parse_baskets({"min_count": 1, "max_basket_items": 5,
                                                          "segment_by": []}))
    row = res.summary.row(0, named=True)
    assert row["n_baskets"] == 2 and row["baskets_excluded"] == 1
    assert any("more than 5 items" in n for n in res.notes)


def _random_baskets(seed, n=3000, m=60):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 8, n)
    p = 1 / np.arange(1, m + 1)
    p /= p.sum()
    return [rng.choice(m, s, p=p).tolist() for s in sizes], rng.integers(0, 400, n).tolist()


def test_segments_sum_to_overall_and_partitions_threads_give_same_bytes():
    baskets, custs = _random_baskets(1)
    lines = _lines(baskets, custs)
    seg = pl.DataFrame({"customer_id": list(range(0, 400, 2)), "club": ["a", "b"] * 100})
    st_ = parse_baskets({"min_count": 1, "segment_by": ["club"]})
    res = compute_baskets(lines, st_, seg)
    summ = res.summary
    overall = summ.filter(pl.col("segment_by") == "all")["n_baskets"].item()
    per = summ.filter(pl.col("segment_by") == "club")
    assert sorted(per["segment"].to_list()) == ["(none)", "a", "b"]
    assert per["n_baskets"].sum() == overall == len(baskets)
    for size in (1, 2):
        its = res.itemsets.filter(pl.col("size") == size)
        a = its.filter(pl.col("segment_by") == "all").select("item_1", "item_2", "count").sort("item_1", "item_2")
        b = (its.filter(pl.col("segment_by") == "club").group_by("item_1", "item_2").agg(pl.col("count").sum())
             .sort("item_1", "item_2"))
        assert a.equals(b.select(a.columns))
    st2 = parse_baskets({"min_count": 4, "segment_by": ["club"]})
    base = compute_baskets(lines, st2, seg)
    for parts in (2, 5):
        other = compute_baskets(lines, st2, seg, partitions=parts)
        assert other.rules.equals(base.rules) and other.itemsets.equals(base.itemsets)
    st3 = parse_baskets({"min_count": 3, "segment_by": ["club"], "max_size": 3, "all_splits": True})
    three = compute_baskets(lines, st3, seg)
    assert three.itemsets.filter(pl.col("size") == 3).height > 0
    assert three.rules.equals(compute_baskets(lines, st3, seg, partitions=3).rules)
    with numba_threads(1):
        one = compute_baskets(lines, st2, seg)
    assert one.rules.equals(base.rules) and one.summary.equals(base.summary)
    # an empty data set: no rules, N = 0
    empty = compute_baskets(lines.head(0), st2, seg)
    assert empty.rules.height == 0 and empty.summary["n_baskets"].to_list() == [0]


@pytest.mark.parametrize(("raw", "msg"), [
    ({"min_count": 0}, "min_count"), ({"min_support": 1.5}, "min_support"), ({"level": "sku"}, "level"),
    ({"min_cont": 3}, "did you mean 'min_count'"), ({"max_size": 4}, "max_size"),
])
def test_bad_settings_name_the_key(raw, msg):
    with pytest.raises(ConfigError, match=msg):
        parse_baskets(raw)


def test_fraction_settings():
    assert parse_baskets({"min_support": 0.001}).min_support == Fraction(1, 1000)


def test_issue12_rules_go_to_parquet_one_segment_at_a_time(tmp_path, monkeypatch):
    """With a sink, each segment's itemsets and rules are written and dropped before the next segment's
    are built (the rules of every segment at once grew with the customers); the files hold the same
    rows, in the same order, as the frames built in memory."""
    import weakref

    import centile.baskets.compute as bc
    from centile.baskets.lines import item_dictionary
    from centile.baskets.parts import FrameLines

    baskets, custs = _random_baskets(2)
    lines = _lines(baskets, custs)
    seg = pl.DataFrame({"customer_id": list(range(0, 400, 2)), "club": ["b", "a"] * 100,
                        "tier": ["x", "y", "z", "w"] * 50})
    st_ = parse_baskets({"min_count": 2, "segment_by": ["tier", "club"], "max_size": 3})
    whole = compute_baskets(lines, st_, seg)

    class Sink:
        def path(self, name):
            return tmp_path / name

    written: list[tuple[tuple, weakref.ref]] = []
    real = bc._Writer.write

    def write(self, df):
        keys = set(df.select("segment_by", "segment").unique().iter_rows())
        assert len(keys) <= 1, "one segment per write"
        held = [k for k, ref in written if ref() is not None and {k} != keys]
        assert not held, f"the frames of {held} are still held while another segment is written"
        written.append((next(iter(keys), None), weakref.ref(df)))
        real(self, df)

    monkeypatch.setattr(bc._Writer, "write", write)
    res = bc.baskets_from(FrameLines(lines, 3), item_dictionary(lines), st_, seg, sink=Sink())
    assert res.rules is None and res.itemsets is None
    assert res.rows == {"basket_itemsets": whole.itemsets.height, "basket_rules": whole.rules.height}
    assert len(written) == 2 * res.summary.height  # itemsets and rules of each segment
    assert pl.read_parquet(tmp_path / "basket_rules.parquet").equals(whole.rules)
    assert pl.read_parquet(tmp_path / "basket_itemsets.parquet").equals(whole.itemsets)
    assert res.summary.equals(whole.summary)
    assert res.summary["segment_by"].to_list()[:1] == ["all"]  # the summary keeps the counting order
