"""Incremental refresh (issue 17): one day's batch applied to the state plus the feature table from
the state, against the full feature computation over the whole history, in the same run.

    python benchmarks/bench_refresh.py [--customers 50000] [--runs 3] [--data DIR] [--work DIR]

Generates two years of data (``centile.synth.generate``, seed 1, ``years=2``) unless ``--data``
holds it, splits the order lines and e-mail events into the history (every day but the last)
and the last day's batch, and builds the state from the history once (timed: the initial load).
Then, alternating, in fresh processes (peak RSS per run), ``--runs`` times each:

* incremental: a copy of the state (copying not timed), ``ingest`` of the day's batch, then
  ``features_from_state`` at the new watermark (the state's feature cache holds the features at
  the previous watermark, computed once after the initial load, as a nightly job leaves it);
* full: ``open_session`` over the history and the day plus ``compute_features`` at the same
  ``as_of`` (the features stage of ``centile run`` over orders and e-mail events).

Wall and CPU seconds (every thread of the process) are recorded for both, and the time to write
the feature table to Parquet after the timed part (``write_s``: the same million rows either way).

Both write their feature table; the parent checks they are equal, and writes medians, the ratio
and the machine load to ``benchmarks/results/refresh.json``.

``--work DIR`` keeps the split files and the initial state in ``DIR`` and reuses them when a
previous run left them there (the initial load, about ten minutes at 1M customers, is then not
repeated; its time is taken from that run).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine, median_of, run_isolated, save  # noqa: E402

COMMON = r"""
import datetime as dt, json, sys, time
from pathlib import Path
from types import MappingProxyType
from centile.config import Config, TableSpec
work = Path(sys.argv[1])
def cfg(as_of=None, full=False):
    tables = {}
    if full:
        tables = {"orders": TableSpec("orders", (str(work / "history-orders.parquet"), str(work / "day-orders.parquet")), "parquet"),
                  "email_events": TableSpec("email_events", (str(work / "history-email.parquet"), str(work / "day-email.parquet")), "parquet")}
    return Config(tables=MappingProxyType(tables), as_of=as_of)
"""

INCREMENTAL = COMMON + r"""
from centile.refresh import features_from_state, ingest
state = Path(sys.argv[2])
t0, c0 = time.perf_counter(), time.process_time()
res = ingest(cfg(), state, [work / "day-orders.parquet"], [work / "day-email.parquet"])
t1 = time.perf_counter()
stats = {}
df, _, _, as_of = features_from_state(cfg(), state, stats=stats)
t2, c2 = time.perf_counter(), time.process_time()
df.write_parquet(sys.argv[3])
print(json.dumps({"ingest_s": t1 - t0, "features_s": t2 - t1, "seconds": t2 - t0, "cpu_s": c2 - c0,
                  "write_s": time.perf_counter() - t2, "as_of": as_of.isoformat(),
                  "day_lines": res.rows["orders"], "day_events": res.rows["email_events"], **stats}))
"""

FULL = COMMON + r"""
from centile.backend.session import open_session
from centile.features.compute import compute_features
as_of = dt.date.fromisoformat(sys.argv[2])
t0, c0 = time.perf_counter(), time.process_time()
with open_session(cfg(as_of, full=True), only=("orders", "email_events")) as s:
    df, _, _ = compute_features(s)
