"""The partition hash: ``hash(hash(id), seed)`` against ``hash(id, seed)`` for a customer's bucket.

    python benchmarks/bench_partition_hash.py --before DIR [--customers 1000000] [--data DIR]
                                              [--partitions 4] [--runs 3] [--memory-limit 3GB]

DuckDB combines the hashes of several values by XOR, in ``hash(a, b)`` and in the hash table of a
``GROUP BY a, b``. With buckets from ``hash(id, seed)``, a partition's ids had fixed bits in the
hash of a group key ``(customer_id, w)`` with ``w`` constant, and such a GROUP BY probed far longer.

Two measurements, in one run of this script:

- **query**: per partition of ``--partitions``, the e-mail events of its customers, then
  ``GROUP BY customer_id, 0`` (what the e-mail features do below 64 campaigns) and, as the
  baseline a user would write, ``GROUP BY customer_id``; one DuckDB thread; each partition's
  rows selected by the old and by the new bucket; seconds summed over the partitions, medians of
  ``--runs``.
- **features**: the whole feature job as ``centile features --partitions N`` runs it (local
  backend, every core), ``--before DIR`` (a tree holding the earlier ``centile`` package, put first
  on ``PYTHONPATH``) and this tree alternating, fresh processes, medians of ``--runs``; and whether
  the two wrote the same ``features.parquet`` rows (the bucket changes which partition computes a
  customer, never the customer's values).

Stored under ``--key`` (default: the customer count) in ``benchmarks/results/partition_hash.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import alternate, machine, run_isolated, store  # noqa: E402

_FEATURES = r"""
import json, sys, time
from centile.config import load_config
from centile.features.compute import run_features

data, out, parts, mem = sys.argv[1:5]
t0 = time.perf_counter()
c0 = time.process_time()
res = run_features(load_config(data=data, partitions=int(parts), memory_limit=mem or None), out)
print(json.dumps({"run_s": round(time.perf_counter() - t0, 2), "rows": res.features.height}))
"""


def _query(data: Path, partitions: int, runs: int, seed: int, buckets: int) -> dict:
    import duckdb

    con = duckdb.connect()
    con.execute("SET threads = 1")
    events = sorted(str(p) for p in data.glob("email_events*"))
    src = f"read_parquet({events!r})" if events else None
    if src is None:
        raise SystemExit(f"{data}: no email_events*.parquet")
    old = f"CAST(hash(customer_id, {seed}) % {buckets} AS INTEGER)"
    new = f"CAST(hash(hash(customer_id), {seed}) % {buckets} AS INTEGER)"
    out: dict = {"partitions": partitions, "runs": runs}
    for name, bucket in (("old_bucket", old), ("new_bucket", new)):
        con.execute(f"CREATE OR REPLACE TABLE e AS SELECT customer_id, {bucket} AS b FROM {src}")
        times: dict[str, list[float]] = {"group_by_id_and_constant": [], "group_by_id": []}
        for _ in range(runs):
            for key, sql in (("group_by_id_and_constant", "SELECT customer_id, 0 AS w, count(*) FROM p GROUP BY 1, 2"),
                             ("group_by_id", "SELECT customer_id, count(*) FROM p GROUP BY 1")):
                total = 0.0
                for k in range(partitions):
                    lo, hi = k * buckets // partitions, (k + 1) * buckets // partitions
                    con.execute(f"CREATE OR REPLACE TEMP TABLE p AS SELECT customer_id FROM e WHERE b >= {lo} AND b < {hi}")
                    t = time.perf_counter()
                    con.execute(f"CREATE OR REPLACE TEMP TABLE g AS {sql}")
                    total += time.perf_counter() - t
                times[key].append(round(total, 3))
        out[name] = {k: {"median_s": statistics.median(v), "runs_s": v} for k, v in times.items()}
    out["rows"] = con.execute("SELECT count(*) FROM e").fetchall()[0][0]
    out["ratio_old_to_new"] = round(out["old_bucket"]["group_by_id_and_constant"]["median_s"]
                                    / out["new_bucket"]["group_by_id_and_constant"]["median_s"], 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True)
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--memory-limit", default="3GB")
    ap.add_argument("--key")
    a = ap.parse_args()
    from centile.backend.partitions import BUCKETS, SEED

    data = (a.data or Path("bench-data") / f"c{a.customers}").resolve()
    load = [os.getloadavg()[0]]
    query = _query(data, a.partitions, a.runs, SEED, BUCKETS)
    load.append(os.getloadavg()[0])
    with tempfile.TemporaryDirectory(prefix="bench-partition-hash-", dir=".") as tmp:
        runs = alternate(a.before, a.runs, lambda v: run_isolated(_FEATURES, str(data), str(Path(tmp) / v),
                                                                  str(a.partitions), a.memory_limit), load)
        import polars as pl

        frames = [pl.read_parquet(Path(tmp) / v / "features.parquet").sort("customer_id") for v in ("before", "after")]
        identical = frames[0].equals(frames[1], null_equal=True)

    def summary(rs: list[dict]) -> dict:
        return {"wall_s": statistics.median(r["wall_s"] for r in rs), "cpu_s": statistics.median(r["cpu_s"] for r in rs),
                "peak_rss_mb": max(r["peak_rss_mb"] for r in rs), "wall_s_runs": [round(r["wall_s"], 2) for r in rs],
                "cpu_s_runs": [round(r["cpu_s"], 2) for r in rs], "rows": rs[-1]["rows"]}

    features = {v: summary(rs) for v, rs in runs.items()}
    features["speedup_wall"] = round(features["before"]["wall_s"] / features["after"]["wall_s"], 2)
    features["speedup_cpu"] = round(features["before"]["cpu_s"] / features["after"]["cpu_s"], 2)
    features["identical_rows"] = identical
    doc = {"customers": a.customers, "data": str(data), "partitions": a.partitions, "runs": a.runs,
           "memory_limit": a.memory_limit, "load": [round(min(load), 2), round(max(load), 2)], "machine": machine(),
           "query": query, "features": features}
    store("partition_hash", a.key or str(a.customers), doc)
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
