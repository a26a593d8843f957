"""Issue 12: customer-hash partitions give the same outputs as one pass, and hold one slice at a time."""

from __future__ import annotations

import hashlib

import duckdb
import numpy as np
import polars as pl
import pytest

from centile.backend import partitions
from centile.backend.partitions import (
    BUCKETS,
    Partitioning,
    choose_partitions,
    duckdb_memory,
    memory_bytes,
)
from centile.backend.session import open_session
from centile.config import load_config
from centile.features.compute import FEATURE_TABLES, compute_features
from centile.synth import generate


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("parts")
    generate(root / "data", 3_000, seed=12)
    return root / "data"


def _features(data, **overrides):
    cfg = load_config(data=data, **overrides)
    with open_session(cfg, only=FEATURE_TABLES) as s:
        return compute_features(s)[0]


def test_features_are_identical_for_any_partition_count_and_thread_count(data):
    one = _features(data, partitions=1, threads=1)
    assert one.height > 2_500 and one["customer_id"].is_sorted()
    for parts, threads in ((7, 1), (7, 2), (3, 2), (1, 2)):
        other = _features(data, partitions=parts, threads=threads)
        assert other.equals(one, null_equal=True), (parts, threads)


def test_a_memory_bound_single_pass_joins_in_slices_with_the_same_table(data):
    """Under a memory budget that asks for partitions, one pass over the order lines still builds
    the per-customer tables, and only the final join runs slice by slice: same table."""
    one = _features(data, partitions=1, threads=1)
    cfg = load_config(data=data, threads=2)
    with open_session(cfg, only=FEATURE_TABLES) as s:
        s.parts = Partitioning(4)  # what a tight --memory-limit chooses on big inputs
        sliced = compute_features(s)[0]
        left = {r[0] for r in s.con.execute("SELECT table_name FROM duckdb_tables() WHERE temporary").fetchall()}
        views = {r[0] for r in s.con.execute("SELECT view_name FROM duckdb_views() WHERE temporary").fetchall()}
    assert sliced.equals(one, null_equal=True)
    assert not {"universe", "f_orders", "f_kept", "f_category", "order_facts"} & (left | views)
    assert not any(t.endswith("__all") for t in left)


def test_each_partition_sees_only_its_own_customers(data, monkeypatch):
    seen: list[tuple[int, int, int, set]] = []

    def observe(label, part, s):
        lines = s.con.execute("SELECT count(*) FROM orders").fetchall()[0][0]
        events = s.con.execute("SELECT count(*) FROM email_events").fetchall()[0][0]
        ids = {r[0] for r in s.con.execute("SELECT DISTINCT customer_id FROM orders").fetchall()}
        seen.append((part, lines, events, ids))

    monkeypatch.setattr(partitions, "observe", observe)
    cfg = load_config(data=data, partitions=5)
    with open_session(cfg, only=FEATURE_TABLES) as s:
        total_lines = s.con.execute("SELECT count(*) FROM orders").fetchall()[0][0]
        total_events = s.con.execute("SELECT count(*) FROM email_events").fetchall()[0][0]
        df = compute_features(s)[0]
        # the views are whole again after the partitions
        assert s.con.execute("SELECT count(*) FROM orders").fetchall()[0][0] == total_lines
    assert [p for p, *_ in seen] == [0, 1, 2, 3, 4]
    assert sum(n for _, n, _, _ in seen) == total_lines
    assert sum(e for _, _, e, _ in seen) == total_events
    for _, lines, _, _ids in seen:  # one slice at a time: about a fifth of the lines, disjoint customers
        assert 0 < lines < total_lines / 2
    all_ids = [i for *_, ids in seen for i in ids]
    assert len(all_ids) == len(set(all_ids))
    assert set(all_ids) <= set(df["customer_id"].to_list())


def test_choose_partitions_from_size_and_memory_limit():
    assert memory_bytes("8GB") == 8 * 1000**3
    assert memory_bytes("512 MiB") == 512 * 1024**2
    assert memory_bytes("lots") is None
    assert choose_partitions(4, "1GB", 10**9) == 4  # the configured count wins
    assert choose_partitions(None, "10GB", 1_000_000) == 1
    # 100M lines x 100 B = 10 GB against half of the 4 GB DuckDB leaves of an 8 GB limit: 5 partitions
    assert choose_partitions(None, "8GB", 100_000_000) == 5
    assert duckdb_memory("8GB") == 4 * 1000**3 and duckdb_memory(None) is None
    with pytest.raises(ValueError):
        Partitioning(0)
    assert Partitioning(1).predicate(0) == "true"
    seven = [Partitioning(7).bounds(p) for p in range(7)]
    assert seven[0][0] == 0 and seven[-1][1] == BUCKETS
    assert all(a[1] == b[0] and a[0] < a[1] for a, b in zip(seven, seven[1:], strict=False))
    # every id falls into exactly one partition, the one whose bucket range holds its bucket
    con = duckdb.connect()
    ids = "(SELECT range AS customer_id FROM range(-500, 2000))"
    member = con.execute(
        f"SELECT customer_id, CAST(hash(hash(customer_id), {partitions.SEED}) % {BUCKETS} AS INTEGER), "
        + ", ".join(f"{Partitioning(7).predicate(p)}" for p in range(7)) + f" FROM {ids}").fetchall()
    for _id, bucket, *inside in member:
        assert sum(inside) == 1
        lo, hi = seven[inside.index(True)]
        assert lo <= bucket < hi


