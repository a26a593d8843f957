"""Incremental refresh (issue 17): the CLV stage from the refresh state's purchase days against the
CLV stage over every batch file, in the same run.

    python benchmarks/bench_refresh_clv.py [--data bench-data/c1000000] [--runs 3] [--work DIR]
                                           [--memory-limit 3GB]

The order files of ``--data`` (``centile generate`` output, read in place) are the batches: they are
ingested into a state in ``--work`` once (timed: the initial load; reused when a previous run left
it there). Then, alternating, in fresh processes (peak RSS per run), ``--runs`` times each, both
open the session over every batch file first (not timed: in ``centile run --state`` the features
stage has opened it for the validation summary and ``rejects.parquet``) and then run what the clv
stage runs, ``compute_clv`` at the state's watermark:

* state: the summary's purchase days from the state (``centile.refresh.clv.state_days``);
* batches: the purchase days from the ``orders`` view over every batch file (``centile run``).

Each records wall and CPU seconds (every thread of the process) of the summary alone
(``summarize`` plus the mean purchase-day value: the part that differs) and of the whole
``compute_clv`` (summary, fits, predictions), and writes ``clv.parquet``; the parent checks the
two files are the same bytes and writes medians, ratios and the machine load to
``benchmarks/results/refresh_clv.json``.
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
from _common import machine, median_of, run_isolated, save  # noqa: E402

COMMON = r"""
import datetime as dt, json, sys, time
from pathlib import Path
from types import MappingProxyType
from centile.config import Config, TableSpec
data, state, limit = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
files = tuple(sorted(str(p) for p in (data / "orders").glob("*.parquet")))
def cfg(as_of=None, full=False):
    tables = {"orders": TableSpec("orders", files, "parquet")} if full else {}
    return Config(tables=MappingProxyType(tables), as_of=as_of, memory_limit=limit)
"""

LOAD = COMMON + r"""
from centile.refresh import ingest
t0, c0 = time.perf_counter(), time.process_time()
res = ingest(cfg(), state, files)
print(json.dumps({"seconds": time.perf_counter() - t0, "load_cpu_s": time.process_time() - c0,
                  "watermark": res.watermark.isoformat(), "lines": res.rows["orders"]}))
"""

CLV = COMMON + r"""
from centile.backend.session import open_session
from centile.clv.compute import OrderDays, compute_clv, mean_value, summarize, write_clv
from centile.refresh.clv import state_days
from centile.refresh.state import read_manifest, watermark
mode, out = sys.argv[4], Path(sys.argv[5])
as_of = watermark(read_manifest(state))
t0 = time.perf_counter()
with open_session(cfg(as_of, full=True), only=("orders",)) as s:
    open_s = time.perf_counter() - t0
    days = (lambda: state_days(cfg(as_of), state)) if mode == "state" else (lambda: OrderDays(s))
    t1, c1 = time.perf_counter(), time.process_time()
    summ = summarize(s, days=days())
    mean_value(days(), summ.calibration_end)
    t2, c2 = time.perf_counter(), time.process_time()
    res = compute_clv(s, days=days())
    t3, c3 = time.perf_counter(), time.process_time()

class Staging:
    def path(self, name):
        return str(out / name)

out.mkdir(parents=True, exist_ok=True)
write_clv(res, Staging())
print(json.dumps({"open_s": open_s, "summary_s": t2 - t1, "summary_cpu_s": c2 - c1, "clv_s": t3 - t2,
                  "clv_cpu_s": c3 - c2, "customers": res.customers.height, "as_of": as_of.isoformat()}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("bench-data") / "c1000000")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--work", type=Path, default=None, help="keep the state here, and reuse it if already there")
    ap.add_argument("--memory-limit", default="3GB", help="each process's memory budget (DuckDB gets half)")
    args = ap.parse_args()
    data = args.data.resolve()
    with tempfile.TemporaryDirectory(prefix="centile-bench-refresh-clv-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        state, kept = work / "state", work / "load.json"
        reused = bool(args.work and kept.exists() and (state / "manifest.json").exists())
        if reused:
            load = json.loads(kept.read_text())
        else:
            import shutil

            shutil.rmtree(state, ignore_errors=True)
            load = run_isolated(LOAD, str(data), str(state), args.memory_limit)
            kept.write_text(json.dumps(load))
        runs: dict[str, list[dict]] = {"state": [], "batches": []}
        same = True
        for i in range(args.runs):
            for mode in ("state", "batches") if i % 2 == 0 else ("batches", "state"):
                runs[mode].append(run_isolated(CLV, str(data), str(state), args.memory_limit, mode,
                                               str(work / f"{mode}-{i}")))
            same &= (work / f"state-{i}" / "clv.parquet").read_bytes() == (
                work / f"batches-{i}" / "clv.parquet").read_bytes()
        state_bytes = sum(f.stat().st_size for f in state.rglob("purchases-*") if f.is_file())
    keys = ("open_s", "summary_s", "summary_cpu_s", "clv_s", "clv_cpu_s", "peak_rss_mb")
    doc = {
        "data": str(args.data), "batch_files": len(list((data / "orders").glob("*.parquet"))),
        "lines": load["lines"], "customers": runs["state"][0]["customers"], "as_of": runs["state"][0]["as_of"],
        "runs": args.runs, "memory_limit": args.memory_limit,
        "initial_load_s": load["seconds"], "initial_load_cpu_s": load.get("load_cpu_s"),
        "initial_load_from_earlier_run": reused, "purchases_mb": round(state_bytes / 2**20, 1),
        **{mode: {**{k: median_of(r, k) for k in keys}, "all": r} for mode, r in runs.items()},
        "identical_clv_parquet": same,
        "load_average": os.getloadavg(), "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    for k in ("summary_s", "summary_cpu_s", "clv_s", "clv_cpu_s"):
        doc[f"speedup_{k}"] = doc["batches"][k] / doc["state"][k]
    save("refresh_clv", doc)
    print(json.dumps({k: v for k, v in doc.items() if k != "machine"} | {
        m: {k: v for k, v in doc[m].items() if k != "all"} for m in runs}, indent=1))
    if not same:
        raise SystemExit("clv.parquet from the state differs from the one over the batch files")


if __name__ == "__main__":
    main()
