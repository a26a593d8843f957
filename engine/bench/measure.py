"""``centile bench``: every stage of ``centile run`` and plain DuckDB baselines, alternated, in fresh processes.

A round runs, each in its own process (so each peak RSS belongs to one run):

1. ``centile run`` over every stage (the stage settings of ``engine/examples/demo.toml``), into a
   fresh folder; the per-stage ``seconds`` and ``peak_rss_mb`` come from its ``manifest.json``;
2. the features baseline: bare ``GROUP BY customer_id`` scans of the order lines and the e-mail
   events (:func:`centile.bench.baselines.features_scans`);
3. ``centile clubs --data … --out …`` end to end (process wall time);
4. the clubs baseline: one plain DuckDB script from the raw tables to the memberships
   (:func:`centile.bench.baselines.clubs_script`), process wall time.

Figures are medians over the rounds (peaks: the largest); ratios are centile over baseline,
computed from the reported medians.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from centile.bench.child import CENTILE, BenchError, run_child
from centile.errors import ConfigError
from centile.runtime import duckdb_connect

log = logging.getLogger(__name__)

#: options of ``centile run`` that ``centile bench`` sets itself (so they may not follow ``--``)
OWN_RUN_OPTIONS = ("--data", "-d", "--config", "-c", "--out", "-o", "--json", "--previous", "--threads",
                   "--memory-limit", "--force")

BASELINE = "from centile.bench.baselines import main; main()"


@dataclass(frozen=True)
class BenchOptions:
    """What to measure. Either ``data`` (an input folder) or ``customers`` (generated, ``seed``)."""

    data: Path | None = None
    customers: int | None = None
    seed: int = 1
    runs: int = 3
    threads: int | None = None
    memory_limit: str | None = None
    run_args: tuple[str, ...] = ()
    work: Path | None = None
    warmup: bool = True
    check: bool = True
    extra_env: dict[str, str] = field(default_factory=dict)


def check_options(opts: BenchOptions) -> None:
    """Refuse contradictory or unusable options before anything runs (ConfigError, exit 1)."""
    if (opts.data is None) == (opts.customers is None):
        raise ConfigError("pass --customers N (generate data of that size) or --data DIR (use that folder), "
                          "one of the two")
    if opts.customers is not None and opts.customers < 100:
        raise ConfigError(f"--customers {opts.customers}: use at least 100 customers")
    if opts.runs < 1:
        raise ConfigError(f"--runs {opts.runs}: must be at least 1")
    for a in opts.run_args:
        name = a.split("=", 1)[0]
        if name in OWN_RUN_OPTIONS:
            raise ConfigError(f"{name} after --: centile bench sets it itself (use centile bench's own "
                              f"--data/--threads/--memory-limit); after -- go only other centile run options, "
                              "e.g. -- --partitions 8")
    if opts.work is not None and not opts.work.is_dir():
        raise ConfigError(f"--work {opts.work}: not a folder; pass an existing folder for the temporary "
                          "data and outputs")


def _patterns(spec: Any) -> list[str]:
    ext = "csv" if spec.format == "csv" else "parquet"
    return [str(Path(p) / "**" / f"*.{ext}") if os.path.isdir(p) else str(p) for p in spec.paths]


def input_tables(data: Path) -> dict[str, dict[str, Any]]:
    """The input files of ``data`` by table, as centile discovers them (ConfigError when unusable)."""
    from centile.config import load_config

    cfg = load_config(data=data)
    return {name: {"patterns": _patterns(spec), "format": spec.format} for name, spec in cfg.tables.items()}


def count_rows(tables: dict[str, dict[str, Any]], name: str) -> int | None:
    """Rows of one input table (Parquet: from the file footers), None when the table is absent."""
    import duckdb

    from centile.bench.baselines import source_sql

    src = source_sql({"tables": tables}, name)
    if src is None:
        return None
    try:
        return int(duckdb_connect().execute(f"SELECT count(*) FROM {src}").fetchone()[0])
    except duckdb.Error as exc:
        from centile.errors import InputError

        raise InputError(f"{name}: cannot read {tables[name]['patterns'][0]}: {str(exc).splitlines()[0]}") from None


def bench_config(folder: Path, generated: bool) -> Path:
    """The stage settings of ``make demo`` (engine/examples/demo.toml) without its data path, so that
    every stage runs; for a user's folder also without the recommender cutoff (a date of the
    generated data)."""
    import centile

    demo = Path(centile.__file__).resolve().parent / "examples" / "demo.toml"
    drop = ("data =",) if generated else ("data =", "cutoff =")
    body = "\n".join(line for line in demo.read_text().splitlines() if not line.strip().startswith(drop))
    path = folder / "bench.toml"
    path.write_text(body + "\n")
    return path


def _median(values: Sequence[float]) -> float:
    return round(statistics.median(values), 3)


def _cpu(values: Sequence[float | None]) -> float | None:
    """The median CPU seconds over the runs that report them (None where none does: a manifest of
    an older centile, or a platform without ``wait4`` usage)."""
    known = [v for v in values if v is not None]
    return _median(known) if known else None


def _peak(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def agreement(features_path: Path, metrics_path: Path, centile_clubs: Path, plain_clubs: Path,
              clubs: Sequence[Any]) -> dict[str, Any]:
    """How far the clubs baseline agrees with centile: per metric the customers whose values differ
    (beyond 1e-6 relative, or null on one side only), and the share of the baseline's memberships
    (customer, club, tier) that centile has too (they differ only where ties are broken by a
    different hash)."""

    def lit(p: Path) -> str:
        return "'" + str(p).replace("'", "''") + "'"

    con = duckdb_connect()
    cols = sorted({c for club in clubs for c in (club.metric, *club.tie_break)})
    con.execute(f"CREATE VIEW a AS SELECT * FROM read_parquet({lit(features_path)})")
    con.execute(f"CREATE VIEW b AS SELECT * FROM read_parquet({lit(metrics_path)})")
    have = {r[0] for r in con.execute("DESCRIBE b").fetchall()} & {r[0] for r in con.execute("DESCRIBE a").fetchall()}
    cols = [c for c in cols if c in have]
    diff = ", ".join(
        f"count(*) FILTER (WHERE (a.{c} IS NULL) <> (b.{c} IS NULL) OR abs(a.{c} - b.{c}) > "
        f"1e-6 * greatest(1, abs(a.{c}))) AS {c}" for c in cols)
    row = con.execute(f"SELECT count(*) FILTER (WHERE a.customer_id IS NULL OR b.customer_id IS NULL) AS only_one"
                      f"{', ' + diff if diff else ''} FROM a FULL JOIN b USING (customer_id)").fetchone()
    members = con.execute(
        "SELECT count(*), count(c.customer_id) FROM read_parquet($p) b "
        "LEFT JOIN (SELECT customer_id, club, CAST(tier AS INTEGER) AS tier FROM read_parquet($c)) c "
        "USING (customer_id, club, tier)", {"p": str(plain_clubs), "c": str(centile_clubs / "clubs.parquet")}).fetchone()
    return {"customers_in_one_only": int(row[0]),
            "customers_differing": {c: int(v) for c, v in zip(cols, row[1:], strict=True)},
            "baseline_members": int(members[0]),
            "members_shared_share": round(members[1] / members[0], 4) if members[0] else None}


def run_bench(opts: BenchOptions, progress: Callable[[str], None] | None = None,
              on_round: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Measure every stage of ``centile run`` and the two baselines; returns the JSON document.

    ``on_round`` receives the document of the rounds completed so far after each round (so a
    later round that fails, e.g. killed for memory on a shared machine, loses only itself).
    Raises ConfigError / InputError for bad options or an unusable ``--data`` folder, and
    :class:`~centile.bench.child.BenchError` when a measured step fails.
    """
    say = progress or (lambda msg: None)
    check_options(opts)
    if opts.data is not None:
        data = Path(opts.data)
        tables = input_tables(data)
    t_start = time.perf_counter()
    load_start = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="centile-bench-", dir=opts.work))
    env = {**opts.extra_env, **({"CENTILE_MEMORY_LIMIT": opts.memory_limit} if opts.memory_limit else {})}
    common = [*(["--threads", str(opts.threads)] if opts.threads else [])]
    try:
        generated = None
        if opts.data is None:
            data = tmp / "data"
            say(f"generating {opts.customers:,} customers (seed {opts.seed}) into {data}")
            g = run_child(CENTILE, ["generate", "--customers", str(opts.customers), "--seed", str(opts.seed),
                                    "--out", str(data), "--json"], what="centile generate", env=env)
            generated = {"customers": opts.customers, "seed": opts.seed, "seconds": round(g.wall_s, 3)}
            tables = input_tables(data)
        lines = count_rows(tables, "orders")
        events = count_rows(tables, "email_events")
        toml = bench_config(tmp, generated is not None)
        warmup = None
        if opts.warmup:
            say("warming up: centile warmup (compiles the numba kernels into their cache)")
            warmup = round(run_child(CENTILE, ["warmup", *common], what="centile warmup", env=env).wall_s, 3)
        base_spec = {"tables": tables, "threads": opts.threads, "memory_limit": opts.memory_limit}
        runs: list[dict[str, Any]] = []
        feats: list[dict[str, Any]] = []
        clubs: list[dict[str, Any]] = []
        plain: list[dict[str, Any]] = []
        check = None
        for i in range(opts.runs):
            r = f"round {i + 1}/{opts.runs}"
            out = tmp / f"run-{i}"
            say(f"{r}: centile run")
            c = run_child(CENTILE, ["run", "-c", str(toml), "--data", str(data), "--out", str(out), *common,
                                    *(["--memory-limit", opts.memory_limit] if opts.memory_limit else []),
                                    *opts.run_args], what="centile run", env=env)
            manifest = json.loads((out / "manifest.json").read_text())
            runs.append({"wall_s": c.wall_s, "cpu_s": c.cpu_s, "peak_rss_mb": c.peak_rss_mb,
                         "stages": manifest["stages"],
                         "customers": (manifest.get("rows") or {}).get("features")})
            shutil.rmtree(out, ignore_errors=True)
            peak = _peak([c.peak_rss_mb, *(st.get("peak_rss_mb") for st in manifest["stages"].values())])
            say(f"{r}: centile run {c.wall_s:.1f} s, peak {peak} MB")
            f = run_child(BASELINE, ["features", json.dumps(base_spec)], what="the features baseline", env=env)
            feats.append({**json.loads(f.stdout.strip().splitlines()[-1]), "peak_rss_mb": f.peak_rss_mb})
            say(f"{r}: features baseline {feats[-1]['seconds']:.2f} s (centile features stage "
                f"{runs[-1]['stages'].get('features', {}).get('seconds')} s)")
            cout = tmp / f"clubs-{i}"
            k = run_child(CENTILE, ["clubs", "--data", str(data), "--out", str(cout), *common],
                          what="centile clubs", env=env)
            clubs.append({"wall_s": k.wall_s, "cpu_s": k.cpu_s, "peak_rss_mb": k.peak_rss_mb})
            say(f"{r}: centile clubs {k.wall_s:.1f} s")
            pout = tmp / f"plain-{i}.parquet"
            spec = {**base_spec, "out": str(pout), "clubs": club_specs(),
                    "metrics_out": str(tmp / "plain-metrics.parquet") if opts.check and i == 0 else None}
            p = run_child(BASELINE, ["clubs", json.dumps(spec)], what="the clubs baseline", env=env)
            plain.append({**json.loads(p.stdout.strip().splitlines()[-1]), "wall_s": p.wall_s,
                          "process_cpu_s": p.cpu_s, "peak_rss_mb": p.peak_rss_mb})
            say(f"{r}: plain DuckDB clubs script {p.wall_s:.1f} s")
            if spec["metrics_out"]:
                from centile.config import DEFAULT_CLUBS

                check = agreement(cout / "features.parquet", Path(spec["metrics_out"]), cout, pout, DEFAULT_CLUBS)
            shutil.rmtree(cout, ignore_errors=True)
            pout.unlink(missing_ok=True)
            if on_round is not None and i + 1 < opts.runs:
                on_round(_document(opts, data, generated, lines, events, warmup, runs, feats, clubs, plain, check,
                                   load_start, time.perf_counter() - t_start))
        return _document(opts, data, generated, lines, events, warmup, runs, feats, clubs, plain, check,
                         load_start, time.perf_counter() - t_start)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def club_specs() -> list[dict[str, Any]]:
    from centile.config import DEFAULT_CLUBS

    return [{"name": c.name, "metric": c.metric, "direction": c.direction, "eligible": c.eligible,
             "tie_break": list(c.tie_break), "shares": list(c.shares)} for c in DEFAULT_CLUBS]


