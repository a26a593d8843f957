"""Incremental refresh (issue 17): the uplift and attribution stages from the refresh state's order
totals against the same stages over every batch file, in the same run; and what the order totals
cost the state and an ingest.

    python benchmarks/bench_refresh_upattr.py [--data bench-data/c1000000] [--runs 3] [--work DIR]
                                              [--memory-limit 3GB]

The order files of ``--data`` (``centile generate`` output, read in place) are the batches: they are
ingested into a state in ``--work`` once (timed: the initial load; reused when a previous run left
it there, as ``bench_refresh_clv.py`` does). Then, alternating, in fresh processes, ``--runs`` times
each, both open the session over every batch file plus contacts, products and touchpoints first
(not timed: in ``centile run --state`` the features stage has opened it) and run what the stages
run at the state's watermark, with the default ``[uplift]`` and ``[attribution]`` settings and no
segments:

* state: ``uplift_from_session`` / ``attribution_from_session`` with the state's order totals
  (``centile.refresh.order_totals.StateOrders``);
* batches: the same over the ``orders`` view of every batch file (``centile run``).

Each records wall and CPU seconds (every thread of the process) per stage and writes its Parquet
files; the parent checks each pair is the same bytes.

Ingest cost: one day's batch (the newest day's lines moved one day on, with new order ids: new
lines) is ingested into the state ``--runs`` times with the order totals and ``--runs`` times
without them (``state_tables`` patched to leave the table out: the ingest of a state without
it), alternating, in fresh processes; the manifest is put back after each, so every ingest starts
from the same state (one run file per table and partition: no merge). Results:
``benchmarks/results/refresh_uplift.json`` and ``refresh_attribution.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REFRESH_LOAD, machine, median_of, refresh_state, run_isolated, save  # noqa: E402

COMMON = r"""
import datetime as dt, json, sys, time
from pathlib import Path
from types import MappingProxyType
from centile.config import Config, TableSpec
data, state, limit = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
files = tuple(sorted(str(p) for p in (data / "orders").glob("*.parquet")))
def cfg(as_of=None, full=False):
    tables = {"orders": TableSpec("orders", files, "parquet")} if full else {}
    if full:
        tables.update({t: TableSpec(t, (str(data / f"{t}.parquet"),), "parquet")
                       for t in ("contacts", "products", "touchpoints")})
    else:
        tables["products"] = TableSpec("products", (str(data / "products.parquet"),), "parquet")
    return Config(tables=MappingProxyType(tables), as_of=as_of, memory_limit=limit)
"""

LOAD = COMMON + REFRESH_LOAD

STAGES = COMMON + r"""
from centile.attribution.compute import attribution_from_session, attribution_settings, write_attribution
from centile.backend.session import open_session
from centile.refresh.order_totals import StateOrders
from centile.refresh.state import read_manifest, watermark
from centile.uplift.compute import uplift_from_session, write_uplift
mode, out = sys.argv[4], Path(sys.argv[5])
doc = read_manifest(state)
as_of = watermark(doc)
c = cfg(as_of, full=True)
out.mkdir(parents=True, exist_ok=True)

class Staging:
    def path(self, name):
        return str(out / name)

t0 = time.perf_counter()
with open_session(c) as s:
    open_s = time.perf_counter() - t0
    orders = StateOrders.of(state.resolve(), doc) if mode == "state" else None
    t1, c1 = time.perf_counter(), time.process_time()
    up = uplift_from_session(s, c, None, orders=orders)
    t2, c2 = time.perf_counter(), time.process_time()
    att = attribution_from_session(s, attribution_settings(c), None, up.uplift, orders=orders)
    t3, c3 = time.perf_counter(), time.process_time()
write_uplift(up, Staging())
write_attribution(att, Staging())
print(json.dumps({"open_s": open_s, "uplift_s": t2 - t1, "uplift_cpu_s": c2 - c1, "attribution_s": t3 - t2,
                  "attribution_cpu_s": c3 - c2, "partitions": s.partitioning().count,
                  "journeys": att.summary["journeys"], "as_of": as_of.isoformat()}))
"""

DAY = COMMON + r"""
import polars as pl
from centile.refresh.state import read_manifest, watermark
day = Path(sys.argv[4])
last = watermark(read_manifest(state)) - dt.timedelta(days=1)
lines = (pl.scan_parquet(list(files)).filter(pl.col("order_ts").dt.date() == last)
         .with_columns(pl.col("order_ts") + pl.duration(days=1), pl.col("order_id") + 10**12).collect())
lines.write_parquet(day)
print(json.dumps({"day": str(last + dt.timedelta(days=1)), "lines": lines.height}))
"""

INGEST = COMMON + r"""
import shutil
from unittest import mock
import centile.refresh.state as st
from centile.refresh import ingest
mode, day = sys.argv[4], sys.argv[5]
saved = (state / "manifest.json").read_text()
real = st.state_tables
def without(doc):
    return tuple(t for t in real(doc) if t != "order_totals")
