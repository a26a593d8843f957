"""Issues 12 and 16: customer partitions reading the input by predicate push-down on the hash
against reading customer-hash pieces written once (``[backend] buckets = "off"`` / ``"on"``).

    python benchmarks/bench_buckets.py --data bench-data/c1000000 [--partitions 4] [--runs 1]
                                       [--memory-limit 3GB] [--backend duckdb|dask] [--workers 2]

``--modes on+client,on+workers`` on Dask compares the client validating the input and writing the
pieces itself with tasks over chunks of the input doing it (issue 16).

The feature job (``run_features``: validation, the feature queries per partition, the writes; or
with ``--job run`` the whole ``centile run`` without the report) in a fresh process per run, the two modes (``--modes``, default ``off,on``) alternating, ``--runs`` times. ``--backend dask`` starts a
``LocalCluster`` of ``--workers`` processes × 1 thread in the child (its start is not timed) and
counts the workers' CPU seconds and bytes read too. Per run: wall seconds, CPU seconds (user +
sys of the client process and, on Dask, of every worker process over the run), peak RSS of the
client, bytes read through ``read``/``pread`` (``rchar`` of ``/proc/<pid>/io``: page-cache hits
included, so it counts decoding work, not disk traffic) and written (``wchar``: the pieces and
the outputs), and the time from the start to each progress message. The Parquet outputs of the
two modes are compared byte for byte. Results under ``benchmarks/results/buckets.json``, keyed by
backend, customers and partitions.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine, median_of, run_isolated, save  # noqa: E402

CHILD = r"""
import json, os, sys, time
from centile.config import load_config
from centile.features import run_features

data, out, mode, parts, mem, backend, workers, job = sys.argv[1:9]


def stat():
    io = dict(line.split(": ") for line in open("/proc/self/io").read().splitlines())
    t = os.times()
    return {"cpu_s": t.user + t.system, "rchar": int(io["rchar"]), "wchar": int(io["wchar"])}


mode, _, where = mode.partition("+")
if where == "client":  # the client validates and writes the pieces itself (before issue 16's chunk tasks)
    import centile.backend.dask as dask_backend
    _open = dask_backend.open_session
    dask_backend.open_session = lambda *a, chunked=None, **k: _open(*a, **k)
over = {"partitions": int(parts) or None, "memory_limit": mem or None, "buckets": mode}
client = None
if backend == "dask":
    import distributed
    cluster = distributed.LocalCluster(n_workers=int(workers), threads_per_worker=1, processes=True,
                                       dashboard_address=":0", silence_logs=40)
    client = distributed.Client(cluster, set_as_default=False)
    client.wait_for_workers(int(workers))
    over.update(backend="dask", scheduler=cluster.scheduler_address)
w0 = client.run(stat) if client else {}
s0 = stat()
t0 = time.perf_counter()
said = []
say = lambda m: said.append((round(time.perf_counter() - t0, 2), m))  # noqa: E731
if job == "run":
    from centile.run import run_pipeline
    res = run_pipeline(load_config(data=data, **over), out, report=False, force=True, progress=say)
    customers = res.summaries["inputs"]["customers"]
else:
    customers = run_features(load_config(data=data, **over), out=out, progress=say).features.height
wall = time.perf_counter() - t0
s1 = stat()
w1 = client.run(stat) if client else {}
workers_d = {a: {k: w1[a][k] - w0[a][k] for k in w1[a]} for a in w1}
manifest = json.load(open(os.path.join(out, "manifest.json")))
print(json.dumps({
    "seconds": round(wall, 2), "client": {k: s1[k] - s0[k] for k in s1}, "workers": workers_d,
    "customers": customers, "progress": said, "timings": manifest.get("timings"),
    "stages": {k: {"seconds": v.get("seconds"), "cpu_s": v.get("cpu_s")}
               for k, v in (manifest.get("stages") or {}).items() if isinstance(v, dict)},
}))
"""


PHASES = r"""
import json, sys, time
from pathlib import Path
from centile.backend import buckets
from centile.backend.partitions import Partitioning
from centile.backend.session import open_session
from centile.backend.sources import is_table
from centile.config import load_config
from centile.features.compute import FEATURE_TABLES

data, scratch, parts, mem = sys.argv[1:5]
cfg = load_config(data=data, partitions=int(parts), memory_limit=mem or None, buckets="off")
P = Partitioning(int(parts))
out = {}


def timed(sql):
    c0, t0 = time.process_time(), time.perf_counter()
    s.con.execute(sql).fetchall()
    return {"seconds": round(time.perf_counter() - t0, 3), "cpu_s": round(time.process_time() - c0, 3)}


# what one partition's scan of a validated table costs when it filters the whole table by the hash,
# what writing the table into pieces costs once, and what one partition's scan of its pieces costs
with open_session(cfg, only=FEATURE_TABLES, spill=scratch) as s:
    for t in ("orders", "email_events", "customers"):
        kind = "table" if is_table(s.con, t + "_valid") else "view over the input files"
        scan = f"SELECT count(*), count(DISTINCT customer_id) FROM {t}_valid"
        pushed = timed(f"{scan} WHERE {P.predicate(1)}")
        t0, c0 = time.perf_counter(), time.process_time()
        p = buckets.write_pieces(s.con, t, [c for c in s.tables[t].columns], Path(scratch) / "pieces" / t, P.count,
                                 with_rejects=kind != "table")
        write = {"seconds": round(time.perf_counter() - t0, 3), "cpu_s": round(time.process_time() - c0, 3)}
        piece = timed(f"SELECT count(*), count(DISTINCT customer_id) FROM ({p.select(P.bounds(1))})")
        out[t] = {"kind": kind, "rows": s.summaries[t].rows_read, "partition_scan_push_down": pushed,
                  "write_pieces_once": write, "partition_scan_of_its_pieces": piece,
                  "pieces_mb": round(sum(f.stat().st_size for f in Path(p.folder).rglob("*.parquet")) / 1e6, 1)}