@pytest.mark.parametrize("kind", ["BIGINT", "VARCHAR"])
def test_a_partitions_customers_spread_over_every_slot_of_a_group_by_on_the_id_and_a_constant(kind):
    """DuckDB hashes a group key ``(customer_id, w)`` as ``hash(customer_id) XOR hash(w)``. With the
    bucket taken from ``hash(customer_id, SEED)`` (also an XOR), a partition's ids kept fixed bits in
    that key's hash when ``w`` was constant: at 4 partitions their hashes fell into a quarter of
    the 65,536 values of the low 16 bits, and such a GROUP BY probed 100 times longer. The bucket
    must leave those bits free: a partition's 60,000 ids reach nearly every value."""
    con = duckdb.connect()
    ids = f"(SELECT CAST(range AS {kind}) AS customer_id FROM range(240000))"
    lo, hi = Partitioning(4).bounds(1)
    n, slots = con.execute(
        f"SELECT count(*), count(DISTINCT hash(customer_id, 0::BIGINT) % 65536) FROM {ids} "
        f"WHERE {partitions.bucket_sql()} >= {lo} AND {partitions.bucket_sql()} < {hi}").fetchall()[0]
    assert 55_000 < n < 65_000
    # n balls in 65,536 bins: about 65,536 (1 - exp(-n / 65,536)), about 39,000 here; a quarter is 16,384
    assert slots > 35_000


def test_partitions_key_is_validated(data):
    from centile.errors import ConfigError

    with pytest.raises(ConfigError, match="memory_limit 'lots' is not a size"):
        load_config(data=data, memory_limit="lots")

    with pytest.raises(ConfigError, match="partitions"):
        load_config(data=data, partitions="many")
    with pytest.raises(ConfigError, match="at most"):
        load_config(data=data, partitions=5000)


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_run_output_is_byte_identical_for_any_partition_count_and_thread_count(data, tmp_path):
    """The whole ``centile run`` (every stage the demo's config switches on) at P = 1 and P = 7,
    1 and 2 threads: the same bytes in every Parquet file."""
    from centile.run import run_pipeline

    toml = tmp_path / "c.toml"
    toml.write_text(f'data = "{data}"\n[steering]\nglobal_budget = 2000.0\ncap = 4\ngap = 1\n')
    runs = {}
    for parts, threads in ((1, 1), (7, 2)):
        out = tmp_path / f"p{parts}t{threads}"
        res = run_pipeline(load_config(toml, partitions=parts, threads=threads), out, report=False)
        assert res.stages["features"]["status"] == "ran"
        runs[(parts, threads)] = {p.name: _digest(p) for p in sorted(out.glob("*.parquet"))}
    a, b = runs[(1, 1)], runs[(7, 2)]
    assert len(a) >= 20 and a.keys() == b.keys()
    differ = [n for n in a if a[n] != b[n]]
    assert not differ, f"differ between P=1/1 thread and P=7/2 threads: {differ}"
    # the partitioned run spilled nowhere it left behind
    assert not list(tmp_path.glob(".p*.centile-*"))


def test_top_category_and_preferred_channel_equal_a_slow_reference(data):
    """The hash-aggregate forms of the two arg-max features against plain Python over the lines."""
    from collections import Counter, defaultdict
    from decimal import ROUND_HALF_UP, Decimal

    cfg = load_config(data=data, partitions=3)
    with open_session(cfg, only=FEATURE_TABLES) as s:
        df = compute_features(s)[0]
        lines = s.con.execute("SELECT customer_id, order_id, quantity, returned_quantity, unit_price, channel, "
                              "category FROM order_categories").fetchall()
    per_order: dict = defaultdict(list)
    revenue: dict = defaultdict(Decimal)
    q4 = Decimal("0.0001")
    for cid, oid, q, rq, price, channel, cat in lines:
        if q > 0:
            per_order[(cid, oid)].append(channel)
        if cat is not None:
            v = (q - rq) * price if q > 0 else q * price
            revenue[(cid, cat)] += Decimal(repr(v)).quantize(q4, ROUND_HALF_UP)
    counts: dict = defaultdict(Counter)
    for (cid, _oid), chans in per_order.items():
        named = [c for c in chans if c is not None]
        if named:
            counts[cid][min(named)] += 1
    want_channel = {cid: min(ch for ch, n in c.items() if n == max(c.values())) for cid, c in counts.items()}
    best: dict = {}
    for (cid, cat), v in revenue.items():
        if v > 0 and (cid not in best or v > best[cid][0] or (v == best[cid][0] and cat < best[cid][1])):
            best[cid] = (v, cat)
    got = dict(zip(df["customer_id"].to_list(), zip(df["preferred_channel"].to_list(),
                                                        df["top_category"].to_list(), strict=True), strict=True))
    for cid, (channel, top) in got.items():
        assert channel == want_channel.get(cid), cid
        assert top == (best[cid][1] if cid in best else None), cid


