"""Incremental refresh (issue 17): the baskets and recommend stages from the refresh state's basket
lines against the same stages over every batch file; and what the state's basket lines cost.

    python benchmarks/bench_refresh_baskets.py [--data bench-data/c1000000] [--runs 3] [--work DIR]
                                               [--memory-limit 3GB]

The order files of ``--data`` (``centile generate`` output, read in place) are the batches, with its
products table: they are ingested into a state in ``--work`` once (timed: the initial load; reused
when a previous run left it there). Then, alternating, in fresh processes (peak RSS per run),
``--runs`` times each, both open the session over every batch file first (not timed: in ``centile
run --state`` the features stage has opened it for the validation summary and ``rejects.parquet``)
and then run what the baskets and recommend stages run, at the state's watermark and the default
``[baskets]`` / ``[recommend]`` settings, with the same stand-in segments on both sides (``club``:
customer_id mod 9, the value 8 as no club; ``rfm_segment``: customer_id mod 11):

* state: the lines from the state (``centile.refresh.baskets``), in its partitions (split further
  as the memory limit asks);
* batches: the lines from the session over every batch file (``centile run``), in the session's
  partitions.

Each records wall and CPU seconds (every thread of the process) of each stage and writes its
Parquet files; the parent checks the two sides wrote the same bytes.

The cost of the table: its size on disk against the whole state's, and the ingest of one day's
batch (the newest day's lines of the data moved one day on, with new order ids: about 1/730 of
the history) into the state with and without the basket lines (a state whose manifest does not list
the table: what an ingest did before), ``--runs`` times each, alternated, fresh processes, the
state restored after each. Results in ``benchmarks/results/refresh_baskets.json``.
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
    tables = {"products": TableSpec("products", (str(data / "products.parquet"),), "parquet")}
    if full:
        tables["orders"] = TableSpec("orders", files, "parquet")
    return Config(tables=MappingProxyType(tables), as_of=as_of, memory_limit=limit)
"""

LOAD = COMMON + REFRESH_LOAD

STAGES = COMMON + r"""
import polars as pl
from functools import partial
from centile.backend.session import open_session
from centile.baskets.compute import baskets_from, write_baskets
from centile.baskets.lines import basket_items, basket_lines
from centile.baskets.parts import SessionLines
from centile.baskets.recommend import recommend_from, recommend_lines, write_recommendations
from centile.baskets.settings import parse_baskets, parse_recommend
from centile.refresh.baskets import state_baskets
from centile.refresh.state import read_manifest, watermark
from centile.runtime import numba_threads
mode, out = sys.argv[4], Path(sys.argv[5])
out.mkdir(parents=True, exist_ok=True)
as_of = watermark(read_manifest(state))
bst, rst = parse_baskets({}), parse_recommend({})

class Staging:
    spill = str(out / "spill")
    def path(self, name):
        return str(out / name)

t0 = time.perf_counter()
with open_session(cfg(as_of, full=True)) as s:
    open_s = time.perf_counter() - t0
    ids = pl.read_parquet(data / "customers.parquet", columns=["customer_id"])["customer_id"]
    seg = pl.DataFrame({"customer_id": ids}).with_columns(
        club=pl.when(pl.col("customer_id") % 9 == 8).then(None).otherwise((pl.col("customer_id") % 9).cast(pl.String)),
        rfm_segment=(pl.col("customer_id") % 11).cast(pl.String))
    doc = {"open_s": open_s, "as_of": as_of.isoformat()}
    with numba_threads(None):
        t1, c1 = time.perf_counter(), time.process_time()
        if mode == "state":
            sb = state_baskets(cfg(as_of), state, as_of)
            items = sb.items(bst.level, bst.exclude_returned)
            source = sb.source(bst.level, bst.exclude_returned)
        else:
            items = basket_items(s, bst.level, bst.exclude_returned)
            source = SessionLines(s, s.partitioning(), partial(basket_lines, level=bst.level,
                                                               exclude_returned=bst.exclude_returned))
        res = baskets_from(source, items, bst, seg, scratch=Staging.spill, sink=Staging())
        rows = write_baskets(res, Staging())
        t2, c2 = time.perf_counter(), time.process_time()
        if mode == "state":
            items = sb.items(rst.level, exclude_returned=False)
            source = sb.source(rst.level, False, all_kept=not bst.exclude_returned)
        else:
            items = basket_items(s, rst.level, exclude_returned=False)
            source = SessionLines(s, s.partitioning(), partial(recommend_lines, level=rst.level,
                                                               exclude_returned=bst.exclude_returned))
        rec = recommend_from(source, items, rst, as_of, seg.select("customer_id", "rfm_segment"),
                             scratch=Staging.spill)
        rows |= write_recommendations(rec, Staging())
        t3, c3 = time.perf_counter(), time.process_time()
doc |= {"baskets_s": t2 - t1, "baskets_cpu_s": c2 - c1, "recommend_s": t3 - t2, "recommend_cpu_s": c3 - c2,
        "both_s": t3 - t1, "both_cpu_s": c3 - c1, "partitions": source.count, "rows": rows}
print(json.dumps(doc))
"""

DAY = COMMON + r"""
import polars as pl
day_file = Path(sys.argv[4])
lines = pl.scan_parquet(list(files))
last = lines.select(pl.col("order_ts").max()).collect().item()
top = lines.select(pl.col("order_id").max()).collect().item()
day = (lines.filter(pl.col("order_ts") >= pl.lit(last.date()).cast(pl.Datetime("us")))
       .with_columns(pl.col("order_ts") + pl.duration(days=1), pl.col("order_id") + top + 1).collect())
day.write_parquet(day_file)
print(json.dumps({"lines": day.height, "day": (last.date() + dt.timedelta(days=1)).isoformat()}))
"""

