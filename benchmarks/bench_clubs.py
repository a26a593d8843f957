"""Ranking + overlap-free clubs at scale: centile's kernels against plain DuckDB SQL and Polars.

    python benchmarks/bench_clubs.py [--customers 10000000] [--runs 3]

A feature table with the six default club metrics (and their tie-breakers
and eligibility columns) is generated directly with NumPy, with many ties and
nulls, and written once to ``bench-data/features_<N>.parquet`` together with
the seeded id hash centile uses as the last tie-breaker. Then, in rounds, each
contestant runs in a fresh process (peak memory per process) and does the
same job on the loaded table: rank and percent_rank of every club metric over
its eligible customers, and the default ``priority`` assignment with tiers
[0.01, 0.05]:

* ``centile``: ``centile.clubs.form_clubs`` (numba kernels);
* ``duckdb_sql``: what a user would write: ``rank()`` / ``percent_rank()``
  windows per metric, then one ``INSERT … ORDER BY … LIMIT`` per club and tier
  over the customers not yet taken;
* ``polars``: ``rank`` per metric, then per club and tier a sort of the free
  eligible customers and ``head``.

All three must produce identical memberships (customer, club, tier); the
script fails otherwise. Writes ``benchmarks/results/clubs.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, median_of, run_isolated, save  # noqa: E402

CLUBS = [  # name, metric, tie-break, eligibility (the defaults of centile.config)
    ("frequency_champions", "orders_12m", "net_revenue_12m", "orders_12m >= 1"),
    ("high_price_buyers", "max_price_kept_24m", None, "max_price_kept_24m > 0"),
    ("responders_without_purchase", "click_rate_12m", "open_rate_12m", "emails_sent_12m >= 3 AND orders_12m = 0"),
    ("price_ignorers", "premium_margin_12m", None, "premium_margin_12m > 0"),
    ("heavy_returners", "returned_value_12m", None, "orders_12m >= 2 AND returned_value_12m > 0"),
    ("lifetime_heroes", "net_revenue_lifetime", "tenure_days", "tenure_days >= 365"),
]
SHARES = (0.01, 0.05)


def make_features(n: int, path: Path) -> None:
    """A synthetic feature table: integer-valued metrics (many ties), nulls, and the id hash."""
    import polars as pl

    from centile.kernels.hashing import hash_int64

    rng = np.random.default_rng(2026)
    ids = rng.permutation(np.arange(1, n + 1, dtype=np.int64))
    orders = rng.negative_binomial(1, 0.35, n).astype(np.int32)
    buyer = orders > 0
    sent = rng.integers(0, 14, n).astype(np.int32)
    df = pl.DataFrame({
        "customer_id": ids,
        "orders_12m": orders,
        "net_revenue_12m": np.where(buyer, np.round(rng.gamma(1.5, 60, n) * orders, 2), 0.0),
        "max_price_kept_24m": np.where(rng.random(n) < 0.7, np.round(rng.gamma(2, 25, n), 0), np.nan),
        "emails_sent_12m": sent,
        "open_rate_12m": np.where(sent > 0, np.round(rng.beta(2, 5, n) * 12) / 12, np.nan),
        "click_rate_12m": np.where(sent > 0, np.round(rng.beta(1, 8, n) * 12) / 12, np.nan),
        "premium_margin_12m": np.where(rng.random(n) < 0.4, np.round(rng.normal(15, 30, n), 1), 0.0),
        "returned_value_12m": np.where(buyer, np.round(rng.gamma(0.6, 40, n)), 0.0),
        "net_revenue_lifetime": np.round(rng.gamma(1.2, 300, n), 2),
        "tenure_days": rng.integers(0, 2500, n).astype(np.int32),
    }).with_columns(pl.col(c).fill_nan(None) for c in ("max_price_kept_24m", "open_rate_12m", "click_rate_12m"))
    df = df.with_columns(pl.Series("h", hash_int64(ids, 0)))
    path.parent.mkdir(parents=True, exist_ok=True)
    df.write_parquet(path)


CENTILE = r"""
import json, sys, time
import polars as pl
from centile.config import Config
from centile.clubs import form_clubs
f = pl.read_parquet(sys.argv[1]).drop("h")
cfg = Config(tables={})
t0 = time.perf_counter()
res = form_clubs(f, cfg)
dt = time.perf_counter() - t0
res.clubs.select("customer_id", "club", pl.col("tier").cast(pl.Int32)).write_parquet(sys.argv[2])
print(json.dumps({"seconds": dt, "members": res.clubs.height}))
"""

DUCKDB = r"""
import json, math, sys, time
import duckdb
CLUBS = json.loads(sys.argv[3]); SHARES = json.loads(sys.argv[4])
con = duckdb.connect()
con.execute("CREATE TABLE f AS SELECT * FROM read_parquet($p)", {"p": sys.argv[1]})
n = con.execute("SELECT count(*) FROM f").fetchone()[0]
t0 = time.perf_counter()
cols = []
for name, metric, tb, elig in CLUBS:
    e = f"({elig}) AND {metric} IS NOT NULL"
    cols.append(f"CASE WHEN {e} THEN rank() OVER (PARTITION BY {e} ORDER BY {metric} DESC) END AS {name}_rank")
    cols.append(f"CASE WHEN {e} THEN percent_rank() OVER (PARTITION BY {e} ORDER BY {metric}) END AS {name}_pct_rank")
