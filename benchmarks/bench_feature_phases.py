"""Where the feature job's time goes: wall and CPU seconds per phase, against the bare scans.

    python benchmarks/bench_feature_phases.py [--data bench-data/c1000000] [--runs 3] [--threads N]

Runs the whole ``run_features`` job (as ``bench_features.py`` does) in a fresh process per
round, alternating with the bare DuckDB ``GROUP BY customer_id`` scans of
:func:`centile.bench.baselines.features_scans`, and splits the job into phases: each progress
message the job reports starts one (reading, validating a table, each feature query, the final
join), and the steps without a message of their own are marked by wrapping their functions
(duplicate lines, the validation summary and as_of, the top categories, the sort by customer_id,
writing features.parquet and rejects.parquet, the manifest's input fingerprints). Reports per
phase the median wall and CPU seconds (``time.process_time``: every thread of the process) and
writes ``benchmarks/results/feature_phases.json``. Nothing in the engine is changed for this.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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

PHASED = r"""
import json, sys, time
import centile.backend.session as session
import centile.features.compute as compute
from centile.config import load_config

phases = []
state = {"label": "start", "t": time.perf_counter(), "c": time.process_time()}

def mark(label):
    t, c = time.perf_counter(), time.process_time()
    phases.append([state["label"], t - state["t"], c - state["c"]])
    state.update(label=label, t=t, c=c)

def wrap(owner, name, label, after):
    fn = getattr(owner, name)
    def timed(*a, **k):
        mark(label)
        try:
            return fn(*a, **k)
        finally:
            mark(after)
    setattr(owner, name, timed)

wrap(session, "set_aside_duplicates", "duplicate lines", "after duplicate lines")
wrap(session, "_finish", "validation summary, as_of, views", "after the summary")
wrap(compute, "top_categories", "top categories", "after top categories")
wrap(session.Session, "map_partitions", "feature queries", "concat and sort by customer_id")
wrap(compute, "write_rejects", "write rejects.parquet", "validation summary dict")
wrap(compute, "manifest", "manifest (input fingerprints)", "write manifest, close, rename")
orig_features = compute.compute_features
def features(*a, **k):
    r = orig_features(*a, **k)
    mark("write features.parquet")
    return r
compute.compute_features = features

threads = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[3] else None
t0, c0 = time.perf_counter(), time.process_time()
res = compute.run_features(load_config(data=sys.argv[1], threads=threads), out=sys.argv[2], progress=mark)
mark("end")
print(json.dumps({"seconds": time.perf_counter() - t0, "cpu_in_job_s": time.process_time() - c0,
                  "customers": res.features.height, "phases": phases[1:]}))
"""


def main() -> None:
    from centile.bench.measure import input_tables

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("bench-data/c1000000"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if not (args.data / "orders").exists():
        sys.exit(f"no generated data in {args.data}; run `centile generate --seed 1` or bench_features.py first")
    spec = json.dumps({"tables": input_tables(args.data), "threads": args.threads, "memory_limit": None})
    base, runs, load = [], [], [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        run_isolated(PHASED, str(args.data), tmp, str(args.threads or ""))  # warm caches, untimed
        for i in range(args.runs):
            base.append(run_isolated(BASELINE, spec))
            runs.append(run_isolated(PHASED, str(args.data), tmp, str(args.threads or "")))
            load.append(os.getloadavg()[0])
            print(f"round {i + 1}: baseline {base[-1]['seconds']:.2f} s ({base[-1]['cpu_s']:.2f} CPU s), "
                  f"features {runs[-1]['seconds']:.2f} s ({runs[-1]['cpu_in_job_s']:.2f} CPU s), "
                  f"load {load[-1]:.1f}", file=sys.stderr)
    order: list[str] = []
    per: dict[str, list[list[float]]] = {}
    for r in runs:
        seen: dict[str, list[float]] = {}
        for label, wall, cpu in r["phases"]:
            if label not in seen:
                seen[label] = [0.0, 0.0]
                if label not in order:
                    order.append(label)
            seen[label][0] += wall
            seen[label][1] += cpu
        for label, v in seen.items():
            per.setdefault(label, []).append(v)
    phases = [{"phase": label, "wall_s": round(statistics.median(v[0] for v in per[label]), 3),
               "cpu_s": round(statistics.median(v[1] for v in per[label]), 3)} for label in order]
    b, bc = median_of(base, "seconds"), median_of(base, "cpu_s")
    c, cc = median_of(runs, "seconds"), median_of(runs, "cpu_in_job_s")
    doc = {"benchmark": "feature_phases", "data": str(args.data), "customers": runs[0]["customers"],
           "runs": args.runs, "threads": args.threads,
           "baseline_s": round(b, 3), "baseline_cpu_s": round(bc, 3),
           "baseline_orders_s": round(median_of(base, "orders_s"), 3),
           "baseline_email_events_s": round(median_of(base, "email_events_s"), 3),
           "features_s": round(c, 3), "features_cpu_s": round(cc, 3),
           "ratio_wall": round(c / b, 2), "ratio_cpu": round(cc / bc, 2),
           "phases": phases, "load_average_1m": [round(x, 2) for x in load], "machine": machine()}
    path = save("feature_phases", doc)
    print(f"feature job {c:.2f} s / {cc:.2f} CPU s; bare scans {b:.2f} s / {bc:.2f} CPU s "
          f"({c / b:.2f}x wall, {cc / bc:.2f}x CPU); median of {args.runs} per phase:")
    for p in phases:
        print(f"  {p['wall_s']:7.2f} s {p['cpu_s']:7.2f} CPU s  {p['phase']}")
    print(f"-> {path}")


if __name__ == "__main__":
    main()
