"""Feature table at scale against a bare DuckDB GROUP BY scan of the same Parquet, in the same run.

    python benchmarks/bench_features.py [--customers 1000000] [--runs 3] [--data DIR]

Generates the data once (``centile generate``, seed 1) unless it exists, then
alternates, for each of ``--runs`` rounds, one baseline run and one centile
run, each in a fresh process (so peak memory is per run and caches are cold
for the Python side). Reports medians, the ratio, rows/s and peak memory, and
writes ``benchmarks/results/features.json``.

Baseline: the single GROUP BY a user would write for the core per-customer
figures (orders as COUNT DISTINCT, gross and returned revenue, first and last
order) over the raw order lines.
centile: the whole ``run_features`` job: read, type and validate every input
table (rejects), as_of, all feature queries, category shares, and writing
features.parquet, rejects.parquet and manifest.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, median_of, run_isolated, save  # noqa: E402

BASELINE = r"""
import json, sys, time, duckdb
con = duckdb.connect()
t0 = time.perf_counter()
n = con.execute('''
  CREATE TABLE f AS
  SELECT customer_id,
         count(DISTINCT order_id) AS orders,
         sum(CASE WHEN quantity > 0 THEN quantity * unit_price END) AS gross,
         sum(returned_quantity * unit_price) AS returned,
         min(order_ts) AS first_ts, max(order_ts) AS last_ts
  FROM read_parquet($p) GROUP BY customer_id''', {"p": sys.argv[1] + "/orders/*.parquet"}).fetchone()
rows = con.execute("SELECT count(*) FROM f").fetchone()[0]
print(json.dumps({"seconds": time.perf_counter() - t0, "customers": rows}))
"""

CENTILE = r"""
import json, sys, time
from centile.config import load_config
from centile.features import run_features
t0 = time.perf_counter()
res = run_features(load_config(data=sys.argv[1]), out=sys.argv[2])
print(json.dumps({"seconds": time.perf_counter() - t0, "customers": res.features.height}))
"""

LINES = r"""
import json, sys, duckdb
print(json.dumps({"lines": duckdb.execute("SELECT count(*) FROM read_parquet($p)",
                                          {"p": sys.argv[1] + "/orders/*.parquet"}).fetchone()[0]}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--data", type=Path, default=None, help="generated data folder (default bench-data/c<N>)")
    args = ap.parse_args()
    data = args.data or Path("bench-data") / f"c{args.customers}"
    if not (data / "orders").exists():
        print(f"generating {args.customers:,} customers into {data} ...", file=sys.stderr)
        run_isolated("import sys; from centile.synth import generate; import json; "
                     "r = generate(sys.argv[1], int(sys.argv[2]), seed=1); print(json.dumps(r.rows))",
                     str(data), str(args.customers))
    lines = run_isolated(LINES, str(data))["lines"]
    base, cent = [], []
    with tempfile.TemporaryDirectory() as tmp:
        # one untimed centile run so numba/duckdb imports and the OS file cache are warm for both
        run_isolated(CENTILE, str(data), tmp)
        for i in range(args.runs):
            base.append(run_isolated(BASELINE, str(data)))
            cent.append(run_isolated(CENTILE, str(data), tmp))
            print(f"round {i + 1}: baseline {base[-1]['seconds']:.2f} s, centile {cent[-1]['seconds']:.2f} s",
                  file=sys.stderr)
    b, c = median_of(base, "seconds"), median_of(cent, "seconds")
    doc = {
        "benchmark": "features", "customers": cent[0]["customers"], "order_lines": lines, "runs": args.runs,
        "baseline_duckdb_groupby_s": round(b, 3), "centile_features_s": round(c, 3),
        "ratio_centile_over_baseline": round(c / b, 2),
        "centile_lines_per_s": round(lines / c), "baseline_lines_per_s": round(lines / b),
        "baseline_peak_rss_mb": max(r["peak_rss_mb"] for r in base),
        "centile_peak_rss_mb": max(r["peak_rss_mb"] for r in cent),
        "all_runs_s": {"baseline": [round(r["seconds"], 3) for r in base],
                       "centile": [round(r["seconds"], 3) for r in cent]},
        "machine": machine(),
    }
    path = save("features", doc)
    print(f"{lines:,} order lines, {doc['customers']:,} customers, median of {args.runs}:")
    print(f"  bare DuckDB GROUP BY : {b:6.2f} s  ({doc['baseline_lines_per_s']:,} lines/s, "
          f"peak {doc['baseline_peak_rss_mb']} MB)")
    print(f"  centile features     : {c:6.2f} s  ({doc['centile_lines_per_s']:,} lines/s, "
          f"peak {doc['centile_peak_rss_mb']} MB)")
    print(f"  ratio centile / bare : {c / b:.2f}x   -> {path}")


if __name__ == "__main__":
    main()
