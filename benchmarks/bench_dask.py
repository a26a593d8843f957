"""Issue 16: ``centile run`` on the local backend against the Dask backend on a LocalCluster.

    python benchmarks/bench_dask.py --customers 200000 [--workers 2] [--threads-per-worker 1]
                                    [--runs 1] [--data DIR] [--memory-limit 4GB]
                                    [--backends local,dask] [--key KEY]

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

data, out, backend, workers, tpw, mem, apart = sys.argv[1:8]
over = {"memory_limit": mem or None}
client = cluster = None
procs = []
start = 0.0
if backend == "dask":
    import distributed
    t0 = time.perf_counter()
    if apart == "1":
        # the layout of a real cluster: `dask scheduler` and `dask worker` processes of their own, so
        # this process's CPU is the client's alone (a LocalCluster runs its scheduler in this process)
        import os, subprocess, tempfile
        sfile = os.path.join(tempfile.mkdtemp(prefix="bench-dask-sched-"), "scheduler.json")
        quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--port", "0",
                                       "--dashboard-address", ":0", "--scheduler-file", sfile], **quiet))
        while not os.path.exists(sfile):
            time.sleep(0.1)
        procs.append(subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file",
                                       sfile, "--nworkers", workers, "--nthreads", tpw, "--dashboard-address",
                                       ":0"], **quiet))
        client = distributed.Client(scheduler_file=sfile, set_as_default=False)
        address = client.scheduler.address
    else:
        cluster = distributed.LocalCluster(n_workers=int(workers), threads_per_worker=int(tpw), processes=True,
                                           dashboard_address=":0", silence_logs=40)
        client = distributed.Client(cluster, set_as_default=False)
        address = cluster.scheduler_address
    client.wait_for_workers(int(workers))
    start = time.perf_counter() - t0
    over.update(backend="dask", scheduler=address)
t0 = time.perf_counter()
res = run_pipeline(load_config(data=data, **over), out, report=False, force=True)
run_s = time.perf_counter() - t0
# client CPU of a stage that is set by a sample size, not by the customers (the k-means fit)
fixed = {"segments": (res.summaries.get("segments") or {}).get("kmeans_fit_cpu_s")}
doc = {"run_s": round(run_s, 2), "cluster_start_s": round(start, 2),
       "run_cpu_s": round(time.process_time(), 2),
       "stages": {k: {"seconds": v.get("seconds"), "cpu_s": v.get("cpu_s"), "peak_rss_mb": v.get("peak_rss_mb"),
                      "status": v["status"], **({"network": v["network"]} if "network" in v else {}),
                      **({"fixed_client_cpu_s": fixed[k]} if fixed.get(k) else {})}
                  for k, v in res.stages.items()},
       "lines": res.summaries["inputs"]["tables"]["orders"]["rows_valid"],
       "pieces": res.summaries["inputs"].get("pieces") or {},
       "backend": json.load(open(f"{out}/manifest.json"))["summary"].get("backend")}
if client is not None:
    def _hwm():
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) / 1024
    doc["worker_peak_rss_mb"] = sorted(round(v, 1) for v in client.run(_hwm).values())
    if procs:
        import psutil
        t = psutil.Process(procs[0].pid).cpu_times()
        doc["scheduler_process"] = True
        doc["scheduler_cpu_s"] = round(t.user + t.system, 2)
        client.shutdown()
        for p in procs:
            p.wait(timeout=60)
    else:
        client.close()
        cluster.close()
print(json.dumps(doc))
"""


#: what a step sends back grows with the customers (per-customer rows: features, the CLV summary and
#: predictions, the segments' rule values and k-means labels, the attribution journeys, the top-k
#: recommendations) or is a merged state whose size is set by the items, segments and replicates, not
#: by the customers (uplift cells and replicates, basket item counts, frequent pairs and triples,
#: co-counts above min_pair_count, the segments' scaling moments and profile sums)
PER_CUSTOMER_STEPS = ("features", "clv", "clv: predicting", "segments: rules", "segments: clusters", "attribution",
                      "recommend: scoring")

#: the step whose tasks read the input first (every later step reads the partition cache): with
#: predicate push-down on the hash, each of its tasks scans the whole files; from customer-hash
#: pieces (``[backend] buckets``, on by default on a cluster), only its partition's pieces
FIRST_READ_STEP = "features"