INGEST_DAY = COMMON + r"""
from centile.refresh import ingest
from centile.refresh.state import state_tables, read_manifest
day_file = sys.argv[4]
t0, c0 = time.perf_counter(), time.process_time()
res = ingest(cfg(), state, [day_file])
doc = read_manifest(state)
print(json.dumps({"seconds": time.perf_counter() - t0, "ingest_cpu_s": time.process_time() - c0,
                  "lines": res.rows["orders"], "tables": list(state_tables(doc))}))
"""


def _ingest_day(data: Path, state: Path, limit: str, day_file: Path, with_lines: bool) -> dict:
    """One timed ingest of the day's batch, the state restored afterwards (its manifest, and its
    files: the ingest's new run files removed). Without basket lines the manifest does not list the
    table (its run files stay listed in the partitions, so nothing removes them)."""
    from centile.refresh import state as st

    saved = (state / st.MANIFEST).read_text()
    doc = json.loads(saved)
    try:
        if not with_lines:
            doc["tables"] = [t for t in doc["tables"] if t != "basket_lines"]
            st.write_manifest(state, doc)
        return run_isolated(INGEST_DAY, str(data), str(state), limit, str(day_file))
    finally:
        (state / st.MANIFEST).write_text(saved)
        st.collect_garbage(state, json.loads(saved))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("bench-data") / "c1000000")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--work", type=Path, default=None, help="keep the state here, and reuse it if already there")
    ap.add_argument("--memory-limit", default="3GB", help="each process's memory budget (DuckDB gets half)")
    ap.add_argument("--skip-stages", action="store_true", help="measure the table's cost only")
    args = ap.parse_args()
    data = args.data.resolve()
    with tempfile.TemporaryDirectory(prefix="centile-bench-refresh-baskets-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        state = work / "state"
        load, reused = refresh_state(work, LOAD, data, args.memory_limit, keep=bool(args.work))
        print("state:", load, flush=True)
        sizes = {}
        for f in state.glob("p[0-9]*/*.parquet"):
            table = f.name.rsplit("-", 1)[0]
            sizes[table] = sizes.get(table, 0) + f.stat().st_size
        runs: dict[str, list[dict]] = {"state": [], "batches": []}
        same = None
        if not args.skip_stages:
            same = True
            for i in range(args.runs):
                for mode in ("state", "batches") if i % 2 == 0 else ("batches", "state"):
                    r = run_isolated(STAGES, str(data), str(state), args.memory_limit, mode, str(work / f"{mode}-{i}"))
                    r["load_average"] = os.getloadavg()
                    runs[mode].append(r)
                    print(mode, {k: v for k, v in r.items() if k != "rows"}, flush=True)
                for name in ("basket_itemsets", "basket_rules", "basket_summary", "recommendations"):
                    same &= (work / f"state-{i}" / f"{name}.parquet").read_bytes() == (
                        work / f"batches-{i}" / f"{name}.parquet").read_bytes()
        day_file = work / "day.parquet"
        day = run_isolated(DAY, str(data), str(state), args.memory_limit, str(day_file))
        ingest = {"with": [], "without": []}
        for i in range(args.runs):
            for with_lines in (True, False) if i % 2 == 0 else (False, True):
                r = _ingest_day(data, state, args.memory_limit, day_file, with_lines)
                r["load_average"] = os.getloadavg()
                ingest["with" if with_lines else "without"].append(r)
                print("ingest", "with" if with_lines else "without", r, flush=True)
    keys = ("open_s", "baskets_s", "baskets_cpu_s", "recommend_s", "recommend_cpu_s", "both_s", "both_cpu_s",
            "peak_rss_mb")
    doc = {
        "data": str(args.data), "batch_files": len(list((data / "orders").glob("*.parquet"))),
        "lines": load["lines"], "runs": args.runs, "memory_limit": args.memory_limit,
        "initial_load_s": load["seconds"], "initial_load_cpu_s": load.get("load_cpu_s"),
        "initial_load_from_earlier_run": reused,
        "state_mb": {t: round(b / 2**20, 1) for t, b in sorted(sizes.items())},
        "state_total_mb": round(sum(sizes.values()) / 2**20, 1),
        "identical_outputs": same,
        "day_batch": day | {"share_of_history": day["lines"] / load["lines"]},
        "ingest_day": {k: {"seconds": median_of(v, "seconds"), "ingest_cpu_s": median_of(v, "ingest_cpu_s"),
                           "wall_s": median_of(v, "wall_s"), "cpu_s": median_of(v, "cpu_s"), "all": v}
                       for k, v in ingest.items()},
        "load_average": os.getloadavg(), "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    if same is not None:
        doc |= {mode: {**{k: median_of(r, k) for k in keys}, "partitions": r[0]["partitions"], "rows": r[0]["rows"],
                       "all": r} for mode, r in runs.items()}
        for k in ("baskets_s", "baskets_cpu_s", "recommend_s", "recommend_cpu_s", "both_s", "both_cpu_s"):
            doc[f"speedup_{k}"] = doc["batches"][k] / doc["state"][k]
    save("refresh_baskets", doc)
    print(json.dumps({k: v for k, v in doc.items() if k not in ("machine", "state", "batches", "ingest_day")}
                     | {m: {k: v for k, v in doc[m].items() if k != "all"} for m in runs if m in doc}, indent=1))
    if same is False:
        raise SystemExit("the baskets or recommend outputs from the state differ from those over the batch files")


if __name__ == "__main__":
    main()
