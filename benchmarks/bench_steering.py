"""Customer steering at scale: affinity + budgets + certified contact plan, and the exact MILP
oracle (scipy.optimize.milp, HiGHS) on small instances in the same run.

    python benchmarks/bench_steering.py [--customers 1000000] [--runs 3] [--milp 1000 5000]
                                        [--capacity] [--period-capacity 0.02] [--milp-time-limit 600]

Synthetic inputs drawn with NumPy (no orders): 5 media (catalogue 1.20, voucher 0.80,
sale 0.35, free shipping 0.45, e-mail 0.01; cost unit 0.01), 13 periods, cap 4, gap 1.
Per customer and medium a past contact count n ~ Poisson(2) and responses
r ~ Binomial(n, p), p ~ Beta(a_m, b_m) planted per medium; three media also have a
control arm (fewer contacts, a lower planted rate), so their affinity is incremental.
CLV columns (expected order value, discounted revenue, frequency) are Gamma draws.
The global budget is 1.0 per customer (binding); ``--capacity`` adds a catalogue
capacity of 10 % of the customers (medium multipliers by bisection, 8 steps);
``--period-capacity SHARE`` a capacity per period of catalogue and voucher of SHARE x the
customers (with more than 40,000 customers the multipliers are searched on a sample of
about 10,000, then used for all; see ``solve_plan``). ``plan_cpu_s``: the CPU time of the solve
(all threads), which tells a loaded machine from a slow solve.

Timed in a fresh process after a warm-up on 2,000 customers (numba cache):
``affinity_s`` (empirical-Bayes fits from the contacted customers' counts, ``fit_affinity``),
``budget_s`` (``budget_table``), ``values_s`` (``contact_values``: the posterior affinities and
the value factors, one block of 65,536 customers at a time), ``plan_s`` (``solve_plan``; the
values are built one block at a time inside the solver). The per-customer affinity table
(``Affinity.block``) is not built here: the job writes it block by block.
The MILP step builds one instance of each ``--milp`` size, solves it with
``solve_plan`` and with HiGHS, and records both times, the optimum, the bound and the
plan value (UB >= OPT >= plan is checked when HiGHS proves optimality; when it stops at
``--milp-time-limit`` its status, incumbent and dual bound are recorded instead). Writes ``benchmarks/results/steering.json``, one entry per configuration (size and limits).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine, median_of, run_isolated, save  # noqa: E402

ROOT = str(Path(__file__).resolve().parents[1])

STEER = r"""
import json, sys, time
import numpy as np
import polars as pl
from centile.steering.affinity import fit_affinity
from centile.steering.compute import budget_table, contact_values, cost_units
from centile.steering.settings import Medium, SteeringSettings
from centile.steering.solve import solve_plan