t1, c1 = time.perf_counter(), time.process_time()
df.write_parquet(sys.argv[3])
print(json.dumps({"seconds": t1 - t0, "cpu_s": c1 - c0, "write_s": time.perf_counter() - t1}))
"""

LOAD = COMMON + r"""
from centile.refresh import features_from_state, ingest
t0 = time.perf_counter()
ingest(cfg(), Path(sys.argv[2]), [work / "history-orders.parquet"], [work / "history-email.parquet"])
t1 = time.perf_counter()
features_from_state(cfg(), Path(sys.argv[2]))  # yesterday's features: the state's feature cache
print(json.dumps({"seconds": t1 - t0, "features_s": time.perf_counter() - t1}))
"""


def prepare(data: Path, work: Path) -> dict:
    """Split the generated orders and e-mail events into the history and the last day."""
    import polars as pl

    orders = pl.scan_parquet(str(data / "orders" / "*.parquet"))
    last = orders.select(pl.col("order_ts").max()).collect().item().date()
    day = pl.col("order_ts").dt.date() == last
    orders.filter(~day).sink_parquet(work / "history-orders.parquet")
    orders.filter(day).sink_parquet(work / "day-orders.parquet")
    email = pl.scan_parquet(str(data / "email_events.parquet"))
    eday = pl.col("ts").dt.date() == last
    email.filter(~eday).sink_parquet(work / "history-email.parquet")
    email.filter(eday).sink_parquet(work / "day-email.parquet")
    n = {k: pl.scan_parquet(work / f"{k}.parquet").select(pl.len()).collect().item()
         for k in ("history-orders", "day-orders", "history-email", "day-email")}
    return {"last_day": last.isoformat(), "rows": n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=50_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--data", type=Path, default=None, help="generated data (default bench-data/refresh-c<N>)")
    ap.add_argument("--work", type=Path, default=None,
                    help="keep the split and the initial state here, and reuse them if already there")
    args = ap.parse_args()
    data = args.data or Path("bench-data") / f"refresh-c{args.customers}"
    import polars as pl

    with tempfile.TemporaryDirectory(prefix="centile-bench-refresh-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        base = work / "state"
        kept = work / "prepared.json"
        reused = bool(args.work and kept.exists() and (base / "manifest.json").exists())
        if reused:
            split, load = (prev := json.loads(kept.read_text()))["split"], prev["load"]
        else:
            if not (data / "orders").exists():
                from centile.synth import generate

                generate(data, args.customers, seed=1, years=2)
            shutil.rmtree(base, ignore_errors=True)
            split = prepare(data, work)
            load = run_isolated(LOAD, str(work), str(base))
            kept.write_text(json.dumps({"split": split, "load": load}))
        inc_runs, full_runs = [], []
        for i in range(args.runs):
            state = work / f"state-{i}"
            shutil.copytree(base, state)
            # the copy's dirty pages flushed now, not by the ingest's fsync of its manifest (which waited
            # 3.6 s for them once in a profile)
            os.sync()
            inc = run_isolated(INCREMENTAL, str(work), str(state), str(work / f"inc-{i}.parquet"))
            inc_runs.append(inc)
            full_runs.append(run_isolated(FULL, str(work), inc["as_of"], str(work / f"full-{i}.parquet")))
            shutil.rmtree(state)
        equal = all(pl.read_parquet(work / f"inc-{i}.parquet").equals(pl.read_parquet(work / f"full-{i}.parquet"))
                    for i in range(args.runs))
        state_bytes = sum(f.stat().st_size for f in base.rglob("*") if f.is_file())
    doc = {
        "customers": args.customers, "years": 2, **split, "runs": args.runs,
        "initial_load_s": load["seconds"], "initial_features_s": load["features_s"],
        "initial_load_from_earlier_run": reused,
        "state_mb": round(state_bytes / 2**20, 1),
        "incremental": {"seconds": median_of(inc_runs, "seconds"), "ingest_s": median_of(inc_runs, "ingest_s"),
                        "features_s": median_of(inc_runs, "features_s"), "cpu_s": median_of(inc_runs, "cpu_s"),
                        "write_s": median_of(inc_runs, "write_s"),
                        "customers_recomputed": inc_runs[0].get("recomputed"),
                        "peak_rss_mb": median_of(inc_runs, "peak_rss_mb"), "all": inc_runs},
        "full": {"seconds": median_of(full_runs, "seconds"), "cpu_s": median_of(full_runs, "cpu_s"),
                 "write_s": median_of(full_runs, "write_s"), "peak_rss_mb": median_of(full_runs, "peak_rss_mb"),
                 "all": full_runs},
        "identical_features": equal,
        "load_average": os.getloadavg(), "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    doc["speedup"] = doc["full"]["seconds"] / doc["incremental"]["seconds"]
    # CPU seconds of both processes (every thread): fairer than wall time on a shared machine
    doc["speedup_cpu"] = doc["full"]["cpu_s"] / doc["incremental"]["cpu_s"]
    # one entry per size: sizes not rerun keep their earlier entry
    old = RESULTS / "refresh.json"
    sizes = json.loads(old.read_text()) if old.exists() else {}
    # the previous run of this size kept under "earlier" (one level: its own "earlier" is dropped)
    previous = sizes.get(str(args.customers))
    if previous:
        doc["earlier"] = {k: v for k, v in previous.items() if k != "earlier"}
    sizes[str(args.customers)] = doc
    save("refresh", sizes)
    print(json.dumps({k: v for k, v in doc.items() if k not in ("machine",)} | {
        "incremental": {k: v for k, v in doc["incremental"].items() if k != "all"},
        "full": {k: v for k, v in doc["full"].items() if k != "all"}}, indent=1))
    if not equal:
        raise SystemExit("the incremental features differ from the full recompute")


if __name__ == "__main__":
    main()
