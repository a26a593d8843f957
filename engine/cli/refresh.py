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
    _errors,
    _print_json,
    _state_config,
    _status,
    err_console,
    out_console,
)

StateOpt = Annotated[Path, typer.Option(
    "--state", help="Folder of the refresh state (created by the first ingest; manifest.json, a ledger of "
    "the applied batches, Parquet files per customer-hash partition).")]


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
            cfg = _state_config(config, threads=threads, memory_limit=memory_limit)
            with _status("ingest") as progress:
                res = run_ingest(cfg, state, batches or [], email_events or [], progress)
        if json_:
            _print_json(res.summary())
            return
        print_ingest(out_console, res)
