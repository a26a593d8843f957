"""Pair counting and rules at scale, against mlxtend and DuckDB; recommendations on the Complete Journey.

    python benchmarks/bench_baskets.py [--baskets 1000000] [--products 50000] [--min-count 20] [--runs 3]
                                       [--mlxtend-sizes 5000,20000,50000,100000,200000] [--skip-cj]

Baskets are generated with NumPy and written once to ``bench-data/baskets_<N>_<M>.parquet``
(customer_id, order_id, item): item popularity Zipf-like (p ∝ 1/(rank + 10)), basket sizes
heavy-tailed (1 + lognormal(1.0, 1.2), capped at 400, so a few exceed ``max_basket_items`` = 200
and are counted and left out). Each step runs in a fresh process (medians of ``--runs``):

* ``centile``: ``centile.baskets.compute_baskets`` overall (items, pairs, rules, all metrics) with
  ``min_count`` baskets, from the lines frame in memory (basket building, dictionary, numba pair
  counting, rules, sort);
* ``centile_max_size_3``: the same with ``max_size = 3`` (triples by candidate counting, rules with
  single-item consequents);
* ``duckdb``: the SQL a user would write: distinct (basket, item), a self-join on basket with
  ``a.item < b.item``, ``GROUP BY`` pair ``HAVING count(*) >= min_count`` (pairs only, no rules),
  over the same baskets of at most 200 items;
* ``mlxtend``: ``TransactionEncoder`` + ``fpgrowth(max_len=2)`` + ``association_rules`` on the first
  ``n`` baskets at ``min_support = min_count / n`` for each of ``--mlxtend-sizes`` while its dense
  input (baskets x distinct items bytes) stays under 2 GB (the machine is shared); centile runs on the same baskets and the
  two rule sets are compared (same (antecedent, consequent) pairs, max relative lift difference);
* ``completejourney``: ``centile recommend --evaluate`` on the Complete Journey
  (``engine/examples/completejourney.toml``), cutoff 2017-10-01: HitRate@10 of the recommender and
  of popularity (skipped when ../shared/data is absent).

Writes ``benchmarks/results/baskets.json``.

The ``baskets`` and ``recommend`` stages of ``centile run`` on a generated data set, per memory limit:

    python benchmarks/bench_baskets.py --stages bench-data/c1000000 [--limits ,4GB] [--base DIR]

A full ``centile run`` on the data writes ``--base`` once (``bench-data/<data>-run``; kept for
the next call). Each setting copies that folder, removes the two stages' outputs, and runs
``centile run --memory-limit <limit>`` on the copy: every other stage is reused, so the run measures
these two stages (each stage's seconds, and its peak RSS, VmHWM reset at the stage's start, from
``manifest.json``) with the inputs validated as in a full run. Writes
``benchmarks/results/baskets_stages.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, median_of, run_isolated, save  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench-data"
CJ = ROOT.parent / "shared" / "data" / "completejourney" / "transactions.parquet"


def make_baskets(n: int, m: int, path: Path) -> None:
    import polars as pl

    rng = np.random.default_rng(2029)
    sizes = np.minimum(1 + np.floor(rng.lognormal(1.0, 1.2, n)).astype(np.int64), 400)
    p = 1.0 / (np.arange(m) + 10.0)
    p /= p.sum()
    items = rng.choice(m, int(sizes.sum()), p=p)
    order = np.repeat(np.arange(n, dtype=np.int64), sizes)
    customer = rng.integers(0, max(n // 4, 1), n)[order]
    pl.DataFrame({"customer_id": customer, "order_id": order, "item": items.astype(np.int64)}).write_parquet(path)


CENTILE = r"""
import json, sys, time
import polars as pl
from centile.baskets import compute_baskets, parse_baskets
lines = pl.read_parquet(sys.argv[1])
n = int(sys.argv[3])
if n:
    lines = lines.filter(pl.col("order_id") < n)
size = int(sys.argv[5]) if len(sys.argv) > 5 else 2
st = parse_baskets({"min_count": int(sys.argv[2]), "segment_by": [], "max_size": size})
compute_baskets(lines.head(2000), st)  # compile / load the kernels outside the timing
t0 = time.perf_counter()
res = compute_baskets(lines, st)
dt = time.perf_counter() - t0
row = res.summary.row(0, named=True)
out = {"seconds": dt, "lines": lines.height, "baskets": row["n_baskets"], "excluded": row["baskets_excluded"],
       "frequent_items": row["frequent_items"], "pairs": row["frequent_pairs"],
       "triples": row["frequent_triples"], "rules": res.rules.height}
if len(sys.argv) > 4 and sys.argv[4]:
    res.rules.select("antecedent", "consequent", "lift").write_parquet(sys.argv[4])
