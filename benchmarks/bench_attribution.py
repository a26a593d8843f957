"""Attribution at scale: every model over N journeys x C channels, against plain Polars / DuckDB
heuristics and the ChannelAttribution package.

    python benchmarks/bench_attribution.py [--journeys 10000000] [--channels 20] [--runs 3]

Journeys are generated with NumPy and written once to ``bench-data/attribution_<N>_<C>.parquet``
(one row per touch: journey, channel, age_days; per journey conversion 0/1 and value) and, for
ChannelAttribution, as the aggregated path table ChannelAttribution reads. Path lengths are
1 + Geometric(0.35) capped at 12, channel popularity is Zipf-like and each channel adds its own
lift to a logistic conversion probability. Each step runs in a fresh process (medians of
``--runs``; peak RSS of that process):

* ``engine``: ``centile.attribution.attribute`` with every model (first, last, linear, time decay,
  position based, simplified Shapley, full Shapley, Markov orders 1, 2 and 3); seconds per model
  group, after building the CSR journeys (timed apart) and compiling on a small sample;
* ``polars`` / ``duckdb``: first, last, linear and position based with plain group-bys / window
  functions, checked equal to the engine's;
* ``channelattribution``: ``heuristic_models`` and ``markov_model`` with their defaults on the path
  table, when the package is installed (it builds from source; skipped with a note otherwise);
  its simulated Markov conversions are compared with the exact order-1 result.

Writes ``benchmarks/results/attribution.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, median_of, run_isolated, save  # noqa: E402

DATA = Path(__file__).resolve().parent.parent / "bench-data"


def make_journeys(n: int, c: int, touches: Path, paths: Path) -> None:
    import polars as pl

    rng = np.random.default_rng(2029)
    lens = np.minimum(1 + rng.geometric(0.35, n) - 1, 12).astype(np.int64)
    lens = np.maximum(lens, 1)
    total = int(lens.sum())
    pop = 1.0 / np.arange(1, c + 1) ** 0.8
    ch = rng.choice(c, size=total, p=pop / pop.sum()).astype(np.int32)
    jid = np.repeat(np.arange(n, dtype=np.int64), lens)
    lift = rng.normal(0.0, 0.4, c)
    score = np.bincount(jid, weights=lift[ch], minlength=n) - 1.2 + 0.1 * lens
    conv = (rng.random(n) < 1 / (1 + np.exp(-score))).astype(np.int8)
    value = np.where(conv == 1, np.round(rng.lognormal(3.5, 0.8, n), 2), 0.0)
    pos = np.arange(total) - np.repeat(np.cumsum(lens) - lens, lens)
    # strictly decreasing along each path: about 2 days between touches
    age = (np.repeat(lens, lens) - 1 - pos) * 2.0 + rng.uniform(0.0, 1.9, total)
    pl.DataFrame({"journey": jid, "channel": ch, "age_days": age}).write_parquet(touches)
    pl.DataFrame({"conv": conv, "value": value}).write_parquet(touches.with_suffix(".journeys.parquet"))
    names = np.array([f"ch{i:02d}" for i in range(c)])
    t = pl.DataFrame({"journey": jid, "name": names[ch]})
    agg = (t.group_by("journey", maintain_order=True).agg(pl.col("name").str.join(" > ").alias("path"))
           .with_columns(c=pl.Series(conv.astype(np.float64)), v=pl.Series(value))
           .group_by("path").agg(pl.col("c").sum().alias("total_conversions"),
                                 pl.col("v").sum().alias("total_conversion_value"),
                                 (1 - pl.col("c")).sum().alias("total_null")).sort("path"))
    agg.write_csv(paths)


LOAD = r"""
import json, sys, time
import numpy as np, polars as pl
from centile.attribution.journeys import Journeys
def load(path, c):
    t = pl.read_parquet(path)
    per = pl.read_parquet(path.replace(".parquet", ".journeys.parquet"))
    t0 = time.perf_counter()
    lens = np.bincount(t["journey"].to_numpy(), minlength=per.height)
    off = np.zeros(lens.size + 1, np.int64)
    np.cumsum(lens, out=off[1:])
    conv = per["conv"].to_numpy().astype(np.float64)
    j = Journeys(tuple(f"ch{i:02d}" for i in range(c)), off, t["channel"].to_numpy().astype(np.int32),
                 t["age_days"].to_numpy(), conv, 1.0 - conv, per["value"].to_numpy(),
                 pl.Series("customer_id", np.arange(per.height)))
    return t, j, time.perf_counter() - t0
