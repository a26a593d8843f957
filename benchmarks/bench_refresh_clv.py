"""Incremental refresh (issue 17): a ``centile run --state`` stage from the refresh state against the
same stage over every batch file, in the same run (``--stage clv``, the default, or ``steering``).

    python benchmarks/bench_refresh_clv.py [--stage clv|steering] [--data bench-data/c1000000] [--runs 3]
                                           [--work DIR] [--memory-limit 3GB] [--ingest-runs 3]

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

``--stage steering`` (``benchmarks/results/refresh_steering.json``): the session also reads the
data's contacts and customers, and CLV is computed from the state (not timed, the same on both
sides); then the steering history alone (spend, category spend and the response counts: the part
that differs; ``centile.refresh.steering.StateHistory`` against ``centile.steering.history.OrderHistory``)
and the whole ``steer`` (history, affinity, budgets, the plan over 5 media x 13 periods, a medium
with categories) are timed, and the parent checks ``affinity``, ``budgets``, ``plan``,
``plan_summary`` and ``plan_contacts`` are the same bytes.

What the stage's state tables cost: their size on disk, and the ingest of one day's batch (the
data's last day of lines moved one day on, with new order ids: about 1/730 of two years) into the
state, in fresh processes, ``--ingest-runs`` times each alternated, without the stage's tables
(the state as the previous version kept it: its manifest's table list without them) and with
them; the state's manifest is restored after each (the day's run files are then removed).
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
    return Config(tables=MappingProxyType(tables), as_of=as_of, memory_limit=limit)
"""

STEERING = COMMON + r"""
from centile.backend.session import open_session
from centile.clv.compute import clv_settings, compute_clv
from centile.config import load_config
from centile.refresh.clv import state_days
from centile.refresh.state import read_manifest, watermark
from centile.refresh.steering import state_history
from centile.steering.compute import write_steering
from centile.steering.history import OrderHistory
from centile.steering.job import steer
from centile.steering.settings import steering_settings
mode, out, toml = sys.argv[4], Path(sys.argv[5]), sys.argv[6]
as_of = watermark(read_manifest(state))
run = load_config(toml, as_of=as_of, memory_limit=limit)
t0 = time.perf_counter()
with open_session(run, only=("orders", "contacts", "customers")) as s:
    open_s = time.perf_counter() - t0
    clv = compute_clv(s, clv_settings(run), days=state_days(run, state)).customers
    st = steering_settings(run)
    history = (lambda: state_history(run, state, s)) if mode == "state" else (lambda: OrderHistory(s))
    t1, c1 = time.perf_counter(), time.process_time()
    h = history()
    rows = h.spend().height + h.category_spend().height + h.responses(s.as_of, st.response_days).height
    t2, c2 = time.perf_counter(), time.process_time()
    res = steer(s, run, st, clv.select("customer_id", "frequency", "expected_order_value", "clv"), None,
                history=history())
    t3, c3 = time.perf_counter(), time.process_time()

class Staging:
    def path(self, name):
        return str(out / name)

out.mkdir(parents=True, exist_ok=True)
write_steering(res, Staging())
print(json.dumps({"open_s": open_s, "history_s": t2 - t1, "history_cpu_s": c2 - c1, "steering_s": t3 - t2,
                  "steering_cpu_s": c3 - c2, "history_rows": rows, "customers": res.budgets.height,
                  "gap": res.summary["gap"], "as_of": as_of.isoformat()}))
"""

#: a steering config over the data in place: 5 media, one with categories (the category spend)
STEERING_TOML = """[tables.orders]
path = "{data}/orders/*.parquet"

[tables.contacts]
path = "{data}/contacts.parquet"

[tables.customers]
path = "{data}/customers.parquet"

[steering]
[steering.media.catalogue]
cost = 1.20
categories = ["fashion", "home"]
[steering.media.voucher]
cost = 0.50
[steering.media.sale]
cost = 0.30
[steering.media.free_shipping]
cost = 0.80
[steering.media.email]
cost = 0.01
"""

DAY = COMMON + r"""
from centile.refresh import ingest
from centile.refresh.state import collect_garbage, write_manifest
mode, day, without = sys.argv[4], sys.argv[5], sys.argv[6].split(",")
text = (state / "manifest.json").read_text()
doc = json.loads(text)
if mode == "before":  # the state as the previous version kept it: without the stage's tables
    doc["tables"] = [t for t in doc["tables"] if t not in without]
    write_manifest(state, doc)
try:
    t0, c0 = time.perf_counter(), time.process_time()
    res = ingest(cfg(), state, [day])
    t1, c1 = time.perf_counter(), time.process_time()
finally:
    (state / "manifest.json").write_text(text)
    collect_garbage(state, json.loads(text))
print(json.dumps({"ingest_s": t1 - t0, "ingest_cpu_s": c1 - c0, "lines": res.rows["orders"],
                  "applied": len(res.applied)}))
"""

#: the day's batch: the data's last day of lines, one day on, with new order ids
DAY_BATCH = COMMON + r"""
import duckdb
day = sys.argv[4]
src = "read_parquet([" + ", ".join("'" + f + "'" for f in files) + "])"
duckdb.sql(f"SET memory_limit = '1GB'")
duckdb.sql(f"COPY (SELECT * REPLACE (order_ts + INTERVAL 1 DAY AS order_ts, order_id + 1000000000000 AS order_id) "
           f"FROM {src} WHERE CAST(order_ts AS DATE) = (SELECT max(CAST(order_ts AS DATE)) FROM {src})) "
           f"TO '{day}' (FORMAT parquet)")
print(json.dumps({"lines": duckdb.execute(f"SELECT count(*) FROM read_parquet('{day}')").fetchall()[0][0]}))
"""


