"""Feature table at scale against bare DuckDB GROUP BY scans of the same Parquet, in the same run.

    python benchmarks/bench_features.py [--customers 1000000] [--runs 3] [--data DIR] [--threads N]
                                        [--memory-limit 2GB]

Generates the data once (``centile generate``, seed 1) unless it exists, then
alternates, for each of ``--runs`` rounds, one baseline run and one centile
run, each in a fresh process (so peak memory is per run and caches are cold
for the Python side). Reports medians of the wall and the CPU seconds (all
threads; on a shared machine the wall time also counts waiting for a core),
the ratios, rows/s and peak memory, and writes ``benchmarks/results/features.json``.

Baseline (:func:`centile.bench.baselines.features_scans`, issue 12): bare ``GROUP BY
customer_id`` scans of the two tables the feature job reads, timed separately and summed:
the order lines (orders as COUNT DISTINCT, gross and returned revenue, first and last order)
and the e-mail events (sends, opens, clicks, first and last event).
centile: the whole ``run_features`` job: read, type and validate every input
table (rejects, duplicates), as_of, all feature queries, category shares, and writing
features.parquet, rejects.parquet and manifest.json. Issue 12 asks for at most 3x.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, median_of, run_isolated, save  # noqa: E402

BASELINE = r"""
import json, sys
from centile.bench.baselines import features_scans
print(json.dumps(features_scans(json.loads(sys.argv[1]))))
"""

CENTILE = r"""
import json, sys, time
from centile.config import load_config
from centile.features import run_features
t0, c0 = time.perf_counter(), time.process_time()
threads = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[3] else None
limit = sys.argv[4] if len(sys.argv) > 4 and sys.argv[4] else None
res = run_features(load_config(data=sys.argv[1], threads=threads, memory_limit=limit), out=sys.argv[2])
print(json.dumps({"seconds": time.perf_counter() - t0, "cpu_in_job_s": time.process_time() - c0,
                  "customers": res.features.height}))
"""

LINES = r"""
import json, sys, duckdb
print(json.dumps({"lines": duckdb.execute("SELECT count(*) FROM read_parquet($p)",
                                          {"p": sys.argv[1] + "/orders/*.parquet"}).fetchone()[0]}))
"""


def main() -> None:
    import os

    from centile.bench.measure import input_tables

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--data", type=Path, default=None, help="generated data folder (default bench-data/c<N>)")
    ap.add_argument("--memory-limit", default=None,
                    help="centile's --memory-limit (the whole process); the baseline's DuckDB gets the same "
                         "share of it as centile's DuckDB does")
    args = ap.parse_args()
    data = args.data or Path("bench-data") / f"c{args.customers}"
    if not (data / "orders").exists():
        print(f"generating {args.customers:,} customers into {data} ...", file=sys.stderr)
        run_isolated("import sys; from centile.synth import generate; import json; "
                     "r = generate(sys.argv[1], int(sys.argv[2]), seed=1); print(json.dumps(r.rows))",
                     str(data), str(args.customers))
    lines = run_isolated(LINES, str(data))["lines"]
    from centile.backend.partitions import duckdb_memory

    share = duckdb_memory(args.memory_limit)
    spec = json.dumps({"tables": input_tables(data), "threads": args.threads,
                       "memory_limit": f"{share}B" if share else None})
    threads = [str(args.threads or ""), args.memory_limit or ""]
    base, cent, load = [], [], [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        # one untimed centile run so numba/duckdb imports and the OS file cache are warm for both
        run_isolated(CENTILE, str(data), tmp, *threads)
        for i in range(args.runs):
            base.append(run_isolated(BASELINE, spec))
            cent.append(run_isolated(CENTILE, str(data), tmp, *threads))
            load.append(os.getloadavg()[0])
            print(f"round {i + 1}: baseline {base[-1]['seconds']:.2f} s ({base[-1]['cpu_s']:.2f} CPU s), "
                  f"centile {cent[-1]['seconds']:.2f} s ({cent[-1]['cpu_in_job_s']:.2f} CPU s), "
                  f"load {load[-1]:.1f}", file=sys.stderr)
    b, c = median_of(base, "seconds"), median_of(cent, "seconds")
    bc, cc = median_of(base, "cpu_s"), median_of(cent, "cpu_in_job_s")
    doc = {
        "benchmark": "features", "data": str(data), "customers": cent[0]["customers"], "order_lines": lines,
        "runs": args.runs, "threads": args.threads, "memory_limit": args.memory_limit,
        "baseline_duckdb_memory_limit_bytes": share,
        "baseline": "bare GROUP BY customer_id scans of the order lines and the e-mail events, summed",
        "baseline_duckdb_groupby_s": round(b, 3), "centile_features_s": round(c, 3),
        "baseline_orders_s": round(median_of(base, "orders_s"), 3),
        "baseline_email_events_s": round(median_of(base, "email_events_s"), 3),
        "ratio_centile_over_baseline": round(c / b, 2),
        "baseline_cpu_s": round(bc, 3), "centile_cpu_s": round(cc, 3), "ratio_cpu": round(cc / bc, 2),
        "target_ratio": 3.0,
        "centile_lines_per_s": round(lines / c), "baseline_lines_per_s": round(lines / b),
        "baseline_peak_rss_mb": max(r["peak_rss_mb"] for r in base),
        "centile_peak_rss_mb": max(r["peak_rss_mb"] for r in cent),
        "all_runs_s": {"baseline": [round(r["seconds"], 3) for r in base],
                       "centile": [round(r["seconds"], 3) for r in cent]},
        "all_runs_cpu_s": {"baseline": [round(r["cpu_s"], 3) for r in base],
                           "centile": [round(r["cpu_in_job_s"], 3) for r in cent]},
        "load_average_1m": [round(x, 2) for x in load],
        "machine": machine(),
    }
    path = save("features", doc)
    print(f"{lines:,} order lines, {doc['customers']:,} customers, median of {args.runs}:")
    print(f"  bare DuckDB GROUP BY scans : {b:6.2f} s  {bc:6.2f} CPU s  ({doc['baseline_lines_per_s']:,} lines/s, "
          f"peak {doc['baseline_peak_rss_mb']} MB)")
    print(f"  centile features           : {c:6.2f} s  {cc:6.2f} CPU s  ({doc['centile_lines_per_s']:,} lines/s, "
          f"peak {doc['centile_peak_rss_mb']} MB)")
    print(f"  ratio centile / bare       : {c / b:.2f}x wall, {cc / bc:.2f}x CPU (target <= 3x)   -> {path}")


if __name__ == "__main__":
    main()
