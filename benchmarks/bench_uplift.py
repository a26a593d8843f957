"""The full uplift table at scale, and its Poisson bootstrap against a NumPy implementation.

    python benchmarks/bench_uplift.py [--customers 10000000] [--segments 20] [--replicates 1000]
                                      [--runs 3] [--numpy-replicates 10]

A unit table (one campaign, 2 arms: treatment 80 % / control 20 %, 20
segments) is generated with NumPy and written once to
``bench-data/uplift_<N>.parquet``: response (0/1), orders (Poisson), revenue
and margin (zero-inflated, heavy-tailed), the pre-period revenue (CUPED) and a
ratio metric revenue per order. Each step runs in a fresh process:

* ``table``: ``centile.uplift.compute_uplift`` with 1,000 bootstrap
  replicates -- the whole table: Newcombe, Welch, CUPED, bootstrap (orders,
  revenue, margin, revenue per order), Holm/BH, SRM -- overall and per
  segment; wall time of the call (data already in memory);
* ``kernel``: the numba bootstrap alone, as the engine calls it: the rows
  with a non-zero outcome listed, the all-zero rows (non-responders) collapsed
  into one Poisson(count) draw per cell;
* ``numpy``: the same estimator with NumPy array operations
  (``tests/reference_bootstrap.poisson_bootstrap_sums_numpy``: the same
  weights keyed by (seed, replicate, customer), ``np.bincount`` sums), all
  1,000 replicates, checked equal to the kernel's;
* ``kernel_all`` / ``numpy_all``: every row listed (3 outcome columns x 40
  cells x 1,000 replicates = 10**10 Poisson weights at 10M), the worst case
  of data where every customer has a non-zero outcome; NumPy runs
  ``--numpy-replicates`` replicates and is scaled linearly (each replicate is
  the same independent work; the full run would take ~20 minutes).

Writes ``benchmarks/results/uplift.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, median_of, run_isolated, save  # noqa: E402

DATA = Path(__file__).resolve().parent.parent / "bench-data"


def make_units(n: int, segments: int, path: Path) -> None:
    import polars as pl

    rng = np.random.default_rng(2027)
    seg = rng.integers(0, segments, n)
    treated = rng.random(n) < 0.8
    effect = 0.004 * (seg % 5)  # planted: up to +1.6 points response
    base = 0.08 + 0.002 * seg
    orders = rng.poisson(np.where(treated, base + effect, base) * 1.3)
    value = rng.lognormal(3.6, 0.9, n)
    revenue = orders * value
    margin = revenue * rng.uniform(0.2, 0.45, n)
    pre = rng.poisson(base * 1.3 * 3) * rng.lognormal(3.6, 0.9, n) * 0.5 + 0.3 * revenue
    pl.DataFrame({
        "customer_id": np.arange(n, dtype=np.int64), "campaign": "spring",
        "arm": np.where(treated, "treatment", "control"), "cost": np.where(treated, 0.4, 0.0),
        "response": (orders > 0).astype(np.float64), "orders": orders.astype(np.float64),
        "revenue": revenue, "margin": margin, "pre__revenue": pre,
        "segment": pl.Series([f"s{i:02d}" for i in seg], dtype=pl.String),
    }).write_parquet(path)


TABLE = r"""
import json, sys, time
import polars as pl
from centile.uplift import compute_uplift, parse_uplift_spec
units = pl.read_parquet(sys.argv[1])
spec = parse_uplift_spec({"segments": ["segment"], "replicates": int(sys.argv[2]),
                          "planned": {"control": 0.2, "treatment": 0.8},
                          "ratios": {"revenue_per_order": ["revenue", "orders"]}})
small = units.head(5000)
compute_uplift(small, spec)  # compile / load the kernels outside the timing
t0 = time.perf_counter()
res = compute_uplift(units, spec, seed=1)
dt = time.perf_counter() - t0
print(json.dumps({"seconds": dt, "rows": res.uplift.height, "srm_failed": res.summary["srm_failed"]}))
"""

KERNEL = r"""
import json, sys, time
import numpy as np, polars as pl
from centile.kernels.bootstrap import poisson_bootstrap_sums, replicate_seeds
from centile.kernels.hashing import hash_int64
sys.path.insert(0, __ROOT__)  # the NumPy baseline lives with the tests, not in the library
from tests.reference_bootstrap import poisson_bootstrap_sums_numpy
units = pl.read_parquet(sys.argv[1], columns=["customer_id", "arm", "segment", "orders", "revenue", "margin"])
reps, np_reps, which = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
seg = units["segment"].cast(pl.Categorical).to_physical().to_numpy().astype(np.int64)
code = seg * 2 + (units["arm"] == "control").to_numpy()
cols = [units[c].to_numpy() for c in ("orders", "revenue", "margin")]
n_cells = int(code.max()) + 1
if which.endswith("_all"):  # every row listed: 10**10 weights at 10M x 1,000
    idx = np.arange(code.size)
else:  # as the engine does: all-zero rows collapsed into one Poisson(count) per cell
    idx = np.flatnonzero((cols[0] != 0) | (cols[1] != 0) | (cols[2] != 0))
