"""``centile attribution``: rule-based, Markov and Shapley attribution over touchpoint paths."""

from __future__ import annotations

import math
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
    out_console,
)


def print_attribution(console: Any, res: Any, *, limit: int = 40) -> None:
    """Rich table: overall attributed conversions, channels × models; the notes."""
    import polars as pl
    from rich.markup import escape
    from rich.table import Table

    att = res.attribution.filter(pl.col("breakdown") == "overall")
    models = att["model"].unique(maintain_order=True).to_list()
    wide = att.pivot(on="model", index="channel", values="conversions").sort("channel")
    s = res.summary
    t = Table(title=f"Attributed conversions (overall; {s['journeys']:,} journeys, {s['conversions']:,.0f} "
                    f"conversions; every segment in attribution.parquet)", title_justify="left",
              padding=(0, 1), collapse_padding=True)
    t.add_column("channel", justify="left", no_wrap=True)
    for m in models:
        t.add_column(m.replace("_", " "), justify="right", no_wrap=True)
    for r in wide.head(limit).iter_rows(named=True):
        t.add_row(r["channel"], *(f"{r[m]:,.1f}" for m in models))
    console.print(t)
    if res.incrementality is not None:
        inc = res.incrementality
        t2 = Table(title="Attribution vs measured incrementality (uplift x treated)", title_justify="left",
                   padding=(0, 1), collapse_padding=True)
        for c in ("channel", "model", "attributed", "incremental", "95 % CI", "ratio"):
            t2.add_column(c, justify="left" if c in ("channel", "model") else "right", no_wrap=True)

        def f(v: Any) -> str:
            return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:,.1f}"
        for r in inc.iter_rows(named=True):
            t2.add_row(r["channel"], r["model"], f(r["attributed_conversions"]), f(r["incremental_conversions"]),
                       f"{f(r['incremental_ci_low'])} .. {f(r['incremental_ci_high'])}", f(r["ratio"]))
        console.print(t2)
    for note in res.notes:
        console.print(f"Note: {escape(note)}", highlight=False)


def register(app: typer.Typer) -> None:
    @app.command()
    def attribution(
        data: DataOpt = None, config: ConfigOpt = None, out: OutOpt = Path("centile-out"),
        segments: Annotated[Path | None, typer.Option(
            "--segments", help="Parquet/CSV with customer_id and segment columns (e.g. a run's segments.parquet "
            "or clubs.parquet); the columns of [attribution] segments (default club, rfm_segment) break down "
            "every model.", show_default=False)] = None,
        uplift: Annotated[Path | None, typer.Option(
            "--uplift", help="An uplift.parquet (centile uplift / centile run) to put measured incremental "
            "orders beside the attributed conversions of channels named like a contact medium.",
            show_default=False)] = None,
        as_of: AsOfOpt = None, strict: StrictOpt = None, threads: ThreadsOpt = None,
        backend: BackendOpt = None, scheduler: SchedulerOpt = None, wait: WaitOpt = False, wait_timeout: WaitTimeoutOpt = None, json_: JsonOpt = False,
    ) -> None:
        """Attribution over touchpoint paths: first/last touch, linear, time decay, position based,
        simplified and full Shapley, exact Markov removal effects (orders from [attribution] markov_orders).

        Journeys are built from touchpoints + orders (lookback from [attribution] lookback_days) or read
        from the path table in [attribution] paths. Writes attribution.parquet, attribution_removal.parquet,
        attribution_transitions.parquet (and attribution_incrementality.parquet with --uplift).
        """
        from centile.attribution.compute import summary_doc
        from centile.attribution.job import run_attribution

        with _errors(), _lock_wait(wait, wait_timeout):
            cfg = _config(config, data, as_of=as_of, strict=strict, threads=threads, backend=backend,
                          scheduler=scheduler)
            with _status("attribution") as progress:
                res = run_attribution(cfg, out, segments=segments, uplift=uplift, progress=progress)
        if json_:
            _print_json({"out": str(res.out), **summary_doc(res)})
            return
        print_attribution(out_console, res)
        out_console.print(f"written to {res.out}/")
