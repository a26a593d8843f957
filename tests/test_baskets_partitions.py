"""Issue 12 for baskets and recommendations: per customer partition, identical outputs, one slice at a time."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from centile.backend import partitions
from centile.baskets.job import run_baskets, run_recommend
from centile.baskets.recommend import compute_recommendations, evaluate
from centile.baskets.settings import parse_recommend
from centile.config import load_config
from centile.kernels.pairs import merge_counts

FILES = ("basket_itemsets", "basket_rules", "basket_summary", "recommendations", "recommendation_eval")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from centile.synth import generate

    root = tmp_path_factory.mktemp("bparts")
    generate(root / "data", 3_000, seed=15)
    customers = pl.read_parquet(root / "data" / "customers.parquet")
    # segments for the per-segment rules and the popularity fallback, with customers without a value and
    # customers without any order line
    seg = customers.select(
        "customer_id", pl.col("region").alias("rfm_segment"),
        pl.when(pl.col("customer_id") % 7 == 0).then(None).otherwise(pl.col("gender")).alias("club"))
    extra = pl.DataFrame({"customer_id": [10**9, 10**9 + 1], "rfm_segment": ["north", "nowhere"],
                          "club": ["f", None]}, schema=seg.schema)
    return root / "data", pl.concat([seg, extra])


def _cfg(tmp, data, **kw):
    cfg = tmp / "c.toml"
    cfg.write_text(f'data = "{data}"\n[baskets]\nmin_count = 3\nmax_size = 3\n'
                   '[recommend]\nk = 5\nmin_pair_count = 2\n')
    return load_config(cfg, **kw)


def _both(tmp, data, seg, **kw):
    cfg = _cfg(tmp, data, **kw)
    out = tmp / f"out-{kw.get('partitions')}-{kw.get('threads')}"
    b = run_baskets(cfg, out, segments=seg)
    r = run_recommend(cfg, out, segments=seg, evaluate=dt.date(2025, 7, 1))
    return out, b, r


def test_outputs_are_identical_for_any_partition_and_thread_count(data, tmp_path):
    path, seg = data
    base, b, r = _both(tmp_path, path, seg, partitions=1, threads=1)
    assert b.rules is None and b.itemsets is None  # written a segment at a time
    assert pl.read_parquet(base / "basket_rules.parquet").height == b.summary["rules"].sum() > 0
    assert pl.read_parquet(base / "basket_itemsets.parquet").filter(pl.col("size") == 3).height > 0
    assert set(b.summary["segment_by"]) == {"all", "club", "rfm_segment"}
    recs = r.recommendations
    assert recs.select("customer_id", "rank").is_duplicated().sum() == 0
    assert recs.equals(recs.sort("customer_id", "rank"))
    # customers of the segments without a line get their segment's popular items
    assert set(recs.filter(pl.col("customer_id") >= 10**9)["source"]) == {"popularity"}
    assert r.evaluation.height == 4
    want = {f: (base / f"{f}.parquet").read_bytes() for f in FILES}
    for parts, threads in ((7, 1), (7, 2), (1, 2), (3, 2)):
        other, _b, _r = _both(tmp_path, path, seg, partitions=parts, threads=threads)
        for f in FILES:
            assert (other / f"{f}.parquet").read_bytes() == want[f], (f, parts, threads)
        assert not list(tmp_path.glob(".*centile-spill*")), "the parked partitions are removed"


def test_each_partition_holds_only_its_own_lines(data, tmp_path, monkeypatch):
    path, seg = data
    seen: dict[str, list[tuple[int, int, set]]] = {}

    def observe(label, part, s):
        lines = s.con.execute("SELECT count(*) FROM orders").fetchall()[0][0]
        ids = {r[0] for r in s.con.execute("SELECT DISTINCT customer_id FROM orders").fetchall()}
        seen.setdefault(label, []).append((part, lines, ids))

    read: list[int] = []
    import centile.baskets.parts as parts_mod

    each = parts_mod.SessionLines.each

    def counting_each(self, label):
        for lines in each(self, label):
            read.append(lines.height)
            yield lines

    monkeypatch.setattr(partitions, "observe", observe)
    monkeypatch.setattr(parts_mod.SessionLines, "each", counting_each)
    cfg = _cfg(tmp_path, path, partitions=5)
    run_baskets(cfg, tmp_path / "b", segments=seg)
    run_recommend(cfg, tmp_path / "r", segments=seg, evaluate=dt.date(2025, 7, 1))
    whole = pl.read_parquet(path / "orders")
    total = whole.height
    assert set(seen) == {"baskets: items", "recommend: histories"}, "each stage reads its lines once"
    for label, parts in seen.items():
        assert [p for p, _, _ in parts] == [0, 1, 2, 3, 4], label
        assert sum(n for _, n, _ in parts) == total
        for _, n, _ in parts:  # one slice at a time: about a fifth of the lines
            assert 0 < n < total / 2
        ids = [i for *_, s in parts for i in s]
        assert len(ids) == len(set(ids)), "disjoint customers"
    # what each pass held in memory is one partition's lines, never all of them
    assert len(read) == 10 and max(read) < total / 2


def _lines(seed=3, n=3000):
    rng = np.random.default_rng(seed)
    rows = []
    base = dt.datetime(2024, 1, 1)
    for t in range(n):
        c = int(rng.integers(0, 250))
        day = base + dt.timedelta(days=int(rng.integers(0, 365)))
        start = int(rng.integers(0, 30))
        for i in set(rng.integers(start, start + 8, int(rng.integers(1, 5))).tolist()):
            rows.append((c, t, day, f"p{i:02d}", bool(rng.random() > 0.05)))
    return pl.DataFrame(rows, schema={"customer_id": pl.Int64, "order_id": pl.Int64, "order_ts": pl.Datetime("us"),
                                      "item": pl.String, "kept": pl.Boolean}, orient="row")


def test_in_memory_recommendations_and_evaluation_do_not_depend_on_partitions():
    lines = _lines()
    seg = pl.DataFrame({"customer_id": list(range(0, 270)), "rfm_segment": ["x", "y", "z"] * 90})
    st_ = parse_recommend({"k": 4, "new_only": False})
    one = compute_recommendations(lines, st_, dt.date(2025, 1, 1), seg, evaluate_cutoff=dt.date(2024, 9, 1))
    for parts in (2, 5):
        other = compute_recommendations(lines, st_, dt.date(2025, 1, 1), seg, evaluate_cutoff=dt.date(2024, 9, 1),
                                        partitions=parts)
        assert other.recommendations.equals(one.recommendations)
        assert other.evaluation.equals(one.evaluation)
        ev, _notes = evaluate(lines, st_, dt.date(2024, 9, 1), seg, partitions=parts)
        assert ev.equals(one.evaluation)


keys_st = st.dictionaries(st.integers(0, 60), st.integers(1, 5), max_size=30)


@given(keys_st, keys_st)
def test_merge_counts_adds_like_a_dict(a, b):
    ka, kb = sorted(a), sorted(b)
    keys, counts = merge_counts(ka, [a[k] for k in ka], kb, [b[k] for k in kb])
    want = {k: a.get(k, 0) + b.get(k, 0) for k in set(a) | set(b)}
    assert keys.tolist() == sorted(want)
    assert counts.tolist() == [want[k] for k in sorted(want)]


def test_merge_counts_refuses_unsorted_keys():
    with pytest.raises(ValueError, match="increasing"):
        merge_counts([2, 1], [1, 1], [], [])


def test_recommendations_are_written_a_slice_of_customers_at_a_time(data, tmp_path, monkeypatch):
    """The long table is made and written one slice of customers per row group; the file holds the
    same rows as the whole table, and its bytes do not depend on the partition count."""
    import pyarrow.parquet as pq

    from centile.baskets import recommend as rec

    path, seg = data
    monkeypatch.setattr(rec, "SLICE_CUSTOMERS", 500)
    files = []
    for parts in (1, 4):
        cfg = _cfg(tmp_path, path, partitions=parts)
        out = tmp_path / f"sliced-{parts}"
        r = run_recommend(cfg, out, segments=seg)
        f = out / "recommendations.parquet"
        meta = pq.ParquetFile(f).metadata
        assert meta.num_row_groups == -(-r.recs.customers.len() // 500) > 1
        assert pl.read_parquet(f).equals(r.recommendations)
        assert r.recs.height == meta.num_rows == r.recommendations.height
        files.append(f.read_bytes())
    assert files[0] == files[1]


def test_segment_frame_holds_only_the_columns_a_stage_groups_by():
    """Issue 12: baskets and recommend get customer_id and their segment columns only, not a copy of
    every segmentation of every customer joined with the clubs."""
    from centile.baskets.stage import segment_frame

    seg = pl.DataFrame({"customer_id": [1, 2, 3], "rfm_segment": ["a", "b", "c"], "lifecycle": ["x", "y", "z"],
                        "cluster": [0, 1, 2]})
    clubs = pl.DataFrame({"customer_id": [2, 4], "club": ["c1", "c2"]})

    class Ctx:  # the two ways a stage reads a frame (Context.frame_or_none, Context.frame_columns)
        def frame_or_none(self, name):
            return {"segments": seg, "clubs": clubs}[name]

        def frame_columns(self, name, columns):
            df = self.frame_or_none(name)
            return df.select([c for c in df.columns if c in {"customer_id", *columns}])

    both = segment_frame(Ctx(), ("club", "rfm_segment"))
    assert both.columns == ["customer_id", "rfm_segment", "club"]
    assert both.sort("customer_id").rows() == [(1, "a", None), (2, "b", "c1"), (3, "c", None), (4, None, "c2")]
    assert segment_frame(Ctx(), ("rfm_segment",)).columns == ["customer_id", "rfm_segment"]
    assert segment_frame(Ctx(), ()).columns == ["customer_id"]
    assert segment_frame(Ctx()).columns == ["customer_id", "rfm_segment", "lifecycle", "cluster", "club"]