"""

ENGINE = LOAD + r"""
from centile.attribution import models as md
from centile.attribution.compute import AttributionSettings, attribute
t, j, build = load(sys.argv[1], int(sys.argv[2]))
small = j.take(np.arange(min(j.n, 2000)))
attribute(small, AttributionSettings(markov_orders=(1, 2, 3), shapley=True))  # compile / load kernels
times = {}
t0 = time.perf_counter(); rb = md.rule_based(j, 7.0); times["rule_based"] = time.perf_counter() - t0
t0 = time.perf_counter(); md.shapley(j); times["shapley_full"] = time.perf_counter() - t0
for k in (1, 2, 3):
    t0 = time.perf_counter(); r = md.markov(j, k); times[f"markov_{k}"] = time.perf_counter() - t0
    if k == 1:
        m1 = md.markov_rows(r, j)
t0 = time.perf_counter()
res = attribute(j, AttributionSettings(markov_orders=(1, 2, 3), shapley=True))
total = time.perf_counter() - t0
rb.write_parquet(sys.argv[3]); m1.write_parquet(sys.argv[4])
print(json.dumps({"seconds": total, "build_seconds": build, "model_seconds": times, "touches": int(j.channel.size)}))
"""

POLARS = LOAD + r"""
t, j, _ = load(sys.argv[1], int(sys.argv[2]))
per = pl.read_parquet(sys.argv[1].replace(".parquet", ".journeys.parquet")).with_row_index("journey")
t = t.with_columns(pl.col("journey").cast(pl.UInt32))
t0 = time.perf_counter()
x = (t.join(per.select("journey", "conv"), on="journey").filter(pl.col("conv") > 0)
     .with_columns(n=pl.len().over("journey"), i=pl.int_range(pl.len()).over("journey")))
x = x.with_columns(
    first=(pl.col("i") == 0).cast(pl.Float64), last=(pl.col("i") == pl.col("n") - 1).cast(pl.Float64),
    linear=1.0 / pl.col("n"),
    position=pl.when(pl.col("n") == 1).then(1.0).when(pl.col("n") == 2).then(0.5)
    .when((pl.col("i") == 0) | (pl.col("i") == pl.col("n") - 1)).then(0.4)
    .otherwise(0.2 / (pl.col("n") - 2)))
out = x.group_by("channel").agg(pl.col("first", "last", "linear", "position").mul(pl.col("conv")).sum()).sort("channel")
dt = time.perf_counter() - t0
out.write_parquet(sys.argv[3])
print(json.dumps({"seconds": dt}))
"""

DUCKDB = r"""
import json, sys, time
import duckdb
con = duckdb.connect()
con.execute(f"CREATE TABLE t AS SELECT * FROM read_parquet('{sys.argv[1]}')")
con.execute(f"CREATE TABLE p AS SELECT row_number() OVER () - 1 AS journey, conv FROM "
            f"read_parquet('{sys.argv[1].replace('.parquet', '.journeys.parquet')}')")
t0 = time.perf_counter()
df = con.sql('''
WITH x AS (
  SELECT t.channel, p.conv, count(*) OVER w AS n, row_number() OVER w2 - 1 AS i
  FROM t JOIN p USING (journey) WHERE p.conv > 0
  WINDOW w AS (PARTITION BY t.journey), w2 AS (PARTITION BY t.journey ORDER BY t.age_days DESC))
SELECT channel,
  sum(conv * (i = 0)::DOUBLE) AS first, sum(conv * (i = n - 1)::DOUBLE) AS last, sum(conv / n) AS linear,
  sum(conv * CASE WHEN n = 1 THEN 1.0 WHEN n = 2 THEN 0.5 WHEN i = 0 OR i = n - 1 THEN 0.4
                  ELSE 0.2 / (n - 2) END) AS position
FROM x GROUP BY channel ORDER BY channel''').pl()
dt = time.perf_counter() - t0
df.write_parquet(sys.argv[2])
print(json.dumps({"seconds": dt}))
"""

CA = r"""
import json, sys, time
import pandas as pd
from ChannelAttribution import heuristic_models, markov_model
df = pd.read_csv(sys.argv[1])
t0 = time.perf_counter()
h = heuristic_models(df, "path", "total_conversions", var_value="total_conversion_value", sep=">")
th = time.perf_counter() - t0
t0 = time.perf_counter()
m = markov_model(df, "path", "total_conversions", var_value="total_conversion_value", var_null="total_null",
                 sep=">", verbose=0)
