"""Issue 16: ``centile run`` on the local backend against the Dask backend on a LocalCluster.

    python benchmarks/bench_dask.py --customers 200000 [--workers 2] [--threads-per-worker 1]
                                    [--runs 1] [--data DIR] [--memory-limit 4GB]

Uses ``bench-data/c<N>`` (``centile generate --seed 1``; generated when absent and kept) or
``--data``. Each run is a fresh process (alternating local and Dask, ``--runs`` times): the
whole pipeline without the report, ``--force``. The Dask child starts a ``LocalCluster`` of
``--workers`` processes itself (the start is timed apart) and passes its address as the
scheduler, so it can read each worker's peak RSS after the run. Prints one JSON document: per
backend the wall time, per-stage seconds, peak RSS of the client (and of each worker), the bytes
each per-partition step sent to the workers and back to the client (the manifest's
``summary.backend``), and whether every Parquet output is byte-identical. Stored under the
customer count in ``benchmarks/results/dask.json``. On one machine the cluster cannot be faster:
it shows the overhead of the task layer, the per-worker rescans and the frames' round trip.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine, run_isolated, save  # noqa: E402

CENTILE = [sys.executable, "-c", "import sys; sys.argv[0] = 'centile'; from centile.cli import main; main()"]

_RUN = r"""
import json, sys, time
from centile.config import load_config
from centile.run import run_pipeline

data, out, backend, workers, tpw, mem = sys.argv[1:7]
over = {"memory_limit": mem or None}
client = cluster = None
start = 0.0
if backend == "dask":
    import distributed
    t0 = time.perf_counter()
    cluster = distributed.LocalCluster(n_workers=int(workers), threads_per_worker=int(tpw), processes=True,
                                       dashboard_address=":0", silence_logs=40)
    client = distributed.Client(cluster, set_as_default=False)
    client.wait_for_workers(int(workers))
    start = time.perf_counter() - t0
    over.update(backend="dask", scheduler=cluster.scheduler_address)
t0 = time.perf_counter()
res = run_pipeline(load_config(data=data, **over), out, report=False, force=True)
run_s = time.perf_counter() - t0
doc = {"run_s": round(run_s, 2), "cluster_start_s": round(start, 2),
       "stages": {k: {"seconds": v.get("seconds"), "peak_rss_mb": v.get("peak_rss_mb"), "status": v["status"]}
                  for k, v in res.stages.items()},
       "backend": json.load(open(f"{out}/manifest.json"))["summary"].get("backend")}
if client is not None:
    def _hwm():
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) / 1024
    doc["worker_peak_rss_mb"] = sorted(round(v, 1) for v in client.run(_hwm).values())
    client.close()
    cluster.close()
print(json.dumps(doc))
"""


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.parquet"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=200_000)
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads-per-worker", type=int, default=1)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--memory-limit", default="")
    args = ap.parse_args()

    data = args.data or Path("bench-data") / f"c{args.customers}"
    if not data.exists():
        subprocess.run([*CENTILE, "generate", "--customers", str(args.customers), "--seed", "1", "--out", str(data)],
                       check=True, stdout=subprocess.DEVNULL)
    runs: dict[str, list[dict]] = {"local": [], "dask": []}
    identical = None
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-dask-", dir=".") as tmp:
        for _ in range(args.runs):
            for backend in ("local", "dask"):
                out = Path(tmp) / backend
                runs[backend].append(run_isolated(_RUN, str(data), str(out), backend, str(args.workers),
                                                  str(args.threads_per_worker), args.memory_limit))
            a, b = _digests(Path(tmp) / "local"), _digests(Path(tmp) / "dask")
            identical = bool(a) and a == b

    def summary(rs: list[dict]) -> dict:
        last = rs[-1]
        return {"run_s_median": statistics.median(r["run_s"] for r in rs), "runs_s": [r["run_s"] for r in rs],
                "process_peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
                "cluster_start_s": last["cluster_start_s"], "stages": last["stages"],
                "worker_peak_rss_mb": last.get("worker_peak_rss_mb"), "backend": last["backend"]}

    doc = {"customers": args.customers, "data": str(data), "workers": args.workers,
           "threads_per_worker": args.threads_per_worker, "memory_limit": args.memory_limit or None,
           "runs": args.runs, "load_before": load_before, "machine": machine(),
           "identical_parquet_outputs": identical,
           "local": summary(runs["local"]), "dask": summary(runs["dask"])}
    doc["load_after"] = os.getloadavg()[0]
    path = RESULTS / "dask.json"
    stored = json.loads(path.read_text()) if path.exists() else {}
    stored[str(args.customers)] = doc
    save("dask", stored)
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
