"""``centile ingest`` (batches into a refresh state) and the ``--state`` side of ``centile features``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from centile.cli.app import (
    ConfigOpt,
    JsonOpt,
    MemoryOpt,
    ThreadsOpt,
    _config,
    _errors,
    _print_json,
    _status,
    err_console,
    out_console,
)

StateOpt = Annotated[Path, typer.Option(
    "--state", help="Folder of the refresh state (created by the first ingest; manifest.json, a ledger of "
    "the applied batches, Parquet files per customer-hash partition).")]


def state_config(config: Path | None, **overrides: Any):
    """The config for a refresh state: the file's column mappings, windows and [refresh], or the
    defaults (a state needs no data folder: its batches are named on the command line)."""
    if config is not None:
        return _config(config, None, **overrides)
    from types import MappingProxyType

    from centile.config import Config, as_date

    over = {k: v for k, v in overrides.items() if v is not None}
    if "as_of" in over:
        over["as_of"] = as_date(over["as_of"], "--as-of")
    return Config(tables=MappingProxyType({}), **over)


def print_ingest(console: Any, res: Any) -> None:
    console.print(f"ingest: {len(res.applied)} batch file(s) applied, {len(res.skipped)} already applied "
                  f"(skipped); {res.rows.get('orders', 0):,} order lines and {res.rows.get('email_events', 0):,} "
                  f"e-mail events; watermark {res.watermark} (features at --as-of {res.watermark} or later)")
    for table, reasons in res.rejects.items():
        for reason, n in reasons.items():
            console.print(f"  rejected {table}: {n:,} × {reason}", markup=False, highlight=False)
    if res.rebuilt:
        console.print(f"  late rows: {res.late_rows:,} rows older than the state's day buckets; partition(s) "
                      f"{', '.join(map(str, res.rebuilt))} of {res.partitions} rebuilt from every batch file",
                      markup=False, highlight=False)


def state_features(config: Path | None, state: Path, out: Path, as_of: str | None, full: bool,
                   threads: int | None, memory_limit: str | None, json_: bool) -> None:
    """``centile features --state DIR``: the feature table from a refresh state."""
    from centile.refresh import run_state_features

    with _errors():
        cfg = state_config(config, as_of=as_of, threads=threads, memory_limit=memory_limit)
        with _status("features") as progress:
            res = run_state_features(cfg, state, out, full=full, progress=progress)
    if json_:
        _print_json(res.summary)
        return
    s = res.summary
    out_console.print(f"features{' (--full, from every batch file)' if full else ' from the refresh state'}: "
                      f"{res.features.height:,} customers × {res.features.width} columns, as_of {res.as_of} "
                      f"(watermark {s['watermark']}, {s['batches']} batches)")
    for k, why in res.skipped.items():
        out_console.print(f"  skipped {k}: {why}")
    out_console.print(f"written to {res.out}/")


def register(app: typer.Typer) -> None:
    @app.command()
    def ingest(
        batches: Annotated[list[Path] | None, typer.Argument(
            help="Order-line batch files (Parquet or CSV, one batch per file), mapped by the config's "
            "[tables.orders] columns.", show_default=False)] = None,
        state: StateOpt = Path("centile-state"),
        email_events: Annotated[list[Path] | None, typer.Option(
            "--email-events", help="An e-mail event batch file (repeatable), mapped by [tables.email_events].",
            show_default=False)] = None,
        config: ConfigOpt = None, threads: ThreadsOpt = None, memory_limit: MemoryOpt = None,
        json_: JsonOpt = False,
    ) -> None:
        """Apply batches of order lines (and e-mail events) to a refresh state; then
        `centile features --state DIR` computes the feature table from it, equal to a full run.

        A batch file applied before (same content) is skipped. Rows are validated by the same
        rules as every run (rejected rows are counted). Rows older than the state keeps day
        buckets for (the watermark minus the longest window and [refresh] lateness_days) make
        their customer partitions rebuild from every batch file of the ledger, which must
        still exist. Products and customers tables are not followed: the config used with
        --state must not map them.
        """
        from centile.refresh import ingest as run_ingest

        if not batches and not email_events:
            err_console.print("Error: name at least one batch file: centile ingest --state DIR ORDERS.parquet "
                              "[--email-events EVENTS.parquet]")
            raise typer.Exit(1)
        with _errors():
            cfg = state_config(config, threads=threads, memory_limit=memory_limit)
            with _status("ingest") as progress:
                res = run_ingest(cfg, state, batches or [], email_events or [], progress)
        if json_:
            _print_json(res.summary())
            return
        print_ingest(out_console, res)