#: the stage whose client time is the inputs' validation (it opens the session), a scan of every line
FIRST_STAGE = "features"


def paper_model(dask: dict, customers: int, *, target_customers: int = 100_000_000,
                target_lines: int = 2_000_000_000, workers: tuple[int, ...] = (8, 32, 128, 512),
                threads_per_worker: int = 1, parts_per_thread: int = 2) -> dict:
    """Time per stage, client memory and network bytes at ``target_customers`` / ``target_lines`` on
    N workers, from one measured Dask run (``dask``: the run's document from ``_RUN``).

    Per stage: workers' part = the tasks' CPU seconds (their threads' CPU, merges included) scaled
    by the lines and divided over N x T threads. When the run read the input by push-down (no
    ``pieces`` in the run), the first read step's open cost is a scan of the whole input per task
    (P = parts_per_thread x N x T tasks), so each thread pays ``parts_per_thread`` whole scans
    whatever N; when it read customer-hash pieces, each task opens only its partition's pieces, so
    that cost divides over the threads like the rest, and the pieces' one-time write is in the
    client's CPU of the first stage (it scales with the lines). Client part = the client process's CPU seconds in
    the stage (it idles while it waits for the tasks; a LocalCluster's scheduler runs in it and is
    counted), scaled by the lines for the first stage (validation reads every line) and by the
    customers otherwise (less a stage's ``fixed_client_cpu_s``, e.g. the k-means fit on its sample, kept
    as measured). The two parts are added (the client's global steps run between the steps). Bytes to the client scale with the
    customers for per-customer steps and stay as measured for merged states. Bytes to the workers
    by kind: each task's own arguments times the tasks (``parts_per_thread`` x N x T per step), values
    sent once to every worker with the workers only (the validation job, the item dictionaries, the
    k-means and recommendation models, the frequent items: they grow with the catalogue or a fixed
    sample, not with the customers; per-customer frames go split by partition), per-customer frames
    split by partition with the customers only. Client memory: the
    measured client peak scaled by the customers, and the per-customer columns that come back.
    """
    lines = dask["lines"]
    pieces = bool(dask.get("pieces"))
    sl, sc = target_lines / lines, target_customers / customers
    rates: dict[str, dict] = {}
    for stage, rec in dask["stages"].items():
        if rec.get("status") != "ran":
            continue
        steps = (rec.get("network") or {}).get("steps", {})
        task_cpu = sum(st.get("cpu_s", 0.0) for st in steps.values())
        full_scan = 0.0
        if FIRST_READ_STEP in steps and not pieces:
            st = steps[FIRST_READ_STEP]
            wall = st["open_s"] + st["work_s"]
            # CPU of the opening (the filtered scan) by its share of the tasks' wall time, per task
            full_scan = st["cpu_s"] * st["open_s"] / wall / st["tasks"] if wall else 0.0
            task_cpu -= full_scan * st["tasks"]
        to_client_cust = sum(st["bytes_to_client"] + st["bytes_via_files"] for k, st in steps.items()
                             if k in PER_CUSTOMER_STEPS)
        to_client_fixed = sum(st["bytes_to_client"] + st["bytes_via_files"] for k, st in steps.items()
                              if k not in PER_CUSTOMER_STEPS)
        rates[stage] = {
            "client_cpu_s": rec.get("cpu_s") or 0.0, "client_scales_with": "lines" if stage == FIRST_STAGE else "customers",
            "fixed_client_cpu_s": min(rec.get("fixed_client_cpu_s") or 0.0, rec.get("cpu_s") or 0.0),
            "task_cpu_s": round(task_cpu, 3), "task_ns_per_line": round(1e9 * task_cpu / lines, 1),
            "full_scan_cpu_s_per_task": round(full_scan, 3),
            "full_scan_ns_per_line": round(1e9 * full_scan / lines, 1),
            "bytes_to_client_per_customer": round(to_client_cust / customers, 1),
            "bytes_to_client_fixed": to_client_fixed,
            "bytes_to_workers": sum(st["bytes_to_workers"] for st in steps.values()),
            **_sent_by_kind(steps)}
    workers0 = dask["backend"]["workers"] if dask.get("backend") else 2
    client_peak_mb = dask["process_peak_rss_mb"]
    per_customer_cols = sum(r["bytes_to_client_per_customer"] for r in rates.values())
    rows = []
    for n in workers:
        threads = n * threads_per_worker
        per_stage = {}
        for stage, r in rates.items():
            fixed = r["fixed_client_cpu_s"]
            client = (r["client_cpu_s"] - fixed) * (sl if r["client_scales_with"] == "lines" else sc) + fixed
            on_workers = r["task_cpu_s"] * sl / threads + parts_per_thread * r["full_scan_cpu_s_per_task"] * sl
            per_stage[stage] = {"client_s": round(client, 1), "workers_s": round(on_workers, 1),
                                "total_s": round(client + on_workers, 1)}
        rows.append({
            "workers": n, "threads": threads,
            "hours": round(sum(v["total_s"] for v in per_stage.values()) / 3600, 2),
            "client_hours": round(sum(v["client_s"] for v in per_stage.values()) / 3600, 2),
            "stages": per_stage,
            "bytes_to_client_gb": round(sum(r["bytes_to_client_per_customer"] * target_customers
                                            + r["bytes_to_client_fixed"] for r in rates.values()) / 1e9, 2),
            "bytes_to_workers_gb": round(sum(
                r["bytes_per_task_each"] * parts_per_thread * threads
                + r["bytes_broadcast"] * n / workers0 + r.get("bytes_broadcast_unsplit", 0) * sc * n / workers0
                + r["bytes_per_customer"] * sc
                for r in rates.values()) / 1e9, 2),
            "bytes_kept_read_gb": round(sum(r.get("bytes_kept_on_workers", 0) for r in rates.values()) * sc / 1e9, 2)})
    first_read = (f"the first read step ({FIRST_READ_STEP}) scans the whole input once per task "
                  f"({parts_per_thread} tasks per thread)" if not pieces else
                  f"the first read step ({FIRST_READ_STEP}) reads only its partition's customer-hash pieces; "
                  "the client writes the pieces once, in the first stage's client CPU, counted here as if "
                  "serial (DuckDB spreads that write over the client's cores)")
    return {"target_customers": target_customers, "target_lines": target_lines,
            "measured_customers": customers, "measured_lines": lines, "pieces": dask.get("pieces") or {},
            "client_memory_gb": {"peak_scaled": round(client_peak_mb * sc / 1024, 1),
                                 "per_customer_columns_back": round(per_customer_cols * target_customers / 1e9, 1)},
            "rates": rates, "rows": rows,
            "assumptions": [
                "CPU seconds, not wall: the measuring machine was shared; a thread of a real worker is assumed "
                "as fast as one of this machine",
                f"task work scales with the order lines and divides over the worker threads; {first_read}",
                "the client's CPU per stage scales with the lines for the first stage (validation) and with "
                "the customers otherwise, except a stage's fixed_client_cpu_s (the k-means fit on its sample of "
                "fit_sample customers), which stays as measured; it does not divide over workers; "
                + ("the scheduler ran in a process of its own, so its CPU is not the client's"
                   if dask.get("scheduler_process") else
                   "the LocalCluster's scheduler ran in the client process, so its CPU is counted as the "
                   "client's (on a real cluster it runs elsewhere)"),
                "per-customer columns that tasks read from the rows earlier tasks kept in the shared scratch "
                "folder (the feature rows, the CLV summary) scale with the customers (bytes_kept_read_gb); they "
                "move between the shared file system and the workers, not through the client",
                "no network or storage bandwidth limit, no scheduler overhead per task, no straggler"]}


