"""Issue 16: what opening a large CSV input costs the client on the Dask backend.

    python benchmarks/bench_dask_open.py --data bench-data/c300000 [--csv /tmp/orders.csv]
                                         [--filter "quantity > 1"] [--runs 2] [--before DIR]
                                         [--memory-limit 2GB] [--name KEY]

The order lines of ``--data`` are written once as one CSV file (``--csv``, kept); the other tables
stay Parquet. Each run is a fresh process that starts a LocalCluster of 2 workers x 1 thread, then
times ``DaskBackend.open()`` of every table: the client's wall and CPU seconds (this process, all
its threads), and of them the validation step on the workers (its wall time, the tasks' CPU). The
rest of the wall time is the client's own: registering the tables (before: counting every CSV line
and every line a filter keeps), choosing the partition count, merging the counts.

``--before DIR``: a tree holding an earlier ``centile`` package (``DIR/centile``, with ``kernels``
and ``sql`` inside), put first on ``PYTHONPATH`` of the child and of its workers; runs alternate
before / after. Prints one JSON document, stored under ``--name`` in
``benchmarks/results/dask_open.json`` (the previous figures of that key under ``earlier``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine, save  # noqa: E402

_OPEN = r"""
import json, sys, time
toml, mem = sys.argv[1:3]
import distributed
from centile.config import load_config
from centile.backend.dask import DaskBackend

cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                   silence_logs=40)
client = distributed.Client(cluster, set_as_default=False)
client.wait_for_workers(2)
cfg = load_config(toml, backend="dask", scheduler=cluster.scheduler_address, memory_limit=mem)
spill = __import__("pathlib").Path(sys.argv[3])
with DaskBackend(cfg) as b:
    t0, c0 = time.perf_counter(), time.process_time()
    s = b.open(spill=spill)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    v = b.traffic.get("validation", {})
    o = s.summaries["orders"]
    doc = {"open_s": round(wall, 3), "client_cpu_s": round(cpu, 3),
           "validation_wall_s": round(v.get("wall_s", 0.0), 3), "worker_cpu_s": round(v.get("cpu_s", 0.0), 3),
           "client_own_s": round(wall - v.get("wall_s", 0.0), 3),
           "orders_rows_read": o.rows_read, "orders_rows_filtered": o.rows_filtered,
           "orders_rows_valid": o.rows_valid, "pieces": s.pieces["orders"].count if "orders" in s.pieces else None,
           "lines_estimate": getattr(s, "lines_estimate", None)}
    s.close()
client.close()
cluster.close()
print(json.dumps(doc))
"""


def write_csv(data: Path, csv: Path) -> None:
    import duckdb

    if csv.exists():
        return
    con = duckdb.connect()
    tmp = csv.with_name(csv.name + ".tmp")
    con.execute(f"COPY (SELECT * FROM read_parquet('{data}/orders/**/*.parquet')) TO '{tmp}' (FORMAT csv, HEADER)")
    os.replace(tmp, csv)


def one(toml: Path, mem: str, before: str | None) -> dict:
    env = dict(os.environ)
    if before:
        env["PYTHONPATH"] = before + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    else:
        env.pop("PYTHONPATH", None)
    with tempfile.TemporaryDirectory(dir="/tmp") as spill:
        load0 = os.getloadavg()
        p = subprocess.run([sys.executable, "-c", _OPEN, str(toml), mem, spill], env=env, capture_output=True,
                           text=True, check=False)
        load1 = os.getloadavg()
    if p.returncode:
        raise RuntimeError(p.stderr[-3000:])
    doc = json.loads(p.stdout.strip().splitlines()[-1])
    doc["load"] = [round(load0[0], 2), round(load1[0], 2)]
    return doc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--csv", type=Path)
    ap.add_argument("--filter")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--before")
    ap.add_argument("--memory-limit", default="2GB")
    ap.add_argument("--name")
    a = ap.parse_args()
    data = a.data.resolve()
    csv = (a.csv or Path(tempfile.gettempdir()) / f"centile-orders-{data.name}.csv").resolve()
    write_csv(data, csv)
    toml = Path(tempfile.mkdtemp()) / "open.toml"
    filt = f'filter = "{a.filter}"\n' if a.filter else ""
    toml.write_text(f'data = "{data}"\n[tables.orders]\npath = "{csv}"\nformat = "csv"\n{filt}')
    variants = (["before", "after"] if a.before else ["after"])
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for _ in range(a.runs):
        for v in variants:
            runs[v].append(one(toml, a.memory_limit, a.before if v == "before" else None))
    out = {"machine": machine(), "data": str(a.data), "csv": str(csv), "csv_bytes": csv.stat().st_size,
           "filter": a.filter, "memory_limit": a.memory_limit, "cluster": "LocalCluster, 2 workers x 1 thread",
           "command": " ".join(["python", "benchmarks/bench_dask_open.py", *sys.argv[1:]]), "runs": runs,
           "median": {v: {k: statistics.median(r[k] for r in rs) for k in
                          ("open_s", "client_cpu_s", "client_own_s", "worker_cpu_s", "validation_wall_s")}
                      for v, rs in runs.items()}}
    print(json.dumps(out, indent=2))
    key = a.name or f"{data.name}{'-filter' if a.filter else ''}"
    path = RESULTS / "dask_open.json"
    doc = json.loads(path.read_text()) if path.exists() else {}
    if key in doc:
        out["earlier"] = {k: v for k, v in doc[key].items() if k != "earlier"}
    doc[key] = out
    save("dask_open", doc)


if __name__ == "__main__":
    main()
