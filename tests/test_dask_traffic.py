"""Issue 16: what each stage sends to the client on a cluster, measured by the run itself.

Every stage record of ``manifest.json`` holds ``network`` on the Dask backend: the bytes its
per-partition steps sent to the workers and back to the client (through the scheduler and through
frame files in the scratch folder). Those bytes are per-customer rows, merged states or merged
counts above a threshold, never order lines: doubling every customer's order lines leaves them
about where they were.
"""

from __future__ import annotations

import functools
import json
import shutil

import numpy as np
import polars as pl
import pytest

distributed = pytest.importorskip("distributed")

from centile.backend.base import network_delta  # noqa: E402
from centile.backend.partitions import Partitioning  # noqa: E402
from centile.baskets import remote  # noqa: E402
from centile.config import load_config  # noqa: E402
from centile.synth import generate  # noqa: E402


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """The same customers twice: as generated, and with every order line twice (a second line of the
    same product in the same order, a cent dearer, so that validation keeps it: the same orders and
    baskets, twice the lines)."""
    root = tmp_path_factory.mktemp("traffic")
    generate(root / "base", 1_500, seed=16)
    shutil.copytree(root / "base", root / "double")
    folder = root / "double" / "orders"
    files = sorted(folder.glob("*.parquet"))
    orders = pl.concat([pl.read_parquet(f) for f in files])
    for f in files:
        f.unlink()
    pl.concat([orders, orders.with_columns(pl.col("unit_price") + 0.01)]).write_parquet(folder / "part-0.parquet")
    return root / "base", root / "double", orders.height


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  silence_logs=40) as c:
        yield c


def _network(data, out, scheduler):
    from centile.run import run_pipeline

    run_pipeline(load_config(data=str(data), backend="dask", scheduler=scheduler), out, report=False, force=True)
    doc = json.loads((out / "manifest.json").read_text())
    return doc, {name: rec["network"] for name, rec in doc["stages"].items() if "network" in rec}


def test_each_stage_records_its_bytes_to_the_client_and_they_do_not_grow_with_the_order_lines(
        datasets, cluster, tmp_path):
    base, double, lines = datasets
    doc, one = _network(base, tmp_path / "one", cluster.scheduler_address)
    doc2, two = _network(double, tmp_path / "two", cluster.scheduler_address)
    valid = [d["summary"]["inputs"]["tables"]["orders"]["rows_valid"] for d in (doc, doc2)]
    assert valid == [lines, 2 * lines]
    # every stage with per-partition steps says what they moved, and the stages add up to the run's steps
    assert {"features", "clv", "baskets", "recommend", "uplift", "attribution"} <= one.keys()
    steps = doc["summary"]["backend"]["partitions"]
    assert sorted(label for net in one.values() for label in net["steps"]) == sorted(steps)
    for net in one.values():
        assert net["bytes_to_client"] == sum(s["bytes_to_client"] + s["bytes_via_files"] for s in net["steps"].values())
    # the order lines doubled; what the client gets did not grow (pickled states vary by a few bytes)
    for stage, net in one.items():
        assert two[stage]["bytes_to_client"] <= 1.01 * net["bytes_to_client"] + 1_024, stage
    # the pair counts below the support threshold stayed on the workers
    pairs = one["baskets"]["steps"]["baskets: pairs"]
    assert pairs["bytes_held_on_workers"] > pairs["bytes_to_client"]
    # every byte to the workers is of one of the three kinds; the customers' segments and ids go to
    # recommend's histories once, split by partition (the item dictionary is broadcast)
    for net in one.values():
        for st in net["steps"].values():
            assert st["bytes_to_workers"] == st["bytes_per_task"] + st["bytes_broadcast"] + st["bytes_per_customer"]
    # (more than the ids of every customer twice: the ids, and the ids with their segment)
    hist = one["recommend"]["steps"]["recommend: histories"]
    ids = pl.read_parquet(tmp_path / "one" / "segments.parquet").select("customer_id")
    assert hist["bytes_per_customer"] > 2 * ids.estimated_size() and hist["bytes_broadcast"] > 0


