"""Global figures from the customer tables (``Session.everywhere``): folded from the partitions they
equal one call over every customer, which is what lets a cluster compute them on its workers."""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter

import duckdb
import polars as pl
import pytest

from centile.attribution.compute import _media_of
from centile.backend.partitions import Partitioning
from centile.backend.session import _call_on_partition, add_by_key, open_session, sorted_union
from centile.baskets.lines import _distinct_items
from centile.clv.compute import _days_total
from centile.config import load_config
from centile.features.compute import category_totals
from centile.io.sqlfiles import read_sql
from centile.steering.compute import _cost_counts, median_of_counts
from centile.steering.history import _frame, responses_sql, spend_sql
from centile.synth import generate
from centile.uplift.inputs import _late_of


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    root = tmp_path_factory.mktemp("everywhere")
    generate(root / "data", 1_500, seed=21)
    with open_session(load_config(data=root / "data")) as s:
        yield s


FIGURES = [
    ("category totals", category_totals, add_by_key, ()),
    ("mean value", _days_total, add_by_key, (dt.date(2025, 6, 30),)),
    ("items", _distinct_items, sorted_union, ("product", True)),
    ("categories", _distinct_items, sorted_union, ("category", False)),
    ("late campaigns", _late_of, sorted_union, (400,)),
    ("media", _media_of, sorted_union, ()),
    ("costs", _cost_counts, add_by_key, ()),
]


@pytest.mark.parametrize(("name", "fn", "merge", "args"), FIGURES, ids=[f[0] for f in FIGURES])
@pytest.mark.parametrize("count", [2, 5])
def test_a_figure_folded_from_the_partitions_equals_one_call_over_every_customer(session, name, fn, merge, args,
                                                                                 count):
    whole = fn(session, *args)
    folded = session.map_reduce(Partitioning(count), name, _call_on_partition, merge, fn, *args)
    if isinstance(whole, pl.DataFrame):
        assert whole.height > 0 and folded.equals(whole)
    else:
        assert whole and folded == whole


def test_per_customer_rows_from_the_partitions_are_the_rows_of_one_call(session):
    for sql, params in ((spend_sql(read_sql("steering_spend_sums")), None),
                        (responses_sql(read_sql("steering_order_times")), {"as_of": session.as_of, "window": 14})):
        whole = _frame(session, sql, params)
        parts = session.map_partitions(Partitioning(3), "rows", _call_on_partition, _frame, sql, params)
        keys = [c for c in ("customer_id", "medium", "control") if c in whole.columns]
        assert whole.height > 0
        assert pl.concat(parts).sort(keys).equals(whole.sort(keys))


def test_add_by_key_adds_exact_sums_and_skips_nulls():
    from decimal import Decimal

    a = {"x": Decimal("1.10"), "y": (Decimal("2.5"), 3), "z": None}
    b = {"x": Decimal("0.20"), "y": (None, 2), "z": Decimal("4"), "w": 7}
    assert add_by_key(a, b) == {"x": Decimal("1.30"), "y": (Decimal("2.5"), 5), "z": Decimal("4"), "w": 7}
    assert a == {"x": Decimal("1.10"), "y": (Decimal("2.5"), 3), "z": None}  # left as it was


def test_the_median_of_counted_values_is_sqls_median():
    con = duckdb.connect()
    rng = random.Random(5)
    for _ in range(500):
        values = [rng.choice([rng.uniform(0, 1e3), 0.1, 0.7, 2.5, 1e16 + rng.random()])
                  for _ in range(rng.randint(1, 9))]
        con.execute("CREATE OR REPLACE TABLE t AS SELECT unnest($v)::DOUBLE AS x", {"v": values})
        assert median_of_counts(list(Counter(values).items())) == con.execute("SELECT median(x) FROM t").fetchone()[0]