print(json.dumps(out))
"""


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.parquet"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="a generated data folder (centile generate)")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--memory-limit", default="3GB")
    ap.add_argument("--backend", choices=("duckdb", "dask"), default="duckdb")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--job", choices=("features", "run"), default="features",
                    help="the feature job (default) or the whole `centile run` without the report")
    ap.add_argument("--phases", action="store_true",
                    help="instead: per table, one partition's scan by push-down, the one-time write into "
                         "pieces and one partition's scan of its pieces (this process's CPU seconds)")
    ap.add_argument("--modes", default="off,on",
                    help="the two [backend] buckets values to compare; on Dask a value may end in +client "
                         "(the client validates the input and writes the pieces) or +workers (tasks do)")
    args = ap.parse_args()
    modes = tuple(args.modes.split(","))
    if len(modes) != 2:
        ap.error("--modes takes two values, e.g. off,auto")
    if args.phases:
        with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
            r = run_isolated(PHASES, str(args.data), tmp, str(args.partitions), args.memory_limit or "")
        r.update(load_average_1m=round(os.getloadavg()[0], 2), partitions=args.partitions,
                 memory_limit=args.memory_limit, data=str(args.data))
        doc = json.loads((RESULTS / "buckets.json").read_text()) if (RESULTS / "buckets.json").exists() else {}
        doc[f"phases-{Path(args.data).name}-p{args.partitions}-{args.memory_limit or 'nolimit'}"] = r
        save("buckets", doc)
        print(json.dumps(r, indent=1))
        return
    load, runs = [os.getloadavg()[0]], {m: [] for m in modes}
    digests: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        for i in range(args.runs):
            for mode in modes:
                out = Path(tmp) / f"out-{mode}"
                r = run_isolated(CHILD, str(args.data), str(out), mode, str(args.partitions),
                                 args.memory_limit or "", args.backend, str(args.workers), args.job)
                r["total_cpu_s"] = round(r["client"]["cpu_s"] + sum(w["cpu_s"] for w in r["workers"].values()), 2)
                r["client_cpu_s"] = round(r["client"]["cpu_s"], 2)
                r["workers_cpu_s"] = round(sum(w["cpu_s"] for w in r["workers"].values()), 2)
                r["total_rchar"] = r["client"]["rchar"] + sum(w["rchar"] for w in r["workers"].values())
                r["total_wchar"] = r["client"]["wchar"] + sum(w["wchar"] for w in r["workers"].values())
                runs[mode].append(r)
                digests[mode] = _digests(out)
                load.append(os.getloadavg()[0])
                print(f"round {i + 1} buckets={mode}: {r['seconds']:.1f} s, {r['total_cpu_s']:.1f} CPU s, "
                      f"read {r['total_rchar'] / 1e9:.2f} GB, written {r['total_wchar'] / 1e9:.2f} GB, "
                      f"peak {r['peak_rss_mb']} MB, load {load[-1]:.1f}", file=sys.stderr)
    same = digests[modes[0]] == digests[modes[1]]
    key = f"{args.job}-{args.backend}-c{runs[modes[1]][0]['customers']}-p{args.partitions}"
    if any("+" in m for m in modes):
        key += "-" + "-vs-".join(modes)
    doc = json.loads((RESULTS / "buckets.json").read_text()) if (RESULTS / "buckets.json").exists() else {}
    doc[key] = {
        "benchmark": "buckets", "job": args.job, "data": str(args.data), "backend": args.backend,
        "workers": args.workers if args.backend == "dask" else None, "partitions": args.partitions,
        "memory_limit": args.memory_limit, "runs": args.runs, "customers": runs[modes[1]][0]["customers"],
        "modes": list(modes), "outputs_identical": same, "outputs": sorted(digests[modes[1]]),
        **{f"{mode}_median": {"seconds": median_of(rs, "seconds"), "cpu_s": median_of(rs, "total_cpu_s"),
                              "client_cpu_s": median_of(rs, "client_cpu_s"),
                              "workers_cpu_s": median_of(rs, "workers_cpu_s"),
                              "read_gb": round(median_of(rs, "total_rchar") / 1e9, 3),
                              "written_gb": round(median_of(rs, "total_wchar") / 1e9, 3),
                              "client_peak_rss_mb": max(r["peak_rss_mb"] for r in rs)}
           for mode, rs in runs.items()},
        "runs_detail": runs, "load_average_1m": [round(x, 2) for x in load], "machine": machine(),
    }
    path = save("buckets", doc)
    for mode in modes:
        m = doc[key][f"{mode}_median"]
        print(f"buckets={mode:3}: {m['seconds']:7.1f} s {m['cpu_s']:7.1f} CPU s (client {m['client_cpu_s']:.1f}, "
              f"workers {m['workers_cpu_s']:.1f})  read {m['read_gb']:6.2f} GB  "
              f"written {m['written_gb']:5.2f} GB  peak {m['client_peak_rss_mb']} MB")
    print(f"outputs identical: {same}   -> {path}")


if __name__ == "__main__":
    main()
