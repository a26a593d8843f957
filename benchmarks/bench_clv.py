"""BG/NBD + Gamma-Gamma fit and predict at scale: centile against lifetimes, same run.

    python benchmarks/bench_clv.py [--customers 1000000] [--runs 3]

The customer summaries are drawn straight from the models with NumPy (no
orders): lambda ~ Gamma(r, alpha), p ~ Beta(a, b); T is a whole number of days
(1 .. 3 years, in weeks, as ``centile clv`` derives it from order dates); the
Poisson purchase count on (0, T] is cut at the geometric drop-out, and the last
purchase time is the x-th order statistic of the Poisson event times, rounded
to the day; the mean repeat spend is Gamma(p x, x nu) with nu ~ Gamma(q, gamma).
Saved once to ``bench-data/clv_<N>.npz``.

Each contestant runs in a fresh process and times, after its imports and a
small warm-up fit (numba cache / autograd tracing), the same job on the same
arrays:

* fit BG/NBD on all customers and Gamma-Gamma on the repeat buyers;
* predict for every customer: expected transactions in 52 weeks, P(alive),
  expected mean order value, CLV over 12 months at 1 % a month.

``centile``: ``centile.clv.fit_bgnbd``, ``fit_gamma_gamma`` and ``predict``
(which also gives P(at least one purchase) and churn risk; prediction
intervals are timed separately as ``centile_with_intervals``).
``lifetimes`` 0.11: ``BetaGeoFitter``, ``GammaGammaFitter`` and their
``conditional_expected_number_of_purchases_up_to_time``,
``conditional_probability_alive``, ``conditional_expected_average_profit`` and
``customer_lifetime_value``. The fitted parameters must agree to 1e-4
(relative); the script fails otherwise. Writes ``benchmarks/results/clv.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, median_of, run_isolated, save  # noqa: E402

TRUTH = {"r": 0.6, "alpha": 4.0, "a": 0.8, "b": 3.0, "p": 6.0, "q": 4.0, "gamma": 30.0}
HORIZON_WEEKS = 52.0
MONTHS = 12
DISCOUNT = 0.01


def make_summary(n: int, path: Path) -> None:
    rng = np.random.default_rng(2026)
    t = TRUTH
    lam = rng.gamma(t["r"], 1.0 / t["alpha"], n)
    p = rng.beta(t["a"], t["b"], n)
    T_days = rng.integers(1, 3 * 365 + 1, n)
    T = T_days / 7.0
    events = rng.poisson(lam * T)
    drop = rng.geometric(p)
    x = np.minimum(events, drop)
    tx = np.zeros(n)
    buy = x > 0
    tx[buy] = T[buy] * rng.beta(x[buy], events[buy] - x[buy] + 1)
    tx = np.minimum(np.round(tx * 7.0), T_days) / 7.0
    nu = rng.gamma(t["q"], 1.0 / t["gamma"], n)
    m = np.zeros(n)
    m[buy] = rng.gamma(t["p"] * x[buy], 1.0 / (x[buy] * nu[buy]))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=x.astype(np.float64), tx=tx, T=T, m=m)


CENTILE = r"""
import json, sys, time
import numpy as np
from centile import clv
d = np.load(sys.argv[1]); x, tx, T, m = d["x"], d["tx"], d["T"], d["m"]
intervals = sys.argv[2] == "1"
if sys.argv[3] == "parallel":  # numba's parallel kernels even below centile's serial threshold
    from centile.clv import models as clv_models
    clv_models._SERIAL_BELOW = 0
k = 5000  # warm-up: load the compiled kernels
w = clv.fit_bgnbd(x[:k], tx[:k], T[:k]); clv.predict(w, None, x[:k], tx[:k], T[:k], m[:k], horizon=52.0)
t0 = time.perf_counter()
bg = clv.fit_bgnbd(x, tx, T)
t1 = time.perf_counter()
rep = (x > 0) & (m > 0)
gg = clv.fit_gamma_gamma(x[rep], m[rep])
t2 = time.perf_counter()
pred = clv.predict(bg, gg, x, tx, T, m, horizon=52.0, time_unit="week", discount_rate_monthly=0.01,
                   interval=0.9 if intervals else None)
t3 = time.perf_counter()
print(json.dumps({"fit_bgnbd_s": t1 - t0, "fit_gg_s": t2 - t1, "predict_s": t3 - t2, "total_s": t3 - t0,
                  "params": {**bg.params, **gg.params}, "loglik_bgnbd": bg.loglik, "loglik_gg": gg.loglik,
                  "iterations": [bg.iterations, gg.iterations], "patterns": bg.patterns,
                  "clv_sum": float(pred["clv"].sum()), "expected_sum": float(pred["expected_transactions"].sum())}))