print(json.dumps(out))
"""

DUCKDB = r"""
import json, sys, time
import duckdb
con = duckdb.connect()
con.execute("SET threads = 2")
t0 = time.perf_counter()
rows = con.execute('''
  WITH lines AS (SELECT DISTINCT customer_id, order_id, item FROM read_parquet($path)),
       kept AS (SELECT * FROM lines WHERE (customer_id, order_id) IN (
                  SELECT customer_id, order_id FROM lines GROUP BY ALL HAVING count(*) <= 200))
  SELECT count(*) FROM (
    SELECT a.item, b.item AS item2, count(*) AS c
    FROM kept a JOIN kept b ON a.customer_id = b.customer_id AND a.order_id = b.order_id AND a.item < b.item
    GROUP BY ALL HAVING count(*) >= $min)''', {"path": sys.argv[1], "min": int(sys.argv[2])}).fetchone()
print(json.dumps({"seconds": time.perf_counter() - t0, "pairs": rows[0]}))
"""

MLXTEND = r"""
import json, sys, time
import pandas as pd, polars as pl
from mlxtend.frequent_patterns import association_rules, fpgrowth
from mlxtend.preprocessing import TransactionEncoder
n, min_count = int(sys.argv[3]), int(sys.argv[2])
lines = pl.read_parquet(sys.argv[1]).filter(pl.col("order_id") < n)
t0 = time.perf_counter()
baskets = lines.group_by("order_id").agg(pl.col("item").unique()).filter(pl.col("item").list.len() <= 200)
tx = baskets.get_column("item").to_list()
enc = TransactionEncoder()
dense = pd.DataFrame(enc.fit(tx).transform(tx), columns=enc.columns_)
freq = fpgrowth(dense, min_support=min_count / len(tx), use_colnames=True, max_len=2)
rules = association_rules(freq, num_itemsets=len(tx), metric="support", min_threshold=0.0)
dt = time.perf_counter() - t0
rules = rules[(rules["antecedents"].map(len) == 1) & (rules["consequents"].map(len) == 1)]
pl.DataFrame({"antecedent": [next(iter(a)) for a in rules["antecedents"]],
              "consequent": [next(iter(c)) for c in rules["consequents"]],
              "lift": rules["lift"].to_numpy()}).write_parquet(sys.argv[4])
print(json.dumps({"seconds": dt, "baskets": len(tx), "dense_mb": dense.shape[0] * dense.shape[1] / 2**20,
                  "rules": int(len(rules))}))
"""

CJ_EVAL = r"""
import json, sys, time, datetime as dt
from centile.baskets.job import run_recommend
from centile.baskets.settings import recommend_settings
from centile.config import load_config
cfg = load_config(sys.argv[1])
st = recommend_settings(cfg, k=10)
t0 = time.perf_counter()
res = run_recommend(cfg, sys.argv[2], settings=st, evaluate=dt.date(2017, 10, 1))
out = {"seconds": time.perf_counter() - t0, "customers": res.recommendations["customer_id"].n_unique(),
       "evaluation": res.evaluation.drop("cutoff").to_dicts()}