con.execute(f"CREATE TABLE ranks AS SELECT customer_id, {', '.join(cols)} FROM f")
con.execute("CREATE TABLE taken (customer_id BIGINT PRIMARY KEY, club VARCHAR, tier INTEGER)")
for t, share in enumerate(SHARES, start=1):
    size = math.ceil(round(share * n, 9))
    for name, metric, tb, elig in CLUBS:
        order = f"{metric} DESC" + (f", {tb} DESC NULLS LAST" if tb else "") + ", h ASC"
        con.execute(f'''INSERT INTO taken
            SELECT customer_id, '{name}', {t} FROM f
            WHERE ({elig}) AND {metric} IS NOT NULL
              AND customer_id NOT IN (SELECT customer_id FROM taken)
            ORDER BY {order} LIMIT {size}''')
dt = time.perf_counter() - t0
con.execute("COPY (SELECT * FROM taken) TO '" + sys.argv[2].replace("'", "''") + "' (FORMAT parquet)")
print(json.dumps({"seconds": dt, "members": con.execute("SELECT count(*) FROM taken").fetchone()[0]}))
"""

POLARS = r"""
import json, math, sys, time
import polars as pl
CLUBS = json.loads(sys.argv[3]); SHARES = json.loads(sys.argv[4])
f = pl.read_parquet(sys.argv[1])
n = f.height
t0 = time.perf_counter()
rank_cols = []
for name, metric, tb, elig in CLUBS:
    e = pl.sql_expr(elig).fill_null(False) & pl.col(metric).is_not_null()
    v = pl.when(e).then(pl.col(metric))
    m = e.sum()
    rank_cols.append(v.rank("min", descending=True).alias(f"{name}_rank"))
    rank_cols.append(pl.when(m > 1).then((v.rank("min") - 1) / (m - 1)).otherwise(pl.when(e).then(0.0)).alias(f"{name}_pct_rank"))
ranks = f.select("customer_id", *rank_cols)
taken = pl.Series("customer_id", [], dtype=pl.Int64)
parts = []
for t, share in enumerate(SHARES, start=1):
    size = math.ceil(round(share * n, 9))
    for name, metric, tb, elig in CLUBS:
        by = [metric] + ([tb] if tb else []) + ["h"]
        desc = [True] + ([True] if tb else []) + [False]
        pick = (f.filter(pl.sql_expr(elig).fill_null(False) & pl.col(metric).is_not_null()
                         & ~pl.col("customer_id").is_in(taken.implode()))
                 .sort(by, descending=desc, nulls_last=True).head(size)
                 .select("customer_id", pl.lit(name).alias("club"), pl.lit(t, dtype=pl.Int32).alias("tier")))
        parts.append(pick)
        taken = pl.concat([taken, pick["customer_id"]])
members = pl.concat(parts)
dt = time.perf_counter() - t0
members.write_parquet(sys.argv[2])
print(json.dumps({"seconds": dt, "members": members.height}))
"""


def main() -> None:
    import json

    import polars as pl

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--customers", type=int, default=10_000_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    path = Path("bench-data") / f"features_{args.customers}.parquet"
    if not path.exists():
        print(f"writing {args.customers:,} synthetic feature rows to {path} ...", file=sys.stderr)
        make_features(args.customers, path)
    outs = {k: Path("bench-data") / f"clubs_{k}.parquet" for k in ("centile", "duckdb_sql", "polars")}
    code = {"centile": CENTILE, "duckdb_sql": DUCKDB, "polars": POLARS}
    extra = (json.dumps(CLUBS), json.dumps(SHARES))
    runs: dict[str, list[dict]] = {k: [] for k in code}
    run_isolated(CENTILE, str(path), str(outs["centile"]))  # warm the numba cache and the file cache
    for i in range(args.runs):
        for k in code:
            runs[k].append(run_isolated(code[k], str(path), str(outs[k]), *extra))
        print(f"round {i + 1}: " + ", ".join(f"{k} {runs[k][-1]['seconds']:.2f} s" for k in code), file=sys.stderr)
    frames = {k: pl.read_parquet(p).sort("customer_id") for k, p in outs.items()}
    identical = all(frames["centile"].equals(frames[k]) for k in ("duckdb_sql", "polars"))
    med = {k: median_of(v, "seconds") for k, v in runs.items()}
    doc = {
        "benchmark": "clubs", "customers": args.customers, "metrics": len(CLUBS), "shares": SHARES,
        "runs": args.runs, "members": frames["centile"].height, "identical_memberships": identical,
        "median_s": {k: round(v, 3) for k, v in med.items()},
        "peak_rss_mb": {k: max(r["peak_rss_mb"] for r in v) for k, v in runs.items()},
        "speedup_vs_duckdb_sql": round(med["duckdb_sql"] / med["centile"], 2),
        "speedup_vs_polars": round(med["polars"] / med["centile"], 2),
        "all_runs_s": {k: [round(r["seconds"], 3) for r in v] for k, v in runs.items()},
        "machine": machine(),
    }
    out = save("clubs", doc)
    print(f"{args.customers:,} customers x {len(CLUBS)} metrics, ranks + priority clubs, median of {args.runs}:")
    for k in code:
        print(f"  {k:11s} {med[k]:7.2f} s   peak {doc['peak_rss_mb'][k]:8.0f} MB")
    print(f"  speed-up: {doc['speedup_vs_duckdb_sql']}x vs DuckDB SQL, {doc['speedup_vs_polars']}x vs Polars; "
          f"identical memberships: {identical}   -> {out}")
    if not identical:
        sys.exit("memberships differ between the three implementations")


if __name__ == "__main__":
    main()
