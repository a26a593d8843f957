"""``centile steer``: medium affinity, a budget per customer and a certified contact plan."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from centile.cli.app import (
    AsOfOpt,
    BackendOpt,
    ConfigOpt,
    DataOpt,
    JsonOpt,
    OutOpt,
    SchedulerOpt,
    StrictOpt,
    ThreadsOpt,
    WaitOpt,
    WaitTimeoutOpt,
    _config,
    _errors,
    _lock_wait,
    _print_json,
    _status,
    err_console,
    out_console,
)


def print_steering(console: Any, res: Any) -> None:
    """Rich tables: the plan by medium (with capacities and multipliers), the budgets, the
    certificate; then the notes."""
    import polars as pl
    from rich.markup import escape
    from rich.table import Table

    s = res.summary
    t = Table(title=f"Contact plan: {s['contacts']:,} contacts to {s['customers_contacted']:,} of "
                    f"{s['customers']:,} customers over {s['periods']} periods"
                    + (f" of {s['period_days']:g} days" if s["period_days"] else ""),
              title_justify="left")
    for c in ("medium", "contacts", "capacity", "cost", "expected margin", "mu"):
        t.add_column(c, justify="left" if c == "medium" else "right")
    rows = res.summary_table.filter(pl.col("level").is_in(["medium", "total"]))
    for r in rows.iter_rows(named=True):
        t.add_row(escape(r["key"] if r["level"] == "medium" else "total"), f"{r['contacts']:,}",
                  "" if r["capacity"] is None else f"{r['capacity']:,}", f"{r['cost']:,.2f}", f"{r['value']:,.2f}",
                  "" if r["mu"] is None else f"{r['mu']:.4g}")
    console.print(t)
    b = res.budgets["budget"]
    console.print(f"budgets: total {b.sum():,.2f}, median {b.median() or 0:,.2f}, "
                  f"{int((b > 0).sum()):,} customers with a positive budget")
    gb = "unlimited" if s["global_budget"] is None else f"{s['global_budget']:,.2f}"
    console.print(f"global budget {gb}, spent {s['spend']:,.2f}; plan value {s['value']:,.2f}, "
                  f"upper bound {s['bound']:,.2f}, certified gap {s['gap']:.2e} (lambda {s['lambda']:.4g})")
    for name, nu in (s.get("nu") or {}).items():
        cap = res.summary_table.filter((pl.col("level") == "medium_period") & pl.col("key").str.starts_with(f"{name}@"))
        console.print(f"{escape(name)}: capacity {int(cap['capacity'][0]):,} per period, busiest period "
                      f"{int(cap['contacts'].max()):,} contacts, nu up to {max(nu):.4g}")
    for note in res.notes:
        console.print(f"note: {escape(note)}")


def register(app: typer.Typer) -> None:
    @app.command()
    def steer(data: DataOpt = None, config: ConfigOpt = None, out: OutOpt = Path("centile-out"),
              global_budget: Annotated[float | None, typer.Option(
                  "--global-budget", help="Total campaign budget in currency (default from [steering]; "
                  "else unlimited).", show_default=False)] = None,
              as_of: AsOfOpt = None, strict: StrictOpt = None, threads: ThreadsOpt = None,
              backend: BackendOpt = None, scheduler: SchedulerOpt = None,
              wait: WaitOpt = False, wait_timeout: WaitTimeoutOpt = None, json_: JsonOpt = False) -> None:
        """Plan contacts per customer: medium affinity (empirical Bayes), a budget from CLV, and an
        optimised plan under frequency caps (overall and per medium), minimum gap, budgets and
        medium capacities (over the horizon and per period) with a certified optimality gap.

        Writes affinity.parquet, affinity_priors.parquet, budgets.parquet, plan.parquet,
        plan_summary.parquet and steering.json. Media come from [steering.media.<name>], else
        from the contacts table. With [steering] proposals (and budgets) the plan is computed from
        those tables alone: no order data needed.
        """
        from dataclasses import replace

        from centile.steering.job import run_steering
        from centile.steering.settings import steering_settings

        if data is None and config is None:
            err_console.print("Error: pass --data DIR or -c centile.toml")
            raise typer.Exit(1)
        with _errors(), _lock_wait(wait, wait_timeout):
            cfg = _config(config, data, as_of=as_of, strict=strict, threads=threads, backend=backend,
                          scheduler=scheduler)
            st = steering_settings(cfg)
            if global_budget is not None:
                if not global_budget >= 0:
                    from centile.errors import ConfigError

                    raise ConfigError(f"--global-budget {global_budget}: must be >= 0")
                st = replace(st, global_budget=float(global_budget))
            with _status("steer") as progress:
                res = run_steering(cfg, out, settings=st, progress=progress)
        if json_:
            _print_json({"out": str(out), **res.summary, "notes": list(res.notes)})
        else:
            print_steering(out_console, res)