n = int(sys.argv[1]); capacity = sys.argv[2] == "1"; per = float(sys.argv[3])
pc = int(per * n) if per > 0 else None
MEDIA = (Medium("catalogue", 1.2, n // 10 if capacity else None, capacity_per_period=pc),
         Medium("voucher", 0.8, capacity_per_period=pc), Medium("sale", 0.35),
         Medium("free_shipping", 0.45), Medium("email", 0.01))
MEDIUM = pl.Enum([m.name for m in MEDIA])
PRIORS = {"catalogue": (2, 18), "voucher": (1.5, 10), "sale": (1, 12), "free_shipping": (1, 15), "email": (0.5, 12)}

def inputs(n, seed):
    rng = np.random.default_rng(seed)
    ids = pl.Series("customer_id", np.arange(1, n + 1, dtype=np.int64))
    parts = []
    for j, m in enumerate(MEDIA):
        a, b = PRIORS[m.name]
        for ctrl in ((False, True) if j < 3 else (False,)):
            cnt = rng.poisson(0.6 if ctrl else 2.0, n)
            p = rng.beta(a, b * (1.6 if ctrl else 1.0), n)
            r = rng.binomial(cnt, p)
            keep = cnt > 0
            # compact columns, as the responses query casts them (medium an enum, counts int32)
            parts.append(pl.DataFrame({"customer_id": ids.filter(pl.Series(keep)),
                                       "medium": pl.repeat(m.name, int(keep.sum()), eager=True).cast(MEDIUM),
                                       "control": ctrl, "contacts": cnt[keep].astype(np.int32),
                                       "responses": r[keep].astype(np.int32)}))
    resp = pl.concat(parts)
    freq = rng.poisson(1.5, n).astype(float)
    ev = rng.gamma(4.0, 12.0, n)
    clv = pl.DataFrame({"customer_id": ids, "frequency": freq, "expected_order_value": ev,
                        "clv": ev * rng.gamma(1.2, 1.5, n)})
    spend = pl.DataFrame({"customer_id": ids, "revenue": ev * 3, "costed_revenue": ev * 3,
                          "cost": ev * 3 * rng.uniform(0.45, 0.7, n)})
    since = rng.integers(1, 6, n)
    return ids, resp, clv, spend, since

def plan(n, seed, st):
    ids, resp, clv, spend, since = inputs(n, seed)
    t0 = time.perf_counter()
    aff = fit_affinity(resp, ids, [m.name for m in MEDIA])
    del resp
    t1 = time.perf_counter()
    bud, _ = budget_table(clv, spend, st)
    t2 = time.perf_counter()
    values = contact_values(bud, aff, MEDIA, st, np.ones((n, len(MEDIA)), bool))
    tv = time.perf_counter()
    c2 = time.process_time()
    cap = np.array([-1 if m.capacity is None else m.capacity for m in MEDIA])
    pcap = np.array([-1 if m.capacity_per_period is None else m.capacity_per_period for m in MEDIA])
    sol = solve_plan(values, cost_units(MEDIA, st.cost_unit), bud["budget_units"].to_numpy(), since,
                     cap=st.cap, gap=st.gap, global_budget=int(round(st.global_budget / st.cost_unit)),
                     capacity=cap, iterations=st.iterations, period_capacity=pcap if (pcap >= 0).any() else None)
    busiest = [int((sol.medium == j).sum(axis=0).max()) for j in range(len(MEDIA))]
    t3 = time.perf_counter()
    c3 = time.process_time()
    return {"affinity_s": t1 - t0, "budget_s": t2 - t1, "values_s": tv - t2, "plan_s": t3 - tv, "total_s": t3 - t0,
            "plan_cpu_s": c3 - c2,
            "gap": sol.gap, "value": sol.value, "bound": sol.bound, "spend": sol.spend * st.cost_unit,
            "contacts": int((sol.medium >= 0).sum()), "evaluations": sol.evaluations,
            "lambda": sol.lam, "mu": sol.mu.tolist(), "nu_max": sol.nu.max(axis=1).tolist(),
            "busiest_period": busiest, "capacity_per_period": pc, "notes": list(sol.notes)}

st = SteeringSettings(periods=13, cap=4, gap=1, target_margin=0.1, cost_unit=0.01, iterations=8,
                      global_budget=1.0 * n, media=MEDIA)
st_small = SteeringSettings(periods=13, cap=4, gap=1, target_margin=0.1, cost_unit=0.01, iterations=8,
                            global_budget=2000.0, media=MEDIA)
plan(2000, 1, st_small)  # warm-up: load the compiled kernels
print(json.dumps(plan(n, 2026, st)))
"""

MILP = r"""
import json, sys, time
import numpy as np
sys.path.insert(0, sys.argv[3])
from centile.steering.solve import solve_plan
from tests.reference_steering import milp_optimum

n = int(sys.argv[1]); limit = float(sys.argv[2])
rng = np.random.default_rng(n)
M, T = 5, 13
cost = np.array([1.2, 0.8, 0.35, 0.45, 0.01]); unit = 0.01
costs = np.maximum(1, np.round(cost / unit)).astype(np.int64)
aff = rng.beta(1.0, 9.0, (n, M)); om = rng.gamma(4.0, 6.0, n)
v = np.round(aff[:, :, None] * om[:, None, None] * rng.uniform(0.8, 1.2, T)[None, None, :] - cost[None, :, None], 4)
budgets = np.floor(rng.gamma(1.0, 4.0, n) / unit).astype(np.int64)
since = rng.integers(1, 6, n)
bg = int(round(0.8 * n / unit))
solve_plan(v[:50], costs, budgets[:50], since[:50], cap=4, gap=1, global_budget=bg // 100)
t0 = time.perf_counter()
sol = solve_plan(v, costs, budgets, since, cap=4, gap=1, global_budget=bg)
t1 = time.perf_counter()
import scipy.optimize as so
orig = so.milp
seen = {}
def timed(*a, **k):
    k.setdefault("options", {})["time_limit"] = limit
    res = orig(*a, **k)
    seen["res"] = res
    return res
so.milp = timed
t2 = time.perf_counter()
opt = milp_optimum(v, costs, budgets, since, 4, 1, global_budget=bg)
t3 = time.perf_counter()
res = seen["res"]
optimal = res.status == 0
dual = -float(getattr(res, "mip_dual_bound", float("nan")))
print(json.dumps({"customers": n, "variables": int(v.size), "eligible": int((v > 0).sum()), "plan_s": t1 - t0,
                  "milp_s": t3 - t2, "milp_status": res.message, "milp_optimal": optimal,
                  "milp_objective": opt, "milp_dual_bound": dual, "bound": sol.bound, "value": sol.value,
                  "gap": sol.gap, "milp_time_limit_s": limit,
                  # proven optimum: UB >= OPT >= plan; HiGHS stopped at its limit: its incumbent is only
                  # a lower bound of OPT and its dual bound an upper bound, so check UB >= the incumbent
                  # and the plan against HiGHS' own dual bound
                  "ub_ge_opt_ge_plan": bool(sol.bound >= opt - 1e-6 and opt >= sol.value - 1e-6) if optimal else None,
                  "plan_minus_incumbent": sol.value - opt,
                  "plan_le_highs_dual_bound": bool(sol.value <= dual + 1e-6) if dual == dual else None}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--capacity", action="store_true", help="add a catalogue capacity (10 %% of customers)")
    ap.add_argument("--period-capacity", type=float, default=0.0, metavar="SHARE",
                    help="capacity per period of catalogue and voucher, as a share of the customers")
    ap.add_argument("--milp", type=int, nargs="*", default=[1000], help="MILP oracle sizes (customers)")
    ap.add_argument("--milp-time-limit", type=float, default=600.0)
    args = ap.parse_args()
    load_before = list(os.getloadavg())
    runs = []
    for i in range(args.runs):
        runs.append(run_isolated(STEER, str(args.customers), "1" if args.capacity else "0",
                                 str(args.period_capacity)))
        print(f"run {i + 1}: {runs[-1]['total_s']:.1f} s, gap {runs[-1]['gap']:.2e}, "
              f"peak {runs[-1]['peak_rss_mb']:,.0f} MB", file=sys.stderr)
    summary = {k: median_of(runs, k) for k in ("affinity_s", "budget_s", "values_s", "plan_s", "total_s", "wall_s",
                                                "peak_rss_mb", "gap")}
    milp = []
    for size in args.milp:
        milp.append(run_isolated(MILP, str(size), str(args.milp_time_limit), ROOT))
        print(f"MILP at {size:,} customers: HiGHS {milp[-1]['milp_s']:.1f} s, solve_plan {milp[-1]['plan_s']:.2f} s, "
              f"({milp[-1]['milp_status']}), gap {milp[-1]['gap']:.2e}, UB >= OPT >= plan: "
              f"{milp[-1]['ub_ge_opt_ge_plan']}, plan - HiGHS incumbent {milp[-1]['plan_minus_incumbent']:.4g}",
              file=sys.stderr)
    doc = {"benchmark": "steering", "customers": args.customers, "media": 5, "periods": 13, "cap": 4, "gap": 1,
           "capacity": args.capacity, "period_capacity_share": args.period_capacity, "runs": args.runs,
           "machine": machine(), "load_average_before": load_before, "load_average_after": list(os.getloadavg()),
           "results": summary, "milp": milp, "raw": runs}
    # one entry per configuration, so runs at several sizes and limits sit side by side
    tag = f"{args.customers}" + ("-capacity" if args.capacity else "") + (
        f"-per-period-{args.period_capacity:g}" if args.period_capacity > 0 else "")
    path = RESULTS / "steering.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    configs = old.get("configs", {}) if isinstance(old.get("configs"), dict) else {}
    if old.get("results") and "configs" not in old:  # a file of one configuration, before this layout
        configs[f"{old['customers']}" + ("-capacity" if old.get("capacity") else "")] = old
    configs[tag] = doc
    out = save("steering", {"benchmark": "steering", "configs": configs})
    print(f"{args.customers:,} customers x 5 media x 13 periods: {summary['total_s']:.1f} s (affinity "
          f"{summary['affinity_s']:.1f}, budgets {summary['budget_s']:.2f}, plan {summary['plan_s']:.1f}), peak "
          f"{summary['peak_rss_mb']:,.0f} MB, certified gap {summary['gap']:.2e}; wrote {out}")


if __name__ == "__main__":
    main()
