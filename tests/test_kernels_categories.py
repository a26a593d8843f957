"""centile.kernels.categories against the plain reference and against the SQL it replaced."""

import duckdb
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from centile.features.compute import _share_names, category_columns
from centile.kernels.categories import category_pivot
from centile.kernels.category_sort import category_pivot_sorted
from tests import reference as ref

_I128 = 1 << 127


def _words(net):
    """The (hi, lo) int64 words of Python ints as 128-bit two's complement."""
    u = [n % (1 << 128) for n in net]
    hi = np.array([(x >> 64) - (1 << 64) if x >> 127 else x >> 64 for x in u], np.int64)
    lo = np.array([(x & ((1 << 64) - 1)) - (1 << 64) if x & (1 << 63) else x & ((1 << 64) - 1) for x in u],
                  np.int64)
    return hi, lo


@st.composite
def pivot_inputs(draw):
    customers = draw(st.integers(0, 6))
    categories = draw(st.integers(1, 5))
    cells = draw(st.lists(st.tuples(st.integers(0, max(customers - 1, 0)), st.integers(0, categories - 1)),
                          unique=True, max_size=customers * categories)) if customers else []
    small = st.integers(-3, 3)  # ties and signs
    big = st.integers(-_I128, _I128 - 1)  # both words
    near = st.sampled_from([0, 1, -1, (1 << 64) - 1, 1 << 64, -(1 << 64), 1 << 63, (1 << 63) - 1])
    net = [draw(st.one_of(small, big, near)) for _ in cells]
    top = draw(st.lists(st.integers(-1, categories - 1), max_size=4))
    return customers, categories, [p for p, _ in cells], [c for _, c in cells], net, top


@settings(max_examples=200)
@given(pivot_inputs())
@pytest.mark.parametrize("pivot", [category_pivot, category_pivot_sorted])
def test_category_pivot_matches_reference(pivot, case):
    customers, categories, pos, code, net, top = case
    value = [float(n) for n in net]
    hi, lo = _words(net)
    best, values = pivot(np.array(pos, np.int64), np.array(code, np.int32), hi, lo,
                         np.array(value), customers, categories, top)
    want_best, want_values = ref.category_pivot(pos, code, net, value, customers, top)
    assert best.tolist() == want_best
    assert values.shape == (len(top), customers)
    assert values.tolist() == [list(v) for v in want_values]


def test_the_sorting_pivot_equals_the_kernel_on_many_rows():
    rng = np.random.default_rng(5)
    pos = np.repeat(np.arange(20_000), 6)
    code = np.tile(np.arange(6, dtype=np.int32), 20_000)
    keep = rng.random(pos.size) < 0.7
    net = rng.integers(-4, 5, pos.size)  # many ties and non-positive rows
    net[::97] = rng.integers(-(1 << 62), 1 << 62, net[::97].size) * 8  # wide values in both words
    hi, lo = _words([int(n) * (1 << 40) if i % 5 == 0 else int(n) for i, n in enumerate(net)])
    args = (pos[keep], code[keep], hi[keep], lo[keep], net[keep].astype(float), 20_000, 6, [3, 0, 3, -1])
    one, other = category_pivot(*args), category_pivot_sorted(*args)
    assert np.array_equal(one[0], other[0]) and np.array_equal(one[1], other[1])


def test_category_pivot_does_not_depend_on_row_order():
    rng = np.random.default_rng(3)
    pos = np.repeat(np.arange(500), 4)
    code = np.tile(np.arange(4, dtype=np.int32), 500)
    net = rng.integers(-5, 6, pos.size)  # many ties
    hi, lo = _words(net.tolist())
    args = (500, 4, [2, 0])
    one = category_pivot(pos, code, hi, lo, net.astype(float), *args)
    perm = rng.permutation(pos.size)
    other = category_pivot(pos[perm], code[perm], hi[perm], lo[perm], net[perm].astype(float), *args)
    assert np.array_equal(one[0], other[0]) and np.array_equal(one[1], other[1])


def test_category_pivot_checks_its_inputs():
    z = np.zeros(1, np.int64)
    with pytest.raises(ValueError, match="same length"):
        category_pivot(z, np.zeros(2, np.int32), z, z, np.zeros(1), 1, 1, [])
    with pytest.raises(ValueError, match="pos"):
        category_pivot(z + 1, np.zeros(1, np.int32), z, z, np.zeros(1), 1, 1, [])
    with pytest.raises(ValueError, match="code"):
        category_pivot(z, np.ones(1, np.int32), z, z, np.zeros(1), 1, 1, [])


#: the SQL the kernel replaced in the feature job: the shares of the top categories and the top
#: category as the least (-net revenue, name) among the positive ones
_SQL = """
WITH c AS (
  SELECT customer_id,
         min(struct_pack(r := -net_revenue, c := category)) FILTER (WHERE net_revenue > 0) AS best{pivot}
  FROM f_category GROUP BY customer_id
)
SELECT f.customer_id, CAST(c.best.c AS VARCHAR) AS top_category{shares}
FROM f LEFT JOIN c USING (customer_id)
ORDER BY f.customer_id
"""


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_category_columns_equal_the_sql(data):
    customers = data.draw(st.integers(0, 12))
    names = ["b", "a", "Z", "bb", "é", "a b"]
    cells = data.draw(st.lists(st.tuples(st.integers(0, 14), st.sampled_from(names)), unique=True, max_size=40))
    cents = st.one_of(st.integers(-20_000, 20_000), st.sampled_from([0, 10**20, -(10**20), 10**33]))
    net = [data.draw(cents) for _ in cells]
    nrl = [data.draw(st.sampled_from([0.0, -1.5, 3.0, 1e-9, 12345.678, 1e30])) for _ in range(customers)]
    top = data.draw(st.lists(st.sampled_from([*names, "absent"]), unique=True, max_size=4))
    con = duckdb.connect()
    con.execute("CREATE TABLE f (customer_id BIGINT, net_revenue_lifetime DOUBLE)")
    if nrl:
        con.executemany("INSERT INTO f VALUES (?, ?)", list(enumerate(nrl)))
    con.execute("CREATE TABLE f_category (customer_id BIGINT, category VARCHAR, net_revenue DECIMAL(38, 4))")
    if cells:  # customers 12-14 are not in f: left out, as the SQL's LEFT JOIN does
        con.executemany("INSERT INTO f_category VALUES (?, ?, CAST(? AS HUGEINT) / 10000::DECIMAL(38, 4))",
                        [(p, c, str(n)) for (p, c), n in zip(cells, net, strict=True)])
    share = _share_names(top)
    pivot = "".join(f", sum(net_revenue) FILTER (WHERE category = ${i + 1}) AS s{i}" for i in range(len(top)))
    shares = "".join(f", CAST(CASE WHEN f.net_revenue_lifetime > 0 THEN coalesce(c.s{i}, 0) "
                     f"/ f.net_revenue_lifetime END AS DOUBLE) AS {n}" for i, n in enumerate(share))
    want = con.sql(_SQL.format(pivot=pivot, shares=shares), params=top or None).pl()
    base = con.sql("SELECT * FROM f").pl().sample(fraction=1.0, shuffle=True, seed=customers)  # any row order
    got = base.select("customer_id").hstack(category_columns(con, base, top)).sort("customer_id")
    assert got.equals(want, null_equal=True)
    assert got.schema == want.schema
