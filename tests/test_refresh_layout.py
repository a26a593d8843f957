"""The refresh state's search structures: sorted line-hash runs (centile.refresh.hashes) and the
feature tables' runs sorted by customer (centile.refresh.gather), and states written before them."""

from __future__ import annotations

import datetime as dt
import json

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from centile.refresh import features_from_state, ingest
from centile.refresh import gather as ga
from centile.refresh import hashes as lh
from tests.test_refresh import ORDER_SCHEMA, _one_batch, assert_same, full_features, state_cfg


def test_hash_runs_are_sorted_by_day_and_hash_one_row_each_and_pruned(tmp_path):
    rng = np.random.default_rng(7)
    h = rng.integers(0, 2**64 - 1, 5000, dtype=np.uint64, endpoint=True)
    day = rng.integers(19000, 19040, 5000).astype(np.int32)
    n = lh.write_run(tmp_path / "a.arrow", np.concatenate([h, h[:100]]), np.concatenate([day, day[:100]]))
    got, got_day, ordered = lh.read_run(tmp_path / "a.arrow")
    assert ordered and n == 5000
    assert np.all((got_day[1:] > got_day[:-1]) | ((got_day[1:] == got_day[:-1]) & (got[1:] > got[:-1])))
    assert sorted(zip(got.tolist(), got_day.tolist(), strict=True)) == sorted(zip(h.tolist(), day.tolist(),
                                                                                  strict=True))
    # found: the same hash on the same day; not: another day, or a hash not kept
    probe = np.concatenate([h[::7], h[1::7], np.array([0, 2**64 - 1, 12345], dtype=np.uint64)])
    probe_day = np.concatenate([day[::7], day[1::7] + 100, np.full(3, 19010, np.int32)])
    assert sorted(lh.seen([tmp_path / "a.arrow"], probe, probe_day).tolist()) == sorted(h[::7].tolist())
    # a Parquet run of a state written before (customer_id, h, day; unsorted) is read as it is
    old = rng.integers(0, 2**63, 300, dtype=np.uint64)
    pq.write_table(pa.table({"customer_id": pa.array(np.arange(300)), "h": pa.array(old, pa.uint64()),
                             "day": pa.array(np.full(300, 19050, np.int32)).cast(pa.date32())}),
                   tmp_path / "old.parquet")
    found = lh.seen([tmp_path / "a.arrow", tmp_path / "old.parquet"], np.concatenate([old[:5], h[:5]]),
                    np.concatenate([np.full(5, 19050, np.int32), day[:5]]))
    assert set(found.tolist()) == set(old[:5].tolist()) | set(h[:5].tolist())
    # merged with the days before the cutoff pruned
    cut = dt.date(1970, 1, 1) + dt.timedelta(days=19020)
    n = lh.write_run(tmp_path / "m.arrow", np.array([1, 2], np.uint64), np.array([19045, 19001], np.int32),
                     [tmp_path / "a.arrow", tmp_path / "old.parquet"], cut)
    mh, md, _ = lh.read_run(tmp_path / "m.arrow")
    assert n == int((day >= 19020).sum()) + 300 + 1 and md.min() >= 19020 and np.all(md[1:] >= md[:-1])
    assert 1 in mh and 2 not in mh


def test_gather_takes_exactly_the_rows_of_the_customers(tmp_path):
    con = duckdb.connect()
    for kind, ids in (("BIGINT", [3, 17, 18, 999, -2]), ("VARCHAR", ["3", "17", "18", "999", "a"])):
        con.execute(f"CREATE OR REPLACE TABLE t AS SELECT CAST(i % 40 AS {kind}) AS customer_id, i AS v "
                    "FROM range(1000) r(i) ORDER BY random()")
        ga.write_sorted(con, "t", ("customer_id", "v"), tmp_path / "t.sorted.arrow")
        con.execute("CREATE OR REPLACE TABLE e AS SELECT * FROM t WHERE false")
        ga.write_sorted(con, "e", ("customer_id",), tmp_path / "e.sorted.arrow")
        got = pl.from_arrow(ga.rows_of([tmp_path / "t.sorted.arrow", tmp_path / "e.sorted.arrow"],
                                       pl.Series(ids)))
        want = con.sql("SELECT * FROM t ORDER BY customer_id, v").pl().filter(pl.col("customer_id").is_in(ids))
        assert got.sort("customer_id", "v").equals(want) and want.height == 75
    assert ga.rows_of([], pl.Series([1])) is None