order = idx[np.argsort(code[idx].astype(np.uint16), kind="stable")]
off = np.zeros(n_cells + 1, np.int64)
np.cumsum(np.bincount(code[idx], minlength=n_cells), out=off[1:])
zeros = np.bincount(code, minlength=n_cells) - np.diff(off)
vals = np.vstack([c[order] for c in cols])
keys = hash_int64(units["customer_id"].to_numpy()[order], 1)  # each unit's weights keyed by its customer
seeds = replicate_seeds(1, reps)
poisson_bootstrap_sums(vals[:, :5000], [0, 5000], seeds[:2], keys[:5000])
if which.startswith("kernel"):
    t0 = time.perf_counter()
    out = poisson_bootstrap_sums(vals, off, seeds, keys, zeros=zeros)
    print(json.dumps({"seconds": time.perf_counter() - t0, "listed_rows": int(vals.shape[1]),
                      "weights": int(vals.shape[1]) * reps}))
else:
    t0 = time.perf_counter()
    ref = poisson_bootstrap_sums_numpy(vals, off, seeds[:np_reps], keys, zeros)
    dt = time.perf_counter() - t0
    out = poisson_bootstrap_sums(vals, off, seeds[:np_reps], keys, zeros=zeros)
    err = float(np.max(np.abs(out - ref) / np.maximum(np.abs(ref), 1.0)))
    print(json.dumps({"seconds": dt, "replicates": np_reps, "seconds_per_replicate": dt / np_reps,
                      "max_rel_diff_vs_kernel": err}))
"""
KERNEL = KERNEL.replace("__ROOT__", repr(str(Path(__file__).resolve().parent.parent)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=10_000_000)
    ap.add_argument("--segments", type=int, default=20)
    ap.add_argument("--replicates", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--numpy-replicates", type=int, default=10,
                    help="replicates the NumPy baseline runs over every row (scaled to --replicates)")
    a = ap.parse_args()
    DATA.mkdir(exist_ok=True)
    path = DATA / f"uplift_{a.customers}_{a.segments}.parquet"
    if not path.exists():
        make_units(a.customers, a.segments, path)
    reps = str(a.replicates)
    runs: dict[str, list[dict]] = {"table": [], "kernel": [], "kernel_all": [], "numpy": [], "numpy_all": []}
    for r in range(a.runs):
        runs["table"].append(run_isolated(TABLE, str(path), reps))
        runs["kernel"].append(run_isolated(KERNEL, str(path), reps, "0", "kernel"))
        runs["kernel_all"].append(run_isolated(KERNEL, str(path), reps, "0", "kernel_all"))
        if r == 0:  # the NumPy runs are long: once
            runs["numpy"].append(run_isolated(KERNEL, str(path), reps, reps, "numpy"))
            runs["numpy_all"].append(run_isolated(KERNEL, str(path), reps, str(a.numpy_replicates), "numpy_all"))
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]['seconds']:.1f} s" for k, v in runs.items()), flush=True)
    med = {k: median_of(v, "seconds") for k, v in runs.items()}
    numpy_all = runs["numpy_all"][0]["seconds_per_replicate"] * a.replicates
    listed = runs["kernel"][0]["listed_rows"]
    doc = {
        "benchmark": "uplift", "customers": a.customers, "segments": a.segments, "arms": 2,
        "replicates": a.replicates, "runs": a.runs, "machine": machine(),
        "table_seconds_median": round(med["table"], 2),
        "table_rows": runs["table"][0]["rows"],
        "bootstrap_listed_rows": listed,
        "kernel_seconds_median": round(med["kernel"], 2),
        "numpy_seconds": round(med["numpy"], 2),
        "speedup_kernel_vs_numpy": round(med["numpy"] / med["kernel"], 1),
        "kernel_all_rows_seconds_median": round(med["kernel_all"], 2),
        "kernel_all_rows_ns_per_weight": round(med["kernel_all"] / (a.customers * a.replicates) * 1e9, 3),
        "numpy_all_rows_replicates_measured": a.numpy_replicates,
        "numpy_all_rows_seconds_extrapolated": round(numpy_all, 1),
        "speedup_kernel_vs_numpy_all_rows": round(numpy_all / med["kernel_all"], 1),
        "numpy_max_rel_diff_vs_kernel": max(r["max_rel_diff_vs_kernel"] for k in ("numpy", "numpy_all")
                                            for r in runs[k]),
        "runs_detail": runs,
    }
    out = save("uplift", doc)
    print(f"table {med['table']:.1f} s ({doc['table_rows']} rows); bootstrap over {listed:,} non-zero rows: "
          f"kernel {med['kernel']:.2f} s vs NumPy {med['numpy']:.1f} s ({doc['speedup_kernel_vs_numpy']}x); "
          f"every row listed: kernel {med['kernel_all']:.1f} s ({doc['kernel_all_rows_ns_per_weight']} ns/weight) "
          f"vs NumPy ~{numpy_all:.0f} s ({doc['speedup_kernel_vs_numpy_all_rows']}x); written {out}")


if __name__ == "__main__":
    main()