try:
    with mock.patch.object(st, "state_tables", real if mode == "with" else without):
        t0, c0 = time.perf_counter(), time.process_time()
        res = ingest(cfg(), state, [day])
        t1, c1 = time.perf_counter(), time.process_time()
    assert res.applied and not res.rebuilt, res
    rows = res.rows["orders"]
finally:  # the state as before: the manifest back, the files it no longer points at removed
    (state / "manifest.json").write_text(saved)
    st.collect_garbage(state, json.loads(saved))
print(json.dumps({"ingest_s": t1 - t0, "ingest_cpu_s": c1 - c0, "lines": rows}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("bench-data") / "c1000000")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--work", type=Path, default=None, help="keep the state here, and reuse it if already there")
    ap.add_argument("--memory-limit", default="3GB", help="each process's memory budget (DuckDB gets half)")
    ap.add_argument("--skip-ingest", action="store_true", help="measure the stages only")
    args = ap.parse_args()
    data = args.data.resolve()
    loads = [os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="centile-bench-refresh-upattr-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        state = work / "state"
        load, reused = refresh_state(work, LOAD, data, args.memory_limit, keep=bool(args.work))
        runs: dict[str, list[dict]] = {"state": [], "batches": []}
        same = {"uplift": True, "attribution": True}
        for i in range(args.runs):
            for mode in ("state", "batches") if i % 2 == 0 else ("batches", "state"):
                runs[mode].append(run_isolated(STAGES, str(data), str(state), args.memory_limit, mode,
                                               str(work / f"{mode}-{i}")))
                loads.append(os.getloadavg())
            for f in sorted((work / f"batches-{i}").glob("*.parquet")):
                stage = "uplift" if f.name.startswith("uplift") else "attribution"
                same[stage] &= (work / f"state-{i}" / f.name).read_bytes() == f.read_bytes()
        files = {stage: sorted(f.name for f in (work / "batches-0").glob(f"{stage}*.parquet")) for stage in same}
        ingests: dict[str, list[dict]] = {"with": [], "without": []}
        day = {}
        if not args.skip_ingest:
            day = run_isolated(DAY, str(data), str(state), args.memory_limit, str(work / "day.parquet"))
            for i in range(args.runs):
                for mode in ("with", "without") if i % 2 == 0 else ("without", "with"):
                    ingests[mode].append(run_isolated(INGEST, str(data), str(state), args.memory_limit, mode,
                                                      str(work / "day.parquet")))
                    loads.append(os.getloadavg())
        sizes = {}
        for f in state.rglob("p*/*.parquet"):
            table = f.name.rsplit("-", 1)[0]
            sizes[table] = sizes.get(table, 0) + f.stat().st_size
    common = {
        "data": str(args.data), "batch_files": len(list((data / "orders").glob("*.parquet"))),
        "lines": load["lines"], "as_of": runs["state"][0]["as_of"], "runs": args.runs,
        "memory_limit": args.memory_limit, "session_partitions": runs["state"][0]["partitions"],
        "initial_load_s": load["seconds"], "initial_load_cpu_s": load.get("load_cpu_s"),
        "initial_load_from_earlier_run": reused,
        "state_mb": {t: round(b / 2**20, 1) for t, b in sorted(sizes.items())},
        "state_mb_total": round(sum(sizes.values()) / 2**20, 1),
        "ingest_one_day": {"day": day.get("day"), "lines": day.get("lines"), **{
            mode: {**{k: median_of(r, k) for k in ("ingest_s", "ingest_cpu_s", "peak_rss_mb")}, "all": r}
            for mode, r in ingests.items() if r}},
        "load_average": loads, "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    for stage in ("uplift", "attribution"):
        keys = (f"{stage}_s", f"{stage}_cpu_s")
        doc = {**common, "stage": stage, "files": files[stage], f"identical_{stage}_parquet": same[stage],
               **{mode: {**{k: median_of(r, k) for k in (*keys, "open_s", "peak_rss_mb")},
                         "all": [{k: x[k] for k in (*keys, "open_s", "peak_rss_mb", "wall_s", "cpu_s")} for x in r]}
                  for mode, r in runs.items()}}
        if stage == "attribution":
            doc["journeys"] = runs["state"][0]["journeys"]
        for k in keys:
            doc[f"speedup_{k}"] = doc["batches"][k] / doc["state"][k]
        save(f"refresh_{stage}", doc)
        print(json.dumps({k: v for k, v in doc.items() if k not in ("machine", "state", "batches")} | {
            m: {k: v for k, v in doc[m].items() if k != "all"} for m in runs}, indent=1))
    if not all(same.values()):
        raise SystemExit(f"outputs from the state differ from those over the batch files: {same}")


if __name__ == "__main__":
    main()
