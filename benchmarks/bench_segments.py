"""Segments at scale: centile's RFM against plain DuckDB SQL and Polars, plus the whole segments job.

    python benchmarks/bench_segments.py [--customers 2000000] [--runs 3]

A feature table (the columns ``centile segments`` reads) and a customers
table are generated directly with NumPy -- integer order counts with many
ties, customers without orders, e-mail rates, category shares -- and written
once to ``bench-data/segments_<N>/``. Then each contestant runs in a fresh
process (peak memory per process) on the loaded tables:

* ``centile_rfm``: R, F, M scores (tie-aware quantile kernel), named
  segments and the R×F grid (:func:`centile.segments.rfm.rfm_scores`, ``rf_grid``);
* ``duckdb_rfm``: the same in SQL: ``1 + floor(5 * (rank() OVER (ORDER BY x)
  - 1) / count(*) OVER ())`` per score, a CASE for the named segments and a
  GROUP BY for the grid;
* ``polars_rfm``: the same with ``rank("min")`` expressions;
* ``centile_segments``: the whole job, :func:`centile.segments.form_segments`
  with the defaults (RFM, five rule-based segmentations, k-means with k chosen
  by silhouette, profiles of every segment);
* ``centile_segments_hdbscan``: the same plus the HDBSCAN density clusters
  extended to every customer.

The three RFM contestants must produce identical scores and segments; the
script fails otherwise. Writes ``benchmarks/results/segments.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, median_of, run_isolated, save  # noqa: E402

CATS = ("fashion", "home", "electronics", "shoes")


def make_data(n: int, folder: Path) -> None:
    """Features and customers tables of ``n`` customers (5 % without orders)."""
    import polars as pl

    rng = np.random.default_rng(2026)
    ids = rng.permutation(np.arange(1, n + 1, dtype=np.int64))
    buyer = rng.random(n) > 0.05
    orders = np.where(buyer, rng.negative_binomial(1, 0.35, n), 0).astype(np.int32)
    gross = np.round(orders * rng.gamma(3.0, 30.0, n), 2)
    ret = np.round(gross * rng.beta(1, 7, n), 2)
    sent = rng.poisson(10, n).astype(np.int32)
    shares = rng.dirichlet(np.ones(len(CATS)), n)
    recency = np.where(buyer, rng.integers(1, 1100, n), -1).astype(np.int32)
    f = pl.DataFrame({
        "customer_id": ids, "recency_days": recency, "tenure_days": recency + rng.integers(0, 400, n),
        "orders_12m": orders, "orders_total": orders + buyer, "gross_revenue_12m": gross,
        "returned_value_12m": ret, "net_revenue_12m": gross - ret, "net_revenue_lifetime": (gross - ret) * 2,
        "avg_order_value_12m": np.where(orders > 0, gross / np.maximum(orders, 1), np.nan),
        "return_rate_12m": np.where(gross > 0, ret / np.where(gross > 0, gross, 1), np.nan),
        "max_price_kept_24m": np.round(rng.gamma(2, 40, n), 2),
        "premium_margin_12m": np.round(np.where(rng.random(n) < 0.3, rng.gamma(1, 20, n), 0), 2),
        "emails_sent_12m": sent, "open_rate_12m": np.where(sent > 0, rng.beta(2, 6, n), np.nan),
        "click_rate_12m": np.where(sent > 0, rng.beta(1, 10, n), np.nan),
        "preferred_channel": rng.choice(["web", "app", "phone", "store"], n, p=[0.6, 0.25, 0.1, 0.05]),
        "top_category": np.array(CATS)[shares.argmax(axis=1)],
        **{f"share_{c}": shares[:, j] for j, c in enumerate(CATS)},
    }).with_columns(
        pl.when(pl.col("recency_days") >= 0).then(pl.col("recency_days")).alias("recency_days"),
        pl.when(pl.col("recency_days") >= 0).then(pl.col("tenure_days")).alias("tenure_days"),
        pl.col("avg_order_value_12m", "return_rate_12m", "open_rate_12m", "click_rate_12m").fill_nan(None))
    c = pl.DataFrame({"customer_id": ids, "birth_year": rng.integers(1940, 2006, n).astype(np.int32),
                      "gender": rng.choice(["f", "m", "d"], n, p=[0.5, 0.48, 0.02]),
                      "region": rng.choice(["north", "south", "east", "west", "central"], n)})
    folder.mkdir(parents=True, exist_ok=True)
    f.write_parquet(folder / "features.parquet")
    c.write_parquet(folder / "customers.parquet")


PRELUDE = """
import json, sys, time
import numpy as np, polars as pl
folder = sys.argv[1]
f = pl.read_parquet(folder + "/features.parquet")
"""

CENTILE_RFM = PRELUDE + """
from centile.segments.rfm import rfm_scores, rf_grid, RFM_SEGMENTS
rfm_scores(np.array([1.0, 2.0]), np.array([1.0, 2.0]), np.array([1.0, 2.0]))  # compile / load cache
t0 = time.perf_counter()
s = rfm_scores(f["recency_days"].to_numpy(), f["orders_12m"].to_numpy(), f["net_revenue_12m"].to_numpy(), 5)
grid = rf_grid(s.r, s.f, f["net_revenue_12m"].to_numpy(), 5)
t = time.perf_counter() - t0
seg = np.asarray(RFM_SEGMENTS)[s.segment]
print(json.dumps({"seconds": t, "check": [int(s.r.astype(np.int64) @ np.arange(len(s.r)) % 1000003),
                                          int(s.f.astype(np.int64).sum()), int(s.m.astype(np.int64).sum()),
                                          int((seg == "Champions").sum()), int((seg == "Lost").sum()),
                                          int(grid["customers"].max())]}))
