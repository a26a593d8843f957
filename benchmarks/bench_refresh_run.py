"""Incremental refresh (issue 17): the whole ``centile run --state`` against ``centile run`` over the
same batch files, in the same run.

    python benchmarks/bench_refresh_run.py [--data bench-data/c1000000] [--runs 3] [--work DIR]
                                           [--memory-limit 3GB]

The order files of ``--data`` (``centile generate`` output, read in place) and its e-mail events are
the batches: they are ingested into a state in ``--work`` once (timed: the initial load; reused when
a previous run left it there). The other tables (products, customers, contacts, touchpoints) are
read from ``--data`` by both runs, with a ``[steering]`` section so that every stage runs. Then,
alternating, in fresh processes (peak RSS per run), ``--runs`` times each, with ``force`` (no stage
reused) and the report off:

* state: ``run_pipeline(..., state=DIR)`` (``centile run --state DIR``);
* batches: ``run_pipeline`` over the batch files at the state's watermark (``centile run --as-of``).

Each records wall and CPU seconds (every thread of the process) and the seconds of every stage;
the parent checks that every Parquet file of the two output folders holds the same bytes, and
writes medians, ratios, which batch tables the state run left unvalidated, and the machine load to
``benchmarks/results/refresh_run.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, median_of, run_isolated, save  # noqa: E402

#: every stage runs (steering needs its section; the rest run on what the data holds)
SECTIONS = "[steering]\nglobal_budget = 50000.0\ncap = 4\ngap = 1\n"

COMMON = r"""
import datetime as dt, json, sys, time
from pathlib import Path
from centile.config import load_config
work, limit = Path(sys.argv[1]), sys.argv[2]
state = work / "state"
def cfg(name):
    return load_config(work / name).with_(memory_limit=limit)
"""

LOAD = COMMON + r"""
from centile.refresh import ingest
data = Path(sys.argv[3])
orders = sorted((data / "orders").glob("*.parquet"))
t0, c0 = time.perf_counter(), time.process_time()
res = ingest(cfg("run.toml"), state, orders, [data / "email_events.parquet"])
print(json.dumps({"seconds": time.perf_counter() - t0, "load_cpu_s": time.process_time() - c0,
                  "watermark": res.watermark.isoformat(), "lines": res.rows["orders"]}))
"""

RUN = COMMON + r"""
from centile.refresh.state import read_manifest, watermark
from centile.run import run_pipeline
mode, out = sys.argv[3], Path(sys.argv[4])
as_of = watermark(read_manifest(state))
t0 = time.perf_counter()
if mode == "state":
    res = run_pipeline(cfg("run.toml"), out, force=True, report=False, state=state)
else:
    res = run_pipeline(cfg("full.toml").with_(as_of=as_of), out, force=True, report=False)
seconds = time.perf_counter() - t0
doc = json.loads((out / "manifest.json").read_text())
print(json.dumps({"run_s": seconds, "stages": {k: r.get("seconds") for k, r in res.stages.items()},
                  "status": {k: r["status"] for k, r in res.stages.items()},
                  "from_state": doc["summary"]["inputs"].get("read_from_refresh_state", [])}))
"""


def _configs(data: Path, work: Path) -> None:
    others = "".join(f'[tables.{t}]\npath = "{data / t}.parquet"\n\n'
                     for t in ("products", "customers", "contacts", "touchpoints") if (data / f"{t}.parquet").exists())
    (work / "run.toml").write_text(others + SECTIONS + "[refresh]\n")  # [refresh]: no orders table needed
    (work / "full.toml").write_text(f'[tables.orders]\npath = "{data / "orders"}"\n\n'
                                    f'[tables.email_events]\npath = "{data / "email_events.parquet"}"\n\n'
                                    + others + SECTIONS)


def _same(a: Path, b: Path) -> list[str]:
    names = sorted({p.name for p in a.glob("*.parquet")} | {p.name for p in b.glob("*.parquet")})
    return [n for n in names if not (a / n).exists() or not (b / n).exists()
            or (a / n).read_bytes() != (b / n).read_bytes()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="bench-data/c1000000")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--work", help="keep the state here and reuse it (default: a temporary folder)")
    ap.add_argument("--memory-limit", default="3GB")
    args = ap.parse_args()
    data = Path(args.data).resolve()
    work = Path(args.work or tempfile.mkdtemp(prefix="centile-bench-refresh-run-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    _configs(data, work)
    info = work / "load.json"
    if not (work / "state" / "manifest.json").exists():
        load = run_isolated(LOAD, str(work), args.memory_limit, str(data))
        info.write_text(json.dumps(load))
    load = json.loads(info.read_text())
    runs: dict[str, list[dict]] = {"state": [], "batches": []}
    loads = [os.getloadavg()[0]]
    for i in range(args.runs):
        for mode in ("state", "batches"):
            out = work / f"out-{mode}"
            runs[mode].append(run_isolated(RUN, str(work), args.memory_limit, mode, str(out)))
            loads.append(os.getloadavg()[0])
            print(f"run {i + 1} {mode}: {runs[mode][-1]['wall_s']:.1f} s, {runs[mode][-1]['cpu_s']:.1f} CPU s",
                  file=sys.stderr)
    differ = _same(work / "out-state", work / "out-batches")
    if differ:
        raise SystemExit(f"the two runs wrote different files: {differ}")
    med = {m: {k: round(median_of(r, k), 2) for k in ("wall_s", "cpu_s", "peak_rss_mb")} for m, r in runs.items()}
    stages = {m: {s: round(median_of([{"v": r["stages"][s] or 0.0} for r in rs], "v"), 2) for s in rs[0]["stages"]}
              for m, rs in runs.items()}
    doc = {
        "benchmark": "refresh_run", "data": args.data, "runs": args.runs, "memory_limit": args.memory_limit,
        "order_lines": load["lines"], "initial_load_s": round(load["seconds"], 1), "watermark": load["watermark"],
        "state": med["state"], "batches": med["batches"],
        "speedup_wall": round(med["batches"]["wall_s"] / med["state"]["wall_s"], 2),
        "speedup_cpu": round(med["batches"]["cpu_s"] / med["state"]["cpu_s"], 2),
        "stage_seconds": stages, "read_from_refresh_state": runs["state"][0]["from_state"],
        "status": runs["state"][0]["status"], "identical_parquet_files": True,
        "all_runs": {m: [{k: r[k] for k in ("wall_s", "cpu_s", "peak_rss_mb")} for r in rs] for m, rs in runs.items()},
        "load_average_1m": [round(x, 2) for x in loads], "machine": machine(),
    }
    print(json.dumps(doc, indent=2))
    print(save("refresh_run", doc))


if __name__ == "__main__":
    main()