def _day_batch(tmp_path, i):
    """Batch ``i``: five lines of customers 1-6 on 2024-03-0(i+1); on the first day also customers
    10-29, who buy on that day only (their rows stand in the cache at the end)."""
    day = dt.datetime(2024, 3, 1 + i, 9)
    rows = [(1 + (i + k) % 6, f"o{i}-{k}", day, 5.0 + k, 1.0 + k % 2, 0.0, 1 + k % 2, "a", "web")
            for k in range(5)]
    rows += [(c, f"q{c}", day, 3.0, 1.0, 0.0, 2, "b", "shop") for c in range(10, 30) if i == 0]
    return _one_batch(tmp_path, f"b{i}.parquet", rows)


def test_a_state_written_before_the_sorted_files_is_read_and_ingested(tmp_path):
    state, orders = tmp_path / "s", []
    for i in range(4):
        orders.append(_day_batch(tmp_path, i))
        ingest(state_cfg(), state, [orders[-1]])
        features_from_state(state_cfg(), state)
    # as an earlier centile left it: no sorted files, the line hashes as Parquet runs
    doc = json.loads((state / "manifest.json").read_text())
    for part in doc["parts"]:
        for table, runs in part["runs"].items():
            for r in runs:
                r.pop("gather", None)
                if table == "hashes":
                    h, day, _ = lh.read_run(state / r["file"])
                    old = r["file"].replace(".arrow", ".parquet")
                    pq.write_table(pa.table({"customer_id": pa.array(np.zeros(h.size, np.int64)),
                                             "h": pa.array(h, pa.uint64()),
                                             "day": pa.array(day, pa.int32()).cast(pa.date32())}), state / old)
                    r["file"] = old
    (state / "manifest.json").write_text(json.dumps(doc))
    for f in [*state.glob("p*/*.sorted.arrow"), *state.glob("p*/hashes-*.arrow")]:
        f.unlink()
    # a batch with a line applied before (set aside by the old runs) and a new one
    again = pl.read_parquet(orders[1]).head(1)
    new = pl.DataFrame([(2, "n1", dt.datetime(2024, 3, 5, 9), 9.0, 1.0, 0.0, 2, "b", "shop")],
                       schema=ORDER_SCHEMA, orient="row")
    orders.append(tmp_path / "b4.parquet")
    pl.concat([again, new]).write_parquet(orders[-1])
    res = ingest(state_cfg(), state, [orders[-1]])
    assert res.rejects["orders"] == {"duplicate line": 1} and res.rows["orders"] == 1
    stats: dict[str, int] = {}
    assert_same(features_from_state(state_cfg(), state, stats=stats)[0],
                full_features(orders, [], dt.date(2024, 3, 6)))
    assert stats["cached"] > 0


def test_without_sorted_copies_the_runs_are_scanned_and_a_state_may_mix_both(tmp_path):
    """``[refresh] sorted_copies = false`` writes no customer-sorted copies (a quarter of the disk
    space); the features are the same, and a later ingest with copies leaves a state of both kinds."""
    from types import MappingProxyType

    def cfg(copies: bool):  # no merge of runs: the state keeps runs of both kinds
        refresh = {"lateness_days": 2, "partitions": 3, "max_runs": 8, "sorted_copies": copies}
        return state_cfg().with_(sections=MappingProxyType({"refresh": MappingProxyType(refresh)}))

    state, orders = tmp_path / "s", []
    for i in range(4):
        orders.append(_day_batch(tmp_path, i))
        ingest(cfg(i >= 2), state, [orders[-1]])
        if i == 1:
            assert not list(state.glob("p*/*.sorted.arrow"))
            assert not any(r.get("gather") for part in json.loads((state / "manifest.json").read_text())["parts"]
                           for runs in part["runs"].values() for r in runs)
        assert_same(features_from_state(cfg(i >= 2), state)[0],
                    full_features(orders, [], dt.date(2024, 3, 2 + i)))
    runs = [r for part in json.loads((state / "manifest.json").read_text())["parts"]
            for runs in part["runs"].values() for r in runs]
    assert any(r.get("gather") for r in runs) and any("gather" not in r and r["file"].endswith(".parquet")
                                                      and "hashes" not in r["file"] for r in runs)