"""

SEGMENT_SQL = "CASE " + " ".join(
    f"WHEN r5 IN ({', '.join(map(str, rs))}) AND fm IN ({', '.join(map(str, fms))}) THEN '{name.replace(chr(39), chr(39) * 2)}'"
    for name, rs, fms in [
        ("Champions", (5,), (4, 5)), ("Loyal Customers", (3, 4), (4, 5)), ("Potential Loyalists", (4, 5), (2, 3)),
        ("New Customers", (5,), (1,)), ("Promising", (4,), (1,)), ("Need Attention", (3,), (3,)),
        ("About to Sleep", (3,), (1, 2)), ("At Risk", (1, 2), (3, 4)), ("Can't Lose Them", (1, 2), (5,)),
        ("Hibernating", (2,), (1, 2)), ("Lost", (1,), (1, 2))]) + " ELSE 'No Purchase' END"

DUCKDB_RFM = PRELUDE + """
import duckdb
con = duckdb.connect()
con.register("f", f.select("recency_days", "orders_12m", "net_revenue_12m").with_row_index("i"))
seg_sql = sys.argv[2]
t0 = time.perf_counter()
con.execute('''CREATE TEMP TABLE s AS
WITH b AS (SELECT i, recency_days, orders_12m, net_revenue_12m FROM f),
sc AS (
  SELECT i, net_revenue_12m,
    CAST(1 + floor(5 * (rank() OVER (ORDER BY recency_days DESC) - 1) / count(*) OVER ()) AS INTEGER) AS r,
    CAST(1 + floor(5 * (rank() OVER (ORDER BY orders_12m) - 1) / count(*) OVER ()) AS INTEGER) AS f,
    CAST(1 + floor(5 * (rank() OVER (ORDER BY net_revenue_12m) - 1) / count(*) OVER ()) AS INTEGER) AS m
  FROM b WHERE recency_days IS NOT NULL)
SELECT b.i, sc.r, sc.f, sc.m, sc.r AS r5, CAST(ceil((sc.f + sc.m) / 2) AS INTEGER) AS fm, b.net_revenue_12m
FROM b LEFT JOIN sc USING (i)''').fetchall()
con.execute(f"CREATE TEMP TABLE out AS SELECT i, r, f, m, {seg_sql} AS segment FROM s").fetchall()
grid = con.execute("SELECT r, f, count(*), sum(net_revenue_12m) FROM s WHERE r IS NOT NULL GROUP BY r, f").fetchall()
res = con.sql("SELECT r, f, m, segment FROM out ORDER BY i").pl()
t = time.perf_counter() - t0
r = res["r"].fill_null(0).cast(pl.Int64).to_numpy()
seg = res["segment"].to_numpy()
print(json.dumps({"seconds": t, "check": [int(r @ np.arange(len(r)) % 1000003), int(res["f"].fill_null(0).sum()),
                                          int(res["m"].fill_null(0).sum()), int((seg == "Champions").sum()),
                                          int((seg == "Lost").sum()), int(max(g[2] for g in grid))]}))
"""

POLARS_RFM = PRELUDE + """
seg_rules = [("Champions", (5,), (4, 5)), ("Loyal Customers", (3, 4), (4, 5)), ("Potential Loyalists", (4, 5), (2, 3)),
    ("New Customers", (5,), (1,)), ("Promising", (4,), (1,)), ("Need Attention", (3,), (3,)),
    ("About to Sleep", (3,), (1, 2)), ("At Risk", (1, 2), (3, 4)), ("Can't Lose Them", (1, 2), (5,)),
    ("Hibernating", (2,), (1, 2)), ("Lost", (1,), (1, 2))]
t0 = time.perf_counter()
buyer = pl.col("recency_days").is_not_null()
m = pl.col("recency_days").is_not_null().sum()
q = f.lazy().select("recency_days", "orders_12m", "net_revenue_12m").with_columns(
    pl.when(buyer).then(-pl.col("recency_days")).alias("_r"),
    pl.when(buyer).then(pl.col("orders_12m")).alias("_f"),
    pl.when(buyer).then(pl.col("net_revenue_12m")).alias("_m"))
