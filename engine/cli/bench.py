"""``centile bench``: every stage of ``centile run`` timed, with peak memory, against plain DuckDB baselines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from centile.cli.app import (
    DataOpt,
    JsonOpt,
    MemoryOpt,
    ThreadsOpt,
    _errors,
    _print_json,
    err_console,
    out_console,
)


def _fmt(v: float | None, spec: str) -> str:
    return "" if v is None else format(v, spec)


def print_bench(console: Any, doc: dict[str, Any]) -> None:
    """One row per stage (seconds, order lines per second, peak RSS, baseline and ratio), then the
    whole run and ``centile clubs`` end to end against the plain DuckDB script."""
    from rich.markup import escape
    from rich.table import Table

    lines = doc["order_lines"]
    t = Table(title=f"centile bench: {doc['customers'] or 0:,} customers, {lines or 0:,} order lines, "
                    f"median of {doc['runs']} run{'s' if doc['runs'] > 1 else ''}", title_justify="left")
    for c in ("step", "seconds", "CPU s", "lines/s", "peak RSS MB", "baseline s", "ratio"):
        t.add_column(c, justify="left" if c == "step" else "right")
    base, ratios = doc["baselines"], doc["ratios"]
    for name, s in doc["stages"].items():
        if s.get("seconds") is None:
            t.add_row(escape(name), f"{s['status']}: {escape(str(s.get('reason') or ''))}", "", "", "", "", "")
            continue
        b = base["features"]["seconds"] if name == "features" else None
        r = ratios["features"] if name == "features" else None
        t.add_row(escape(name), _fmt(s["seconds"], ".2f"), _fmt(s.get("cpu_s"), ".2f"), _fmt(s["rows_per_s"], ",.0f"),
                  _fmt(s["peak_rss_mb"], ",.0f"), _fmt(b, ".2f"), _fmt(r, ".2f") + ("x" if r else ""))
    run = doc["run"]
    t.add_row("centile run (whole process)", _fmt(run["seconds"], ".2f"), _fmt(run.get("cpu_s"), ".2f"),
              _fmt(run["rows_per_s"], ",.0f"),
              _fmt(run["peak_rss_mb"], ",.0f"), "", "")
    c = doc["centile_clubs"]
    t.add_row("centile clubs, end to end", _fmt(c["seconds"], ".2f"), _fmt(c.get("cpu_s"), ".2f"),
              _fmt(lines / c["seconds"] if lines else None, ",.0f"),
              _fmt(c["peak_rss_mb"], ",.0f"), _fmt(base["clubs"]["seconds"], ".2f"),
              _fmt(ratios["clubs"], ".2f") + ("x" if ratios["clubs"] else ""))
    console.print(t)
    f = base["features"]
    console.print(f"features baseline: order lines {f['orders_s']:.2f} s + e-mail events "
                  f"{_fmt(f['email_events_s'], '.2f') or 'absent'} s (bare GROUP BY customer_id), peak "
                  f"{_fmt(f['peak_rss_mb'], ',.0f')} MB")
    k = base["clubs"]
    console.print(f"clubs baseline: plain DuckDB script {k['seconds']:.2f} s ({k['script_s']:.2f} s inside the "
                  f"script), {k['members']:,} members, peak {_fmt(k['peak_rss_mb'], ',.0f')} MB")
    chk = doc.get("baseline_check")
    if chk:
        differing = {m: n for m, n in chk["customers_differing"].items() if n}
        console.print("baseline check: metrics " + (", ".join(f"{m} differs for {n:,}" for m, n in differing.items())
                                                    or "agree for every customer")
                      + f"; {_fmt(100 * (chk['members_shared_share'] or 0), '.2f')} % of its memberships "
                        "are centile's (the rest differ among ties)")
    rc = doc.get("ratios_cpu") or {}
    if rc.get("features") or rc.get("clubs"):
        console.print(f"in CPU seconds (not counting waits for a core): features {_fmt(rc.get('features'), '.2f')}x "
                      f"the bare scans, centile clubs {_fmt(rc.get('clubs'), '.2f')}x the plain script")
    load = doc["load"]
    console.print(f"load average {load['start'][0]} at the start, {load['end'][0]} at the end; "
                  f"{doc['machine']['cpus']} CPUs; ratios are centile / baseline (lower is faster)")


def register(app: typer.Typer) -> None:
    @app.command()
    def bench(
        run_args: Annotated[list[str] | None, typer.Argument(
            help="Extra options for every centile run, after --, e.g. -- --partitions 8.",
            show_default=False, metavar="[-- RUN_OPTIONS...]")] = None,
        customers: Annotated[int | None, typer.Option(
            "--customers", "-n", help="Generate this many customers (centile generate) into a temporary "
            "folder; or pass --data.", show_default=False)] = None,
        seed: Annotated[int, typer.Option("--seed", "-s", help="Seed of the generated data.")] = 1,
        data: DataOpt = None,
        runs: Annotated[int, typer.Option("--runs", help="Rounds; figures are medians over them.")] = 3,
        threads: ThreadsOpt = None,
        memory_limit: MemoryOpt = None,
        work: Annotated[Path | None, typer.Option(
            "--work", help="Folder for the temporary data and outputs (default: the system's temp "
            "folder); removed afterwards.", show_default=False)] = None,
        warmup: Annotated[bool, typer.Option(
            "--warmup/--no-warmup", help="First run centile warmup untimed, so no run compiles kernels.")] = True,
        out_json: Annotated[Path | None, typer.Option(
            "--out-json", help="Also write the JSON document to this file.", show_default=False)] = None,
        json_: JsonOpt = False,
    ) -> None:
        """Measure every stage of centile run and compare with plain DuckDB, in the same run.

        Each of --runs rounds runs, each in a fresh process so peak memory is per run:
        centile run over every stage (the stage settings of make demo) -- per stage the seconds and
        peak RSS (VmHWM since the stage began) from its manifest.json; the features baseline --
        bare DuckDB GROUP BY customer_id scans of the order lines and of the e-mail events, timed
        apart and summed; centile clubs --data --out end to end; and the clubs baseline -- one plain
        DuckDB script from the same files computing the six default club metrics and assigning
        overlap-free clubs and tiers with ORDER BY ... LIMIT per club. Prints per stage seconds,
        order lines per second and peak RSS, and the ratios centile / baseline for the features
        and clubs (medians; peaks are the largest). Progress goes to stderr.
        """
        from centile.bench import BenchError, BenchOptions, run_bench

        with _errors():
            opts = BenchOptions(data=data, customers=customers, seed=seed, runs=runs, threads=threads,
                                memory_limit=memory_limit, run_args=tuple(run_args or ()), work=work,
                                warmup=warmup)
            done: list[int] = []

            def save(doc: dict[str, Any]) -> None:
                if out_json is not None:
                    out_json.parent.mkdir(parents=True, exist_ok=True)
                    out_json.write_text(json.dumps(doc, indent=2) + "\n")
                    done.append(doc["runs"])

            try:
                doc = run_bench(opts, progress=lambda msg: err_console.print(f"bench: {msg}", highlight=False,
                                                                              markup=False), on_round=save)
            except BenchError as exc:
                if done:  # the rounds that completed are kept
                    raise BenchError(f"{exc}\nThe {done[-1]} completed round(s) are in {out_json}.") from None
                raise
            save(doc)
        if json_:
            _print_json(doc)
            return
        print_bench(out_console, doc)