def _document(opts: BenchOptions, data: Path, generated: dict[str, Any] | None, lines: int | None,
              events: int | None, warmup: float | None, runs: list[dict[str, Any]], feats: list[dict[str, Any]],
              clubs: list[dict[str, Any]], plain: list[dict[str, Any]], check: dict[str, Any] | None,
              load_start: tuple[float, float, float], seconds: float) -> dict[str, Any]:
    stages: dict[str, dict[str, Any]] = {}
    for name in runs[0]["stages"]:
        recs = [r["stages"].get(name) or {} for r in runs]
        ran = [x for x in recs if x.get("status") in ("ran", "reused") and x.get("seconds") is not None]
        if not ran:
            stages[name] = {"status": recs[0].get("status", "absent"), "reason": recs[0].get("reason")}
            continue
        secs = _median([x["seconds"] for x in ran])
        stages[name] = {"status": ran[0]["status"], "seconds": secs,
                        "cpu_s": _cpu([x.get("cpu_s") for x in ran]),
                        "rows_per_s": round(lines / secs) if lines and secs else None,
                        "peak_rss_mb": _peak([x.get("peak_rss_mb") for x in ran]),
                        "all_seconds": [x["seconds"] for x in ran]}
    f_sec = _median([f["seconds"] for f in feats])
    emails = [f["email_events_s"] for f in feats if f["email_events_s"] is not None]
    baselines = {
        "features": {"what": "bare GROUP BY customer_id scans of the order lines and of the e-mail events, "
                             "timed apart and summed",
                     "seconds": f_sec, "cpu_s": _cpu([f.get("cpu_s") for f in feats]),
                     "orders_s": _median([f["orders_s"] for f in feats]),
                     "email_events_s": _median(emails) if emails else None,
                     "all_seconds": [round(f["seconds"], 3) for f in feats],
                     "peak_rss_mb": _peak([f["peak_rss_mb"] for f in feats])},
        "clubs": {"what": "one plain DuckDB script from the order lines, products and e-mail events: the six "
                          "default club metrics, then ORDER BY ... LIMIT per club and tier over the customers "
                          "not yet taken; process wall time",
                  "seconds": _median([p["wall_s"] for p in plain]),
                  "cpu_s": _cpu([p.get("process_cpu_s") for p in plain]),
                  "script_s": _median([p["seconds"] for p in plain]),
                  "all_seconds": [round(p["wall_s"], 3) for p in plain],
                  "peak_rss_mb": _peak([p["peak_rss_mb"] for p in plain]),
                  "members": plain[0]["members"]},
    }
    centile_clubs = {"what": "centile clubs --data DIR --out DIR, process wall time",
                     "seconds": _median([c["wall_s"] for c in clubs]),
                     "cpu_s": _cpu([c.get("cpu_s") for c in clubs]),
                     "all_seconds": [round(c["wall_s"], 3) for c in clubs],
                     "peak_rss_mb": _peak([c["peak_rss_mb"] for c in clubs])}
    run_s = _median([r["wall_s"] for r in runs])
    # the runner resets VmHWM at each stage start, so the child's VmHWM at exit covers only the
    # last stage: the whole process's peak is the largest of it and every stage's peak
    run_peak = _peak([r["peak_rss_mb"] for r in runs]
                     + [s.get("peak_rss_mb") for r in runs for s in r["stages"].values()])
    return {
        "benchmark": "centile bench",
        "data": str(opts.data) if opts.data is not None else None,
        "generated": generated,
        "customers": runs[0]["customers"],
        "order_lines": lines,
        "email_events": events,
        "runs": len(runs),
        "runs_requested": opts.runs,
        "threads": opts.threads,
        "memory_limit": opts.memory_limit,
        "run_options": list(opts.run_args),
        "warmup_s": warmup,
        "run": {"seconds": run_s, "cpu_s": _cpu([r.get("cpu_s") for r in runs]),
                "rows_per_s": round(lines / run_s) if lines and run_s else None,
                "peak_rss_mb": run_peak, "all_seconds": [round(r["wall_s"], 3) for r in runs]},
        "stages": stages,
        "centile_clubs": centile_clubs,
        "baselines": baselines,
        "notes": [
            "stage figures come from centile run's manifest.json: seconds and peak RSS (VmHWM since the "
            "stage began; the whole run's peak is the largest of these and of the process's VmHWM at exit, "
            "which the runner resets per stage); the features stage also opens and validates every input table the run reads "
            "(contacts and touchpoints too, which the feature job alone does not read)",
            "rows_per_s: input order lines per second",
            "ratios: centile / baseline from the medians shown (lower is faster)"],
        "ratios": {"features": _ratio(stages.get("features", {}).get("seconds"), f_sec),
                   "clubs": _ratio(centile_clubs["seconds"], baselines["clubs"]["seconds"])},
        "ratios_cpu": {"features": _ratio(stages.get("features", {}).get("cpu_s"), baselines["features"]["cpu_s"]),
                       "clubs": _ratio(centile_clubs["cpu_s"], baselines["clubs"]["cpu_s"])},
        "baseline_check": check,
        "load": {"start": [round(x, 2) for x in load_start], "end": [round(x, 2) for x in os.getloadavg()]},
        "seconds": round(seconds, 1),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
    }


__all__ = ["BenchError", "BenchOptions", "run_bench"]