print(json.dumps(out))
"""


def _compare(a: Path, b: Path) -> dict:
    import polars as pl

    x, y = pl.read_parquet(a), pl.read_parquet(b)
    j = x.join(y, on=["antecedent", "consequent"], how="full", coalesce=True)
    both = j.drop_nulls()
    rel = ((both["lift"] - both["lift_right"]).abs() / both["lift_right"]).max() if both.height else 0.0
    return {"same_rules": j.height == both.height == x.height == y.height, "centile_rules": x.height,
            "mlxtend_rules": y.height, "max_rel_lift_diff": rel}


STAGE_FILES = ("basket_itemsets.parquet", "basket_rules.parquet", "basket_summary.parquet",
               "recommendations.parquet", "recommendation_eval.parquet")


def _centile_run(data: Path, out: Path, *flags: str) -> float:
    import subprocess
    import time

    cfg = out.parent / f"{out.name}.toml"
    cfg.write_text(f'data = "{data.resolve()}"\n')
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "centile.cli", "run", "-c", str(cfg), "--out", str(out), *flags],
                   check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def stages(data: Path, limits: list[str], base: Path | None) -> dict:
    """The baskets and recommend stages per memory limit (see the module doc)."""
    import json
    import os
    import shutil

    base = base or data.parent / f"{data.name}-run"
    if not (base / "manifest.json").exists():
        print("full run into", base, flush=True)
        _centile_run(data, base)
    doc: dict = {"machine": machine(), "data": str(data), "runs": []}
    for limit in limits:
        out = base.parent / f"{base.name}-stages"
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(base, out)
        for f in STAGE_FILES:
            (out / f).unlink(missing_ok=True)
        load = os.getloadavg()[0]
        wall = _centile_run(data, out, *(["--memory-limit", limit] if limit else []))
        m = json.loads((out / "manifest.json").read_text())
        row = {"memory_limit": limit or None, "load_1min_before": round(load, 2), "run_wall_s": round(wall, 1)}
        for name in ("baskets", "recommend"):
            st = m["stages"][name]
            row[name] = {"status": st.get("status"), "seconds": st.get("seconds"), "peak_rss_mb": st.get("peak_rss_mb"),
                         "partitions": (m.get("summary", {}).get(name) or {}).get("partitions")}
        doc["runs"].append(row)
        print(row, flush=True)
        shutil.rmtree(out, ignore_errors=True)
    return doc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stages", type=Path, help="a generated data folder: time the baskets and recommend stages")
    ap.add_argument("--limits", default=",4GB", help="memory limits for --stages, comma-separated ('' = none)")
    ap.add_argument("--base", type=Path, help="a full run's output on --stages data (made when absent)")
    ap.add_argument("--baskets", type=int, default=1_000_000)
    ap.add_argument("--products", type=int, default=50_000)
    ap.add_argument("--min-count", type=int, default=20)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--mlxtend-sizes", default="5000,20000,50000,100000,200000")
    ap.add_argument("--skip-duckdb", action="store_true")
    ap.add_argument("--skip-cj", action="store_true")
    a = ap.parse_args()
    if a.stages:
        print(save("baskets_stages", stages(a.stages, a.limits.split(","), a.base)))
        return
    DATA.mkdir(exist_ok=True)
    path = DATA / f"baskets_{a.baskets}_{a.products}.parquet"
    if not path.exists():
        make_baskets(a.baskets, a.products, path)
    doc: dict = {"machine": machine(), "baskets": a.baskets, "products": a.products, "min_count": a.min_count,
                 "data": str(path.relative_to(ROOT))}
    runs = [run_isolated(CENTILE, str(path), str(a.min_count), "0") for _ in range(a.runs)]
    doc["centile"] = {**runs[0], "seconds": median_of(runs, "seconds"), "wall_s": median_of(runs, "wall_s"),
                      "peak_rss_mb": median_of(runs, "peak_rss_mb"), "runs": [r["seconds"] for r in runs]}
    print("centile", doc["centile"], flush=True)
    runs = [run_isolated(CENTILE, str(path), str(a.min_count), "0", "", "3") for _ in range(a.runs)]
    doc["centile_max_size_3"] = {**runs[0], "seconds": median_of(runs, "seconds"),
                                 "peak_rss_mb": median_of(runs, "peak_rss_mb"), "runs": [r["seconds"] for r in runs]}
    print("centile size 3", doc["centile_max_size_3"], flush=True)
    if not a.skip_duckdb:
        runs = [run_isolated(DUCKDB, str(path), str(a.min_count)) for _ in range(a.runs)]
        doc["duckdb_pairs_only"] = {**runs[0], "seconds": median_of(runs, "seconds"),
                                    "peak_rss_mb": median_of(runs, "peak_rss_mb")}
        print("duckdb", doc["duckdb_pairs_only"], flush=True)
    doc["mlxtend"] = []
    import polars as pl

    distinct = pl.scan_parquet(path)
    for n in [int(s) for s in a.mlxtend_sizes.split(",") if s]:
        items = distinct.filter(pl.col("order_id") < n).select(pl.col("item").n_unique()).collect().item()
        dense_gb = n * items / 2**30
        if dense_gb > 2:
            doc["mlxtend"].append({"baskets": n, "skipped": f"dense input {dense_gb:.1f} GB > 2 GB"})
            print("mlxtend stops at", n, dense_gb, flush=True)
            break
        ours, theirs = DATA / "rules_centile.parquet", DATA / "rules_mlxtend.parquet"
        try:
            m = run_isolated(MLXTEND, str(path), str(a.min_count), str(n), str(theirs))
        except RuntimeError as exc:
            doc["mlxtend"].append({"baskets": n, "failed": str(exc)[-500:]})
            break
        c = run_isolated(CENTILE, str(path), str(a.min_count), str(n), str(ours))
        row = {"baskets": n, "dense_items": items, "mlxtend": m, "centile": c, **_compare(ours, theirs)}
        doc["mlxtend"].append(row)
        print("mlxtend", row, flush=True)
    if not a.skip_cj and CJ.exists():
        out = DATA / "cj_recommend"
        doc["completejourney"] = run_isolated(CJ_EVAL, str(ROOT / "engine" / "examples" / "completejourney.toml"),
                                              str(out))
        print("completejourney", doc["completejourney"], flush=True)
    print(save("baskets", doc))


if __name__ == "__main__":
    main()