LOAD = COMMON + REFRESH_LOAD

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


#: per stage: the script, what it times, the files both sides must write alike, the state tables
STAGES = {
    "clv": {"script": CLV, "timed": ("summary_s", "summary_cpu_s", "clv_s", "clv_cpu_s"),
            "files": ("clv.parquet",), "tables": ("purchases",)},
    "steering": {"script": STEERING, "timed": ("history_s", "history_cpu_s", "steering_s", "steering_cpu_s"),
                 "files": tuple(f"{n}.parquet" for n in ("affinity", "budgets", "plan", "plan_summary",
                                                         "plan_contacts")),
                 "tables": ("steering_spend", "steering_categories", "steering_times")},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stage", choices=sorted(STAGES), default="clv")
    ap.add_argument("--data", type=Path, default=Path("bench-data") / "c1000000")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--work", type=Path, default=None, help="keep the state here, and reuse it if already there")
    ap.add_argument("--memory-limit", default="3GB", help="each process's memory budget (DuckDB gets half)")
    ap.add_argument("--ingest-runs", type=int, default=3,
                    help="one day's ingest without and with the stage's tables, this many times each (0: not)")
    args = ap.parse_args()
    stage = STAGES[args.stage]
    data = args.data.resolve()
    with tempfile.TemporaryDirectory(prefix=f"centile-bench-refresh-{args.stage}-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        state = work / "state"
        load, reused = refresh_state(work, LOAD, data, args.memory_limit, keep=bool(args.work))
        extra = []
        if args.stage == "steering":
            toml = work / "steering.toml"
            toml.write_text(STEERING_TOML.format(data=data))
            extra = [str(toml)]
        runs: dict[str, list[dict]] = {"state": [], "batches": []}
        same = True
        for i in range(args.runs):
            for mode in ("state", "batches") if i % 2 == 0 else ("batches", "state"):
                runs[mode].append(run_isolated(stage["script"], str(data), str(state), args.memory_limit, mode,
                                               str(work / f"{mode}-{i}"), *extra))
            same &= all((work / f"state-{i}" / f).read_bytes() == (work / f"batches-{i}" / f).read_bytes()
                        for f in stage["files"])
        ingests: dict[str, list[dict]] = {"before": [], "after": []}
        day = work / "day.parquet"
        if args.ingest_runs:
            day_lines = run_isolated(DAY_BATCH, str(data), str(state), args.memory_limit, str(day))["lines"]
            for i in range(args.ingest_runs):
                for mode in ("before", "after") if i % 2 == 0 else ("after", "before"):
                    ingests[mode].append(run_isolated(DAY, str(data), str(state), args.memory_limit, mode, str(day),
                                                      ",".join(stage["tables"])))
        sizes = {t: sum(f.stat().st_size for f in state.rglob(f"{t}-*") if f.is_file()) for t in stage["tables"]}
        state_bytes = sum(f.stat().st_size for f in state.rglob("*") if f.is_file())
    keys = ("open_s", *stage["timed"], "peak_rss_mb")
    doc = {
        "stage": args.stage, "data": str(args.data), "batch_files": len(list((data / "orders").glob("*.parquet"))),
        "lines": load["lines"], "customers": runs["state"][0]["customers"], "as_of": runs["state"][0]["as_of"],
        "runs": args.runs, "memory_limit": args.memory_limit,
        "initial_load_s": load["seconds"], "initial_load_cpu_s": load.get("load_cpu_s"),
        "initial_load_from_earlier_run": reused,
        "state_tables_mb": {t: round(b / 2**20, 1) for t, b in sizes.items()},
        "state_mb": round(state_bytes / 2**20, 1),
        **{mode: {**{k: median_of(r, k) for k in keys}, "all": r} for mode, r in runs.items()},
        "identical_outputs": {"files": list(stage["files"]), "same_bytes": same},
        "load_average": os.getloadavg(), "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    if args.stage == "clv":
        doc["purchases_mb"] = doc["state_tables_mb"]["purchases"]
    for k in stage["timed"]:
        doc[f"speedup_{k}"] = doc["batches"][k] / doc["state"][k]
    if args.ingest_runs:
        doc["day_ingest"] = {"lines": day_lines, "without_the_stage_tables": {
            k: median_of(ingests["before"], k) for k in ("ingest_s", "ingest_cpu_s", "peak_rss_mb")},
            "with_them": {k: median_of(ingests["after"], k) for k in ("ingest_s", "ingest_cpu_s", "peak_rss_mb")},
            "all": ingests}
    save(f"refresh_{args.stage}", doc)
    print(json.dumps({k: v for k, v in doc.items() if k not in ("machine", "day_ingest")} | {
        m: {k: v for k, v in doc[m].items() if k != "all"} for m in runs} | {
        "day_ingest": {k: v for k, v in doc.get("day_ingest", {}).items() if k != "all"}}, indent=1))
    if not same:
        raise SystemExit(f"{', '.join(stage['files'])} from the state differ from the ones over the batch files")


if __name__ == "__main__":
    main()