def test_attribution_builds_journeys_one_partition_at_a_time(data, monkeypatch):
    from centile.attribution.journeys import journeys_from_session

    seen: list[tuple[str, int]] = []
    monkeypatch.setattr(partitions, "observe", lambda label, part, s: seen.append(
        (label, s.con.execute("SELECT count(*) FROM touchpoints").fetchall()[0][0])))
    with open_session(load_config(data=data, partitions=4), only=("orders", "touchpoints")) as s:
        total = s.con.execute("SELECT count(*) FROM touchpoints").fetchall()[0][0]
        four = journeys_from_session(s, lookback_days=30)
    seen_four = list(seen)
    with open_session(load_config(data=data, partitions=1), only=("orders", "touchpoints")) as s:
        one = journeys_from_session(s, lookback_days=30)
    assert [label for label, _ in seen_four] == ["attribution"] * 4
    assert sum(n for _, n in seen_four) == total and max(n for _, n in seen_four) < total
    assert four.channels == one.channels
    for f in ("offsets", "channel", "age_days", "conv", "null", "value"):
        assert np.array_equal(getattr(four, f), getattr(one, f)), f
    assert four.customer_id.equals(one.customer_id)
    assert (four.unattributed_conversions, four.unattributed_value) == (
        one.unattributed_conversions, one.unattributed_value)


def test_the_runner_drops_frames_no_later_stage_reads(data, tmp_path):
    """Per-customer frames do not pile up over a run: a frame leaves memory after its last reader."""
    from centile.pipeline.runner import execute
    from centile.pipeline.stage import Stage

    seen = {}

    def make_a(ctx):
        df = pl.DataFrame({"customer_id": [1, 2, 3]})
        df.write_parquet(ctx.staging.path("a.parquet"))
        ctx.publish(a=df)
        return {"a": 3}

    def read_a(ctx):
        seen["b"] = "a" in ctx.frames and ctx.frame("a").height == 3
        return {}

    def after(ctx):
        seen["c"] = "a" in ctx.frames
        seen["c_reload"] = ctx.frame("a").height  # still readable from its file
        return {}

    stages = [Stage("ta", make_a, writes=("a",)), Stage("tb", read_a, reads=("a",)),
              Stage("tc", after, uses=("tb_none",))]
    execute(stages, load_config(data=data), tmp_path / "out")
    assert seen == {"b": True, "c": False, "c_reload": 3}


def test_a_frame_only_used_later_leaves_memory_and_is_read_back_by_column(data, tmp_path):
    """Issue 12: a frame stays in memory only for the next stage that reads it; a stage that uses it
    optionally gets the columns it names from the file, and nothing more is kept."""
    from centile.pipeline.runner import execute
    from centile.pipeline.stage import Stage

    seen = {}

    def make_a(ctx):
        df = pl.DataFrame({"customer_id": [3, 1, 2], "x": ["p", "q", "r"], "y": [1.0, 2.0, 3.0]})
        df.write_parquet(ctx.staging.path("a.parquet"))
        ctx.publish(a=df)
        return {"a": 3}

    def idle(ctx):
        seen["idle"] = "a" in ctx.frames
        return {}

    def narrow(ctx):
        seen["before"] = "a" in ctx.frames
        got = ctx.frame_columns("a", ("y", "missing"))
        seen["columns"], seen["rows"] = got.columns, got.rows()
        seen["after"] = "a" in ctx.frames
        seen["names"] = ctx.frame_names("a")
        seen["none"] = ctx.frame_columns("nope", ("y",))
        return {}

    stages = [Stage("ta", make_a, writes=("a",)), Stage("tb", idle, uses=("a",)),
              Stage("tc", narrow, uses=("a",))]
    execute(stages, load_config(data=data), tmp_path / "out")
    assert seen == {"idle": False, "before": False, "columns": ["customer_id", "y"],
                    "rows": [(3, 1.0), (1, 2.0), (2, 3.0)], "after": False, "names": ["customer_id", "x", "y"],
                    "none": None}