q = q.with_columns(*[(1 + (5 * (pl.col(c).rank("min").cast(pl.Int64) - 1)) // m).cast(pl.Int32).alias(o)
                     for c, o in (("_r", "r"), ("_f", "f"), ("_m", "m"))])
q = q.with_columns(((pl.col("f") + pl.col("m") + 1) // 2).alias("fm"))
expr = pl.lit("No Purchase")
for name, rs, fms in reversed(seg_rules):
    expr = pl.when(pl.col("r").is_in(rs) & pl.col("fm").is_in(fms)).then(pl.lit(name)).otherwise(expr)
res = q.with_columns(expr.alias("segment")).collect()
grid = res.filter(pl.col("r").is_not_null()).group_by("r", "f").agg(pl.len(), pl.col("net_revenue_12m").sum())
t = time.perf_counter() - t0
r = res["r"].fill_null(0).cast(pl.Int64).to_numpy()
seg = res["segment"].to_numpy()
print(json.dumps({"seconds": t, "check": [int(r @ np.arange(len(r)) % 1000003), int(res["f"].fill_null(0).sum()),
                                          int(res["m"].fill_null(0).sum()), int((seg == "Champions").sum()),
                                          int((seg == "Lost").sum()), int(grid["len"].max())]}))
"""

CENTILE_SEGMENTS = PRELUDE + """
import datetime as dt
from centile.config import Config
from centile.segments import form_segments
from centile.segments.rfm import rfm_scores
c = pl.read_parquet(folder + "/customers.parquet")
rfm_scores(np.array([1.0, 2.0]), np.array([1.0, 2.0]), np.array([1.0, 2.0]))  # compile / load cache
density = sys.argv[2]
cfg = Config(tables={}, sections={"segments": {"density": density}})
t0 = time.perf_counter()
res = form_segments(f, cfg, customers=c, as_of=dt.date(2026, 1, 1))
t = time.perf_counter() - t0
print(json.dumps({"seconds": t, "k": res.k, "density_clusters": res.density_clusters,
                  "segmentations": list(res.segmentations), "profile_rows": res.profiles.height}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=2_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parent.parent / "bench-data")
    args = ap.parse_args()
    folder = args.data / f"segments_{args.customers}"
    if not (folder / "customers.parquet").exists():
        print(f"generating {args.customers:,} customers into {folder} …", file=sys.stderr)
        make_data(args.customers, folder)
    contestants = {"centile_rfm": (CENTILE_RFM,), "duckdb_rfm": (DUCKDB_RFM, SEGMENT_SQL),
                   "polars_rfm": (POLARS_RFM,)}
    runs: dict[str, list[dict]] = {k: [] for k in contestants}
    for i in range(args.runs):
        for name, (code, *extra) in contestants.items():
            doc = run_isolated(code, str(folder), *extra)
            runs[name].append(doc)
            print(f"run {i + 1} {name}: {doc['seconds']:.3f} s, peak {doc['peak_rss_mb']:.0f} MB", file=sys.stderr)
    checks = {name: r[0]["check"] for name, r in runs.items()}
    if len({tuple(c) for c in checks.values()}) != 1:
        raise SystemExit(f"RFM results differ between contestants: {checks}")
    job_runs: dict[str, list[dict]] = {"centile_segments": [], "centile_segments_hdbscan": []}
    for i in range(max(1, args.runs - 1)):
        for name, density in (("centile_segments", "none"), ("centile_segments_hdbscan", "hdbscan")):
            doc = run_isolated(CENTILE_SEGMENTS, str(folder), density)
            job_runs[name].append(doc)
            print(f"run {i + 1} {name}: {doc['seconds']:.2f} s, peak {doc['peak_rss_mb']:.0f} MB, k={doc['k']}",
                  file=sys.stderr)
    result = {"customers": args.customers, "runs": args.runs, "machine": machine(), "rfm": {}, "job": {}}
    for name, r in runs.items():
        result["rfm"][name] = {"seconds_median": median_of(r, "seconds"), "peak_rss_mb_median": median_of(r, "peak_rss_mb"),
                               "seconds": [x["seconds"] for x in r]}
    base = result["rfm"]["centile_rfm"]["seconds_median"]
    for name in ("duckdb_rfm", "polars_rfm"):
        result["rfm"][name]["ratio_to_centile"] = result["rfm"][name]["seconds_median"] / base
    for name, r in job_runs.items():
        result["job"][name] = {"seconds_median": median_of(r, "seconds"), "peak_rss_mb_median": median_of(r, "peak_rss_mb"),
                               "seconds": [x["seconds"] for x in r], "k": r[0]["k"],
                               "density_clusters": r[0]["density_clusters"], "segmentations": r[0]["segmentations"],
                               "profile_rows": r[0]["profile_rows"]}
    path = save("segments", result)
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