tm = time.perf_counter() - t0
mm = m["result"] if isinstance(m, dict) else m
mm.to_csv(sys.argv[2], index=False)
print(json.dumps({"seconds": th + tm, "heuristic_seconds": th, "markov_seconds": tm}))
"""


def _have_ca() -> bool:
    import importlib.util

    return importlib.util.find_spec("ChannelAttribution") is not None


def main() -> None:
    import polars as pl

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--journeys", type=int, default=10_000_000)
    ap.add_argument("--channels", type=int, default=20)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    DATA.mkdir(exist_ok=True)
    touches = DATA / f"attribution_{a.journeys}_{a.channels}.parquet"
    paths = DATA / f"attribution_{a.journeys}_{a.channels}_paths.csv"
    if not touches.exists() or not paths.exists():
        make_journeys(a.journeys, a.channels, touches, paths)
    tmp = DATA / "attribution_tmp"
    tmp.mkdir(exist_ok=True)
    ca = _have_ca()
    runs: dict[str, list[dict]] = {"engine": [], "polars": [], "duckdb": []} | ({"channelattribution": []} if ca else {})
    for r in range(a.runs):
        runs["engine"].append(run_isolated(ENGINE, str(touches), str(a.channels), str(tmp / "rb.parquet"),
                                           str(tmp / "m1.parquet")))
        runs["polars"].append(run_isolated(POLARS, str(touches), str(a.channels), str(tmp / "pl.parquet")))
        runs["duckdb"].append(run_isolated(DUCKDB, str(touches), str(tmp / "db.parquet")))
        if ca:
            runs["channelattribution"].append(run_isolated(CA, str(paths), str(tmp / "ca.csv")))
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]['seconds']:.2f} s" for k, v in runs.items()), flush=True)
    # the baselines give the engine's numbers
    rb = pl.read_parquet(tmp / "rb.parquet")
    eng = {m: rb.filter(pl.col("model") == m)["conversions"].to_numpy()
           for m in ("first_touch", "last_touch", "linear", "position_based")}
    diffs = {}
    for name in ("pl", "db"):
        b = pl.read_parquet(tmp / f"{name}.parquet").sort("channel")
        diffs[name] = max(float(np.max(np.abs(b[col].to_numpy() - eng[m])))
                          for col, m in (("first", "first_touch"), ("last", "last_touch"), ("linear", "linear"),
                                         ("position", "position_based")))
    doc = {"benchmark": "attribution", "journeys": a.journeys, "channels": a.channels,
           "touches": runs["engine"][0]["touches"], "runs": a.runs, "machine": machine(),
           "engine_all_models_seconds_median": round(median_of(runs["engine"], "seconds"), 2),
           "engine_build_journeys_seconds_median": round(median_of(runs["engine"], "build_seconds"), 2),
           "engine_model_seconds_median": {k: round(float(np.median([r["model_seconds"][k] for r in runs["engine"]])), 3)
                                           for k in runs["engine"][0]["model_seconds"]},
           "engine_peak_rss_mb": max(r["peak_rss_mb"] for r in runs["engine"]),
           "polars_heuristics_seconds_median": round(median_of(runs["polars"], "seconds"), 2),
           "polars_peak_rss_mb": max(r["peak_rss_mb"] for r in runs["polars"]),
           "duckdb_heuristics_seconds_median": round(median_of(runs["duckdb"], "seconds"), 2),
           "duckdb_peak_rss_mb": max(r["peak_rss_mb"] for r in runs["duckdb"]),
           "baseline_max_abs_diff_vs_engine": diffs,
           "runs_detail": runs}
    if ca:
        m1 = pl.read_parquet(tmp / "m1.parquet").sort("channel")
        cam = pl.read_csv(tmp / "ca.csv")
        conv_col = next(c for c in cam.columns if "conversions" in c)
        cam = cam.sort("channel_name")
        doc["channelattribution_seconds_median"] = round(median_of(runs["channelattribution"], "seconds"), 2)
        doc["channelattribution_peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs["channelattribution"])
        doc["channelattribution_markov_vs_exact_max_rel_diff"] = float(
            np.max(np.abs(cam[conv_col].to_numpy() - m1["conversions"].to_numpy()) / m1["conversions"].to_numpy()))
    else:
        doc["channelattribution"] = "not installed (pip install channelattribution builds from source); skipped"
    out = save("attribution", doc)
    print(f"{a.journeys:,} journeys x {a.channels} channels: engine all models "
          f"{doc['engine_all_models_seconds_median']} s (peak {doc['engine_peak_rss_mb']} MB); heuristics Polars "
          f"{doc['polars_heuristics_seconds_median']} s, DuckDB {doc['duckdb_heuristics_seconds_median']} s; "
          f"written {out}")


if __name__ == "__main__":
    main()