def test_network_delta_is_a_stage_share_of_the_running_totals():
    before = {"features": {"tasks": 4, "bytes_to_workers": 10, "bytes_to_client": 5, "bytes_via_files": 100,
                           "bytes_held_on_workers": 0, "open_s": 1.0, "work_s": 2.0}}
    after = {**before, "clv": {"tasks": 4, "bytes_to_workers": 20, "bytes_to_client": 7, "bytes_via_files": 50,
                               "bytes_held_on_workers": 0, "open_s": 0.5, "work_s": 0.25}}
    net = network_delta(before, after)
    assert net == {"tasks": 4, "bytes_to_workers": 20, "bytes_per_task": 0, "bytes_broadcast": 0,
                   "bytes_per_customer": 0, "bytes_to_client": 57, "bytes_held_on_workers": 0,
                   "steps": {"clv": after["clv"]}}
    assert network_delta(after, after) == {}
    assert network_delta({}, {}) == {}


def test_the_finish_step_runs_on_the_merged_state_alike_here_and_on_the_cluster(datasets, cluster):
    """``map_reduce(..., finish=...)``: the pair threshold applied to the merged counts gives the
    same arrays in this process and on the cluster, and equals thresholding the unfinished merge."""
    base, _double, _lines = datasets
    m, thr = 97, {("all", "all"): 3}
    got = []
    for over in ({}, {"backend": "dask", "scheduler": cluster.scheduler_address}):
        from centile.backend import open_backend

        cfg = load_config(data=str(base), **over)
        with open_backend(cfg) as backend, backend.open(only=("orders",)) as s:
            parts = Partitioning(4)
            merged = s.map_reduce(parts, "t", _pair_state, remote._add_pairs, m, tables=("orders",))
            done = s.map_reduce(parts, "t", _pair_state, remote._add_pairs, m, tables=("orders",),
                                finish=functools.partial(remote._frequent_pairs, thr))
        keys, counts = merged[("all", "all")]
        want = (keys[counts >= 3], counts[counts >= 3])
        assert 0 < want[0].size < keys.size
        assert all(np.array_equal(x, y) for x, y in zip(done[("all", "all")], want, strict=True))
        got.append(done)
    assert all(np.array_equal(x, y) for x, y in zip(got[0][("all", "all")], got[1][("all", "all")], strict=True))


def test_a_per_customer_frame_reaches_each_task_as_its_partition_rows_only(datasets, cluster):
    """``PerCustomer(frame)``: on the cluster partition p's task gets the frame's rows of p's customers
    (sent once in all, not to every worker); in this process the whole frame. The task's join gives
    the same either way."""
    from centile.backend import open_backend
    from centile.backend.partitions import PerCustomer

    base, _double, _lines = datasets
    segments = pl.read_parquet(sorted((base / "orders").glob("*.parquet"))).select("customer_id").unique().sort(
        "customer_id").with_columns(seg=(pl.col("customer_id") % 5).cast(pl.String))
    got = []
    for over in ({}, {"backend": "dask", "scheduler": cluster.scheduler_address}):
        cfg = load_config(data=str(base), **over)
        with open_backend(cfg) as backend, backend.open(only=("orders",)) as s:
            parts = Partitioning(4)
            got.append(s.map_partitions(parts, "t", _joined_segments, PerCustomer(segments), tables=("orders",)))
            moved = backend.moved()
        if over:
            sent = moved["t"]["bytes_to_workers"]
            assert sent < 2 * segments.estimated_size()  # not once per worker (2 here) on top of the task args
            # by kind: the frame once as per-customer bytes, nothing broadcast, the rest the tasks' own
            assert moved["t"]["bytes_per_customer"] == segments.estimated_size()
            assert moved["t"]["bytes_broadcast"] == 0
            assert sent == moved["t"]["bytes_per_customer"] + moved["t"]["bytes_per_task"] > 0
    here, there = got
    for (h_rows, h_joined), (t_rows, t_joined) in zip(here, there, strict=True):
        assert h_rows == segments.height and 0 < t_rows < segments.height  # the whole frame / the slice
        assert h_joined.equals(t_joined)
    assert sum(t for t, _ in there) == segments.height


