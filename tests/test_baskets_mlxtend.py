"""The same rules as mlxtend's fpgrowth + association_rules on real baskets (the Complete Journey)."""

import math
from pathlib import Path

import polars as pl
import pytest

from centile.baskets.compute import compute_baskets
from centile.baskets.settings import parse_baskets

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "completejourney" / "transactions.parquet"

pytestmark = pytest.mark.skipif(not DATA.exists(), reason=f"real data not found at {DATA} (../shared/data)")
mlxtend = pytest.importorskip("mlxtend", reason="mlxtend is not installed (pip install -e '.[test]')")

MIN_SUPPORT = 0.004


@pytest.mark.parametrize(("max_size", "min_support"), [(2, MIN_SUPPORT), (3, 0.002)])
def test_rules_equal_mlxtend_fpgrowth_on_completejourney(max_size, min_support):
    import pandas as pd
    from mlxtend.frequent_patterns import association_rules, fpgrowth
    from mlxtend.preprocessing import TransactionEncoder

    tx = (pl.read_parquet(DATA, columns=["household_id", "basket_id", "product_id", "quantity", "week"])
          .filter(pl.col("week") <= 2, pl.col("quantity") > 0))
    lines = tx.select(pl.col("household_id").alias("customer_id"), pl.col("basket_id").alias("order_id"),
                      pl.col("product_id").alias("item"))
    # every split into antecedent and consequent, as mlxtend makes them
    ours = compute_baskets(lines, parse_baskets({"min_support": min_support, "min_count": 1, "segment_by": [],
                                                 "max_basket_items": 10_000, "max_size": max_size,
                                                 "all_splits": True}))
    baskets = lines.group_by("order_id").agg(pl.col("item").unique()).get_column("item").to_list()
    enc = TransactionEncoder()
    dense = pd.DataFrame(enc.fit(baskets).transform(baskets), columns=enc.columns_)
    freq = fpgrowth(dense, min_support=min_support, use_colnames=True, max_len=max_size)
    theirs = association_rules(freq, num_itemsets=len(baskets), metric="support", min_threshold=0.0)
    want = {(tuple(sorted(r.antecedents)), tuple(sorted(r.consequents))): r for r in theirs.itertuples()}

    def key(r):
        a = tuple(x for x in (r["antecedent"], r["antecedent_2"]) if x is not None)
        return a, tuple(x for x in (r["consequent"], r["consequent_2"]) if x is not None)
    got = {key(r): r for r in ours.rules.iter_rows(named=True)}
    assert len(want) > 20
    if max_size == 3:
        assert any(len(a) + len(c) == 3 for a, c in want)
    assert set(got) == set(want)
    for key, w in want.items():
        g = got[key]
        assert g["support"] == pytest.approx(w.support, rel=1e-9)
        assert g["confidence"] == pytest.approx(w.confidence, rel=1e-9)
        assert g["lift"] == pytest.approx(w.lift, rel=1e-9)
        assert g["leverage"] == pytest.approx(w.leverage, rel=1e-9, abs=1e-15)
        if math.isinf(g["conviction"]):
            assert math.isinf(w.conviction) or w.conviction > 1e12
        else:
            assert g["conviction"] == pytest.approx(w.conviction, rel=1e-9)