def _sent_by_kind(steps: dict) -> dict:
    """The bytes a stage's steps sent to the workers by kind: ``bytes_per_task_each``, what one task
    of each step carries (its pickled job and small arguments), summed over the steps; values sent
    to every worker once; per-customer frames sent once. A run recorded before the kinds were
    separated counts all as ``bytes_broadcast_unsplit``: sent to every worker and growing with the
    customers (the upper bound)."""
    def total(key: str) -> int:
        return sum(int(st.get(key, 0)) for st in steps.values())

    split = any(k in st for st in steps.values() for k in ("bytes_per_task", "bytes_broadcast"))
    each = sum(st.get("bytes_per_task", 0) / st["tasks"] for st in steps.values() if st.get("tasks"))
    return {"bytes_per_task_each": round(each, 1) if split else 0.0,
            "bytes_broadcast": total("bytes_broadcast") if split else 0,
            "bytes_broadcast_unsplit": 0 if split else total("bytes_to_workers"),
            "bytes_per_customer": total("bytes_per_customer"),
            # per-customer columns the tasks read from the rows earlier tasks kept in the shared scratch
            # folder instead of getting them from the client (0 in runs recorded before rows were kept)
            "bytes_kept_on_workers": total("bytes_kept_on_workers")}


def print_model(model: dict) -> str:
    """The model's rows as a markdown table (for the README)."""
    stages = list(model["rates"])
    head = ("| workers | " + " | ".join(stages)
            + " | total | of it on the client | to client | to workers | kept rows read by workers |")
    out = [head, "|" + " --- |" * (len(stages) + 7)]
    for r in model["rows"]:
        cells = [f"{r['stages'][s]['total_s'] / 60:.0f} min" for s in stages]
        out.append(f"| {r['workers']} | " + " | ".join(cells) + f" | {r['hours']:.1f} h | {r['client_hours']:.1f} h"
                   f" | {r['bytes_to_client_gb']:.0f} GB | {r['bytes_to_workers_gb']:.0f} GB"
                   f" | {r.get('bytes_kept_read_gb', 0):.0f} GB |")
    return "\n".join(out)


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
    ap.add_argument("--backends", default="local,dask", help="which to run (default both; one: no identity check)")
    ap.add_argument("--key", help="store the result under this key (default: the customer count)")
    ap.add_argument("--scheduler-process", action="store_true",
                    help="run the Dask scheduler and workers as processes of their own (`dask scheduler`, "
                         "`dask worker`), as on a real cluster: the client's CPU then excludes the scheduler's, "
                         "which a LocalCluster runs in the client process")
    args = ap.parse_args()

    data = args.data or Path("bench-data") / f"c{args.customers}"
    if not data.exists():
        subprocess.run([*CENTILE, "generate", "--customers", str(args.customers), "--seed", "1", "--out", str(data)],
                       check=True, stdout=subprocess.DEVNULL)
    backends = tuple(b for b in ("local", "dask") if b in args.backends.split(","))
    runs: dict[str, list[dict]] = {b: [] for b in backends}
    identical = None
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-dask-", dir=".") as tmp:
        for _ in range(args.runs):
            for backend in backends:
                out = Path(tmp) / backend
                runs[backend].append(run_isolated(_RUN, str(data), str(out), backend, str(args.workers),
                                                  str(args.threads_per_worker), args.memory_limit,
                                                  "1" if args.scheduler_process else "0"))
            if len(backends) == 2:
                a, b = _digests(Path(tmp) / "local"), _digests(Path(tmp) / "dask")
                identical = bool(a) and a == b

    def summary(rs: list[dict]) -> dict:
        last = rs[-1]
        return {"run_s_median": statistics.median(r["run_s"] for r in rs), "runs_s": [r["run_s"] for r in rs],
                "client_cpu_s": last["run_cpu_s"], "lines": last["lines"],
                "process_peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
                "cluster_start_s": last["cluster_start_s"], "stages": last["stages"], "pieces": last.get("pieces"),
                "worker_peak_rss_mb": last.get("worker_peak_rss_mb"), "backend": last["backend"],
                **({"scheduler_process": True, "scheduler_cpu_s": last["scheduler_cpu_s"]}
                   if last.get("scheduler_process") else {})}

    doc = {"customers": args.customers, "data": str(data), "workers": args.workers,
           "threads_per_worker": args.threads_per_worker, "memory_limit": args.memory_limit or None,
           "runs": args.runs, "load_before": load_before, "machine": machine(),
           "identical_parquet_outputs": identical, **{b: summary(runs[b]) for b in backends}}
    doc["load_after"] = os.getloadavg()[0]
    if "dask" in runs:
        doc["paper_model"] = paper_model(doc["dask"], args.customers)
        doc["paper_model"]["table"] = print_model(doc["paper_model"])
    path = RESULTS / "dask.json"
    stored = json.loads(path.read_text()) if path.exists() else {}
    key = args.key or str(args.customers)
    if key in stored:  # the previous run under this key, one level deep
        doc["earlier"] = {k: v for k, v in stored[key].items() if k != "earlier"}
    stored[key] = doc
    save("dask", stored)
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