"""

LIFETIMES = r"""
import json, sys, time, warnings
warnings.filterwarnings("ignore")
import numpy as np
import pandas as pd
from lifetimes import BetaGeoFitter, GammaGammaFitter
d = np.load(sys.argv[1])
df = pd.DataFrame({"frequency": d["x"], "recency": d["tx"], "T": d["T"], "m": d["m"]})
k = 5000
BetaGeoFitter().fit(df.frequency[:k], df.recency[:k], df["T"][:k])
t0 = time.perf_counter()
bgf = BetaGeoFitter().fit(df.frequency, df.recency, df["T"])
t1 = time.perf_counter()
rep = df[(df.frequency > 0) & (df.m > 0)]
ggf = GammaGammaFitter().fit(rep.frequency, rep.m)
t2 = time.perf_counter()
exp = bgf.conditional_expected_number_of_purchases_up_to_time(52.0, df.frequency, df.recency, df["T"])
pa = bgf.conditional_probability_alive(df.frequency, df.recency, df["T"])
ev = ggf.conditional_expected_average_profit(df.frequency, df.m.where(df.frequency > 0, 0.0))
cl = ggf.customer_lifetime_value(bgf, df.frequency, df.recency, df["T"], df.m.where(df.frequency > 0, 0.0),
                                 time=12, discount_rate=0.01, freq="W")
t3 = time.perf_counter()
p = {**{k: float(v) for k, v in bgf.params_.items()}, **{k: float(v) for k, v in ggf.params_.items()}}
p["gamma"] = p.pop("v")
print(json.dumps({"fit_bgnbd_s": t1 - t0, "fit_gg_s": t2 - t1, "predict_s": t3 - t2, "total_s": t3 - t0,
                  "params": p, "clv_sum": float(cl.sum()), "expected_sum": float(exp.sum())}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--lifetimes-runs", type=int, default=None, help="default: --runs")
    args = ap.parse_args()
    n = args.customers
    path = Path(__file__).resolve().parents[1] / "bench-data" / f"clv_{n}.npz"
    if not path.exists():
        make_summary(n, path)
    runs: dict[str, list[dict]] = {"centile": [], "centile_parallel_kernels": [], "centile_with_intervals": [],
                                   "lifetimes": []}
    for i in range(max(args.runs, args.lifetimes_runs or args.runs)):
        if i < args.runs:
            runs["centile"].append(run_isolated(CENTILE, str(path), "0", "default"))
            runs["centile_parallel_kernels"].append(run_isolated(CENTILE, str(path), "0", "parallel"))
            runs["centile_with_intervals"].append(run_isolated(CENTILE, str(path), "1", "default"))
        if i < (args.lifetimes_runs or args.runs):
            runs["lifetimes"].append(run_isolated(LIFETIMES, str(path)))
        print(f"round {i + 1}: centile {runs['centile'][-1]['total_s']:.2f} s, "
              f"lifetimes {runs['lifetimes'][-1]['total_s']:.2f} s", file=sys.stderr)
    ours, theirs = runs["centile"][0]["params"], runs["lifetimes"][0]["params"]
    rel = {k: abs(ours[k] - theirs[k]) / abs(theirs[k]) for k in ours}
    summary = {}
    for name, rs in runs.items():
        summary[name] = {k: median_of(rs, k) for k in ("fit_bgnbd_s", "fit_gg_s", "predict_s", "total_s",
                                                        "peak_rss_mb")}
        summary[name]["params"] = rs[0]["params"]
    ratio = summary["lifetimes"]["total_s"] / summary["centile"]["total_s"]
    doc = {"benchmark": "clv", "load_average_after": list(os.getloadavg()), "customers": n, "repeat_buyers": None, "runs": args.runs,
           "truth": TRUTH, "machine": machine(), "results": summary, "param_rel_diff": rel,
           "max_param_rel_diff": max(rel.values()), "speedup_total": ratio,
           "speedup_fit_bgnbd": summary["lifetimes"]["fit_bgnbd_s"] / summary["centile"]["fit_bgnbd_s"],
           "patterns": runs["centile"][0]["patterns"], "raw": runs}
    d = np.load(path)
    doc["repeat_buyers"] = int(((d["x"] > 0) & (d["m"] > 0)).sum())
    out = save("clv", doc)
    print(f"{n:,} customers: centile {summary['centile']['total_s']:.2f} s "
          f"(fit BG/NBD {summary['centile']['fit_bgnbd_s']:.2f}, GG {summary['centile']['fit_gg_s']:.2f}, "
          f"predict {summary['centile']['predict_s']:.2f}; with intervals "
          f"{summary['centile_with_intervals']['total_s']:.2f}; parallel kernels "
          f"{summary['centile_parallel_kernels']['total_s']:.2f}), "
          f"lifetimes {summary['lifetimes']['total_s']:.2f} s "
          f"→ {ratio:.1f}x; max parameter difference {doc['max_param_rel_diff']:.1e}; wrote {out}")
    if doc["max_param_rel_diff"] > 1e-4:
        raise SystemExit(f"parameters disagree: {rel}")


if __name__ == "__main__":
    main()