def _joined_segments(view, part, segments):
    """The frame's row count and the partition's customers joined with it."""
    ids = view.frame("SELECT DISTINCT customer_id FROM orders ORDER BY customer_id")
    return segments.height, ids.join(segments, on="customer_id", how="left")


def _pair_state(view, part, m):
    """A partition's pair counts of products (mod m) per order, as the baskets' pass 2 returns them."""
    from centile.kernels.pairs import pair_counts

    lines = view.frame("SELECT DISTINCT order_id, product_id % $m AS item FROM orders ORDER BY ALL", {"m": m})
    orders = lines.get_column("order_id").to_numpy()
    items = lines.get_column("item").to_numpy().astype(np.int64)
    offsets = np.concatenate([[0], np.flatnonzero(np.diff(orders)) + 1, [orders.size]]).astype(np.int64)
    a, b, c = pair_counts(offsets, items, m, 1)
    return {("all", "all"): (a * np.int64(m) + b, c)}



def _bench_dask():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_dask.py"
    spec = importlib.util.spec_from_file_location("bench_dask", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_paper_model_scales_task_work_over_workers_and_keeps_the_client_and_first_scan_fixed():
    step = {"tasks": 4, "bytes_to_workers": 1_000, "bytes_to_client": 100, "bytes_via_files": 9_900,
            "bytes_held_on_workers": 0, "open_s": 3.0, "work_s": 1.0, "cpu_s": 8.0, "wall_s": 5.0}
    merged = {**step, "bytes_via_files": 0, "bytes_to_client": 5_000, "open_s": 0.0, "cpu_s": 2.0}
    dask = {"lines": 1_000_000, "process_peak_rss_mb": 1_024.0, "backend": {"workers": 2},
            "stages": {"features": {"status": "ran", "cpu_s": 10.0, "network": {"steps": {"features": step}}},
                       "uplift": {"status": "ran", "cpu_s": 1.0, "network": {"steps": {"uplift: units": merged}}},
                       "clubs": {"status": "ran", "cpu_s": 4.0},
                       "steering": {"status": "skipped"}}}
    model = _bench_dask().paper_model(dask, 100_000, target_customers=1_000_000, target_lines=10_000_000,
                                      workers=(1, 10))
    r = model["rates"]
    assert set(r) == {"features", "uplift", "clubs"}
    # the features step's opening is a whole scan per task: 6 of its 8 CPU s over 4 tasks
    assert r["features"]["full_scan_cpu_s_per_task"] == 1.5 and r["features"]["task_cpu_s"] == 2.0
    one, ten = model["rows"]
    # client: validation scales with the lines (x10), clubs with the customers (x10); not with the workers
    assert one["stages"]["features"]["client_s"] == ten["stages"]["features"]["client_s"] == 100.0
    assert one["stages"]["clubs"]["total_s"] == ten["stages"]["clubs"]["total_s"] == 40.0
    # workers: 2 whole scans per thread (x10 lines) plus the rest divided over the threads
    assert one["stages"]["features"]["workers_s"] == 2 * 15.0 + 20.0
    assert ten["stages"]["features"]["workers_s"] == 2 * 15.0 + 2.0
    assert ten["stages"]["uplift"]["workers_s"] == 2.0
    # per-customer rows back scale with the customers, merged states stay
    assert r["features"]["bytes_to_client_per_customer"] == 0.1 and r["features"]["bytes_to_client_fixed"] == 0
    assert r["uplift"]["bytes_to_client_per_customer"] == 0 and r["uplift"]["bytes_to_client_fixed"] == 5_000
    assert model["client_memory_gb"]["peak_scaled"] == 10.0


def test_the_paper_model_scales_each_kind_of_bytes_to_the_workers_its_own_way():
    step = {"tasks": 4, "bytes_to_workers": 16 * 10**8 + 2 * 10**9 + 5 * 10**9, "bytes_per_task": 16 * 10**8,
            "bytes_broadcast": 2 * 10**9, "bytes_per_customer": 5 * 10**9, "bytes_to_client": 0,
            "bytes_via_files": 0, "bytes_held_on_workers": 0, "bytes_kept_on_workers": 3 * 10**9, "open_s": 0.0,
            "work_s": 1.0, "cpu_s": 1.0, "wall_s": 1.0}
    old = {k: v for k, v in step.items()
           if k not in ("bytes_per_task", "bytes_broadcast", "bytes_per_customer", "bytes_kept_on_workers")}
    rows = {}
    for name, st in (("kinds", step), ("no kinds", old)):
        dask = {"lines": 1_000_000, "process_peak_rss_mb": 1.0, "backend": {"workers": 2}, "pieces": {"orders": 4},
                "stages": {"uplift": {"status": "ran", "cpu_s": 1.0, "network": {"steps": {"uplift: units": st}}}}}
        model = _bench_dask().paper_model(dask, 100_000, target_customers=1_000_000, target_lines=10_000_000,
                                          workers=(1, 10), parts_per_thread=2)
        rows[name] = [r["bytes_to_workers_gb"] for r in model["rows"]]
        if name == "kinds":
            assert model["rates"]["uplift"]["bytes_per_task_each"] == 4 * 10**8
            # columns read from kept rows on the shared file system: x10 customers, not through the client
            assert [r["bytes_kept_read_gb"] for r in model["rows"]] == [30.0, 30.0]
        else:
            assert [r["bytes_kept_read_gb"] for r in model["rows"]] == [0.0, 0.0]
    # 0.4 GB per task x 2 tasks per thread x n; sent to every worker once: 2 GB x n workers / 2 measured
    # (models and dictionaries, which do not grow with the customers); per-customer 5 GB x10 customers
    assert rows["kinds"] == [0.8 * 1 + 1 * 1 + 50, 0.8 * 10 + 1 * 10 + 50]
    # a run recorded without the kinds: every byte counted as sent to every worker and growing with
    # the customers (the upper bound)
    assert rows["no kinds"] == [8.6 * 10 * 1 / 2, 8.6 * 10 * 10 / 2]


def test_a_large_argument_goes_to_each_worker_once_not_with_every_task(datasets, cluster):
    """An argument whose pickled size reaches ``HOLD_BYTES`` (a model, a list of frequent items) is
    held on the cluster as a task of its own: it counts once per worker, as broadcast bytes, and the
    tasks carry only their own small arguments. The results are those of this process."""
    import cloudpickle

    from centile.backend import open_backend
    from centile.backend.dask import HOLD_BYTES

    base, _double, _lines = datasets
    weights = np.arange(40_000, dtype=np.float64)  # 320 kB
    size = len(cloudpickle.dumps(weights))
    assert size >= HOLD_BYTES
    got = []
    for over in ({}, {"backend": "dask", "scheduler": cluster.scheduler_address}):
        cfg = load_config(data=str(base), **over)
        with open_backend(cfg) as backend, backend.open(only=("orders",)) as s:
            parts = Partitioning(4)
            got.append(s.map_partitions(parts, "t", _weighted_lines, weights, 3, tables=("orders",)))
            moved = backend.moved()
        if over:
            st = moved["t"]
            assert st["bytes_broadcast"] == 2 * size  # two workers
            assert 0 < st["bytes_per_task"] < 4 * HOLD_BYTES
            assert st["bytes_to_workers"] == st["bytes_broadcast"] + st["bytes_per_task"]
    here, there = got
    assert here == there and len(there) == 4 and all(n > 0 for n, _ in there)
    assert [w for _, w in there] == [3 * weights.sum()] * 4  # every task got it whole


def _weighted_lines(view, part, weights, k):
    """The partition's order lines, and ``k`` times the sum of ``weights``."""
    n = view.con.execute("SELECT count(*) FROM orders").fetchall()[0][0]
    return n, float(k * weights.sum())
