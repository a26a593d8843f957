"""``centile worker-check``: do the workers of a Dask cluster run this centile?"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from centile.cli.app import JsonOpt, _errors, _print_json, out_console


def print_worker_check(console: Any, check: Any) -> None:
    """Rich table: one row per worker with its version, Python and verdict; then why each mismatch."""
    from rich.markup import escape
    from rich.table import Table

    me = check.client
    t = Table(title=f"Dask workers at {check.scheduler} (client: centile {me['centile']}, Python {me['python']}, "
                    f"sources {me['code'][:12]})")
    for col in ("worker", "centile", "python", "sources", "check"):
        t.add_column(col, overflow="fold")
    for w in check.workers:
        t.add_row(escape(w.address), w.centile or "-", w.python or "-", (w.code or "-")[:12],
                  "[green]ok[/]" if w.ok else "[bold red]mismatch[/]")
    console.print(t)
    bad = [w for w in check.workers if not w.ok]
    for w in bad:  # the reasons as lines, not a table column: they are long and get copied
        console.print(f"{escape(w.address)}: {escape(w.problem or '')}", highlight=False, soft_wrap=True)
    if bad:
        console.print(f"{len(bad)} of {len(check.workers)} workers do not run this centile: install the same "
                      "centile (and Python) on every worker, e.g. the same wheel or container image, and restart "
                      "them.", highlight=False)
    else:
        console.print(f"all {len(check.workers)} workers run this centile", highlight=False)


def register(app: typer.Typer) -> None:
    @app.command("worker-check")
    def worker_check(
        scheduler: Annotated[str | None, typer.Option(
            "--scheduler", envvar="CENTILE_SCHEDULER", help="The Dask scheduler's address, e.g. "
            "tcp://host:8786 (default: $CENTILE_SCHEDULER, else a local cluster of this machine).",
            show_default=False)] = None,
        timeout: Annotated[float, typer.Option(
            "--timeout", min=0, help="Seconds to wait for the first worker to join.")] = 30.0,
        json_: JsonOpt = False,
    ) -> None:
        """Check that every worker of a Dask cluster runs this centile: the same version, the same
        source files (engine, kernels, SQL) and the same Python minor version as this machine.

        Prints one row per worker. Exit code 0 when every worker matches, 1 on a mismatch, when
        the scheduler cannot be reached or when no worker joins within --timeout seconds.
        """
        with _errors():
            from centile.backend.dask import check_cluster

            check = check_cluster(scheduler, timeout)
        if json_:
            _print_json(check.as_dict())
        else:
            print_worker_check(out_console, check)
        if not check.ok:
            raise typer.Exit(1)
