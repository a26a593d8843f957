"""The ``centile`` command line: each command parses options, loads the config,
calls one engine function and renders a summary.

Imports of the engine (DuckDB, Polars, numba) happen inside the commands so
``centile --help`` answers at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from centile import __version__

app = typer.Typer(
    name="centile",
    help="centile: rank every customer on hard criteria, form overlap-free 1 % clubs and "
         "measure what campaigns changed, from order histories in Parquet or CSV.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
)
# piped output (CI logs, files) gets a readable fixed width instead of rich's 80 columns
_width = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 120
out_console = Console(width=_width)
err_console = Console(stderr=True, width=_width)
log = logging.getLogger("centile")

# ---------------------------------------------------------------------------
# shared options

DataOpt = Annotated[str | None, typer.Option(
    "--data", "-d", help="Folder holding the input tables by name (orders*, products*, email_events*, "
    "contacts*, customers*, touchpoints*; Parquet files, folders or CSV); a path or an fsspec URL "
    "(s3://bucket/data, gs://…, file:///…).", show_default=False)]
ConfigOpt = Annotated[Path | None, typer.Option(
    "--config", "-c", help="TOML config mapping paths and column names (see README).", show_default=False)]
AsOfOpt = Annotated[str | None, typer.Option(
    "--as-of", help="Analysis date YYYY-MM-DD; windows end the day before. Default: the day after "
    "the newest order.", show_default=False)]
StrictOpt = Annotated[bool | None, typer.Option(
    "--strict/--lenient", help="--strict fails on any invalid row; --lenient (default) sets invalid "
    "rows aside into rejects.parquet.", show_default=False)]
ThreadsOpt = Annotated[int | None, typer.Option(
    "--threads", help="Worker threads for DuckDB, Polars and numba (default: all cores).", show_default=False)]
MemoryOpt = Annotated[str | None, typer.Option(
    "--memory-limit", help="Memory budget of the run, e.g. 8GB: DuckDB gets half and spills to disk beyond "
    "it; customer partitions are sized so the Python-side work fits the rest.",
    show_default=False)]
PartitionsOpt = Annotated[int | None, typer.Option(
    "--partitions", min=1, max=4096, help="Process the customers in this many customer-hash partitions, one at "
    "a time (default: chosen from the order lines and --memory-limit). Results do not depend on it.",
    show_default=False)]
BackendOpt = Annotated[str | None, typer.Option(
    "--backend", help="Where per-customer partitions run: duckdb (this process, the default) or dask (the "
    "workers of a Dask cluster; pip install 'centile[dask]'). Results are the same bytes.",
    show_default=False)]
SchedulerOpt = Annotated[str | None, typer.Option(
    "--scheduler", help="With --backend dask: the scheduler's address, e.g. tcp://host:8786 (default: a "
    "local cluster started for the run). Workers must see the inputs and --out (or [backend] scratch) under the same paths.",
    show_default=False)]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output folder (created; files replaced atomically).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")]
WaitOpt = Annotated[bool, typer.Option(
    "--wait", help="When another centile run is writing to --out, wait until it is done (a message on "
    "stderr) instead of failing at once with exit code 1.")]
WaitTimeoutOpt = Annotated[float | None, typer.Option(
    "--wait-timeout", min=0, help="Wait at most this many seconds for --out (implies --wait); then exit 1.",
    show_default=False)]


def _version(value: bool) -> None:
    if value:
        out_console.print(f"centile {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More log output (-vv: debug).")] = 0,
) -> None:
    level = logging.WARNING - 10 * min(verbose, 2)
    from rich.logging import RichHandler

    # the console shows WARNING and up (-v: INFO, -vv: DEBUG); a run's log file takes INFO on its own
    handler = RichHandler(console=err_console, show_path=False, show_time=False, level=level)
    logging.basicConfig(level=level, format="%(message)s", force=True, handlers=[handler])


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """Turn the library's typed errors into ``Error: ...`` on stderr and an exit code."""
    from centile.errors import CentileError

    try:
        yield
    except CentileError as exc:
        from rich.markup import escape

        err_console.print(f"[bold red]Error:[/] {escape(str(exc))}", highlight=False, markup=True, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except (typer.Exit, typer.Abort):
        raise
    except BaseException as exc:
        if _interrupted(exc):
            err_console.print("Interrupted; nothing was written.")
            raise typer.Exit(130) from None
        if not isinstance(exc, Exception):  # SystemExit, GeneratorExit
            raise
        why = _environment_error(exc)
        if why:  # the disk, the file system or an unreadable file: not a bug, exit code 1
            from rich.markup import escape

            err_console.print(f"[bold red]Error:[/] {escape(why)}", highlight=False, markup=True, soft_wrap=True)
            raise typer.Exit(1) from None
        # a bug, not a user error: exit code 2, traceback only with -vv
        log.debug("internal error", exc_info=True)
        from rich.markup import escape

        err_console.print(f"[bold red]Internal error:[/] {type(exc).__name__}: {escape(str(exc))}\n"
                          "This is a bug in centile, not in your data; rerun with -vv for the traceback "
                          "and report it. Nothing was written.", highlight=False, markup=True, soft_wrap=True)
        raise typer.Exit(2) from None


def _interrupted(exc: BaseException) -> bool:
    """Ctrl-C or SIGTERM: ``KeyboardInterrupt``, or the error a library reports it as. DuckDB
    catches SIGINT during a query and raises ``InterruptException`` (``RuntimeError: Query
    interrupted`` from a relation's ``.pl()``); Polars panics when it reaches a Python callback."""
    name = type(exc).__name__
    return (isinstance(exc, KeyboardInterrupt)
            or (name == "InterruptException" and type(exc).__module__.startswith(("duckdb", "_duckdb")))
            or (type(exc) is RuntimeError and str(exc).startswith("Query interrupted"))
            # the interrupt reached Python code that Polars called back (a panic in its Rust code)
            or (name == "PanicException" and "KeyboardInterrupt" in str(exc)))


def _environment_error(exc: BaseException) -> str | None:
    """A message for errors of the machine or the files rather than of centile (full disk,
    read-only folder, missing permission, a file DuckDB cannot read), else None."""
    import errno

    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES,
                                                   errno.EPERM, errno.EIO, errno.ENOENT):
        where = f" ({exc.filename})" if exc.filename else ""
        return (f"{exc.strerror}{where}; free disk space, fix the permissions or choose another --out folder. "
                "Earlier results were left untouched.")
    if type(exc).__module__.startswith(("duckdb", "_duckdb")) and type(exc).__name__ in (
            "IOException", "PermissionException"):
        return (f"{str(exc).splitlines()[0]}; check that the input files are complete and readable "
                "(a truncated or corrupted Parquet file cannot be read) and that the disk has space. "
                "Earlier results were left untouched.")
    if type(exc).__module__.startswith(("duckdb", "_duckdb")) and type(exc).__name__ == "OutOfMemoryException":
        return (f"{str(exc).splitlines()[0]}: the work did not fit the memory budget. Raise --memory-limit "
                "(DuckDB gets half of it), or give more --partitions so each holds fewer customers, or "
                "lower --threads. Earlier results were left untouched.")
    return None


@contextlib.contextmanager
def _status(label: str) -> Iterator[Callable[[str], None]]:
    """A spinner on stderr whose text the engine updates through a callback."""
    t0 = time.perf_counter()
    if not err_console.is_terminal:
        yield lambda msg: log.info(msg)
        return
    with err_console.status(label) as status:
        yield lambda msg: status.update(f"{msg} ({time.perf_counter() - t0:.0f} s)")


@contextlib.contextmanager
def _lock_wait(wait: bool, timeout: float | None) -> Iterator[None]:
    """With --wait / --wait-timeout, a locked --out folder is waited for (told on stderr)."""
    if not wait and timeout is None:
        yield
        return
    from centile.io.outputs import waiting_for_lock

    def notify(msg: str) -> None:
        err_console.print(msg, highlight=False, markup=False, soft_wrap=True)

    with waiting_for_lock(timeout, notify):
        yield


def _config(config: Path | None, data: str | Path | None, **overrides: Any):
    from centile.config import load_config

    return load_config(config, data=data, **overrides)


def _print_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")


# ---------------------------------------------------------------------------
# commands

@app.command()
def generate(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the generated tables to.")] = Path("demo/data"),
    customers: Annotated[int, typer.Option("--customers", "-n", min=1, help="Number of customers.")] = 50_000,
    seed: Annotated[int, typer.Option("--seed", "-s", help="Random seed; the same seed gives the same data.")] = 0,
    wait: WaitOpt = False, wait_timeout: WaitTimeoutOpt = None, json_: JsonOpt = False,
) -> None:
    """Generate a synthetic order history with planted truth (every table of the data contract).

    Purchases follow a BG/NBD process, spend a Gamma-Gamma model; returns, e-mail
    engagement, price-insensitive buyers and campaign effects are planted too.
    The truth (parameters and per-customer latent values) is written to OUT/truth/.
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from centile.synth.generate import generate as run_generate

    with _errors(), _lock_wait(wait, wait_timeout), Progress(TextColumn("generating"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,} customers"),
                             TimeElapsedColumn(), console=err_console, transient=True) as bar:
        task = bar.add_task("generate", total=customers)
        res = run_generate(out, customers, seed, progress=lambda done, total: bar.update(task, completed=done))
    if json_:
        _print_json({"out": str(res.out), "rows": res.rows, "seconds": res.seconds})
        return
    rows = ", ".join(f"{k} {v:,}" for k, v in res.rows.items())
    out_console.print(f"Wrote {out} in {res.seconds:.1f} s: {rows}")


@app.command()
def validate(data: DataOpt = None, config: ConfigOpt = None, as_of: AsOfOpt = None, strict: StrictOpt = None,
             threads: ThreadsOpt = None, json_: JsonOpt = False) -> None:
    """Check the inputs against the data contract: row counts, date range, customers,
    rejects by reason and which features are available. Writes nothing.

    Exit code 0 when the inputs are usable, 1 when they are not (or --strict finds invalid rows).
    """
    from centile.backend.session import open_session
    from centile.features.compute import availability, session_summary

    with _errors():
        cfg = _config(config, data, as_of=as_of, strict=strict, threads=threads)
        with _status("validating") as progress, open_session(cfg, progress) as s:
            summary = session_summary(s)
            avail, skipped = availability(s)
    summary["features_available"] = avail
    summary["features_skipped"] = skipped
    if json_:
        _print_json(summary)
        return
    from centile.cli.render import print_validation

    print_validation(out_console, summary)


@app.command()
def features(data: DataOpt = None, config: ConfigOpt = None, out: OutOpt = Path("centile-out"),
             as_of: AsOfOpt = None, strict: StrictOpt = None, threads: ThreadsOpt = None,
             memory_limit: MemoryOpt = None, partitions: PartitionsOpt = None, backend: BackendOpt = None, scheduler: SchedulerOpt = None,
             wait: WaitOpt = False, wait_timeout: WaitTimeoutOpt = None, json_: JsonOpt = False,
             state: Annotated[Path | None, typer.Option(
                 "--state", help="Compute from a refresh state (see `centile ingest`) instead of the inputs: "
                 "as_of at or after its watermark, equal to a full run over every applied batch.",
                 show_default=False)] = None,
             full: Annotated[bool, typer.Option(
                 "--full", help="With --state: recompute from every batch file of the state's ledger "
                 "(any --as-of).")] = False) -> None:
    """Compute the customer feature table (features.parquet, rejects.parquet, manifest.json)."""
    if state is not None:
        _state_features(config, state, out, as_of, full, threads, memory_limit, json_)
        return
    from centile.features.compute import run_features

    with _errors(), _lock_wait(wait, wait_timeout):
        cfg = _config(config, data, as_of=as_of, strict=strict, threads=threads, memory_limit=memory_limit,
                      partitions=partitions, backend=backend, scheduler=scheduler)
        with _status("features") as progress:
            res = run_features(cfg, out, progress)
    if json_:
        _print_json(res.summary)
        return
    from centile.cli.render import print_features

    print_features(out_console, res)
    out_console.print(f"written to {res.out}/")


def _state_config(config: Path | None, **overrides: Any):
    """The config for a refresh state: the file's column mappings, windows and [refresh], or the
    defaults (a state needs no data folder: its batches are named on the command line)."""
    if config is not None:
        return _config(config, None, **overrides)
    from types import MappingProxyType

    from centile.config import BackendSpec, Config, as_date

    over = {k: v for k, v in overrides.items() if v is not None}
    if "as_of" in over:
        over["as_of"] = as_date(over["as_of"], "--as-of")
    if "backend" in over or "scheduler" in over:
        scheduler = over.pop("scheduler", None)
        over["backend"] = BackendSpec(over.get("backend") or ("dask" if scheduler else "duckdb"), scheduler)
    return Config(tables=MappingProxyType({}), **over)



def _state_features(config: Path | None, state: Path, out: Path, as_of: str | None, full: bool,
                   threads: int | None, memory_limit: str | None, json_: bool) -> None:
    """``centile features --state DIR``: the feature table from a refresh state."""
    from centile.refresh import run_state_features

    with _errors():
        cfg = _state_config(config, as_of=as_of, threads=threads, memory_limit=memory_limit)
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



StrategyOpt = Annotated[str | None, typer.Option(
    "--strategy", help="Overlap removal: 'priority' (clubs in config order take their best free "
    "customers) or 'best-rank' (each customer goes where their percentile is best; stable matching).",
    show_default=False)]
PreviousOpt = Annotated[Path | None, typer.Option(
    "--previous", help="Output folder of an earlier run: report per club who stayed, joined and left.",
    show_default=False)]


def _clubs_job(data, config, out, as_of, strict, threads, strategy, previous, features, json_,
               memory_limit=None, partitions=None, wait=False, wait_timeout=None, backend=None,
               scheduler=None) -> None:
    from centile.clubs.job import feature_columns, run_clubs

    with _errors(), _lock_wait(wait, wait_timeout):
        # club metrics may use every column of a feature table built elsewhere
        columns = feature_columns(features) if features is not None else None
        cfg = _config(config, data, as_of=as_of, strict=strict, threads=threads, strategy=strategy,
                      feature_columns=columns, memory_limit=memory_limit, partitions=partitions,
                      backend=backend, scheduler=scheduler)
        with _status("clubs") as progress:
            res = run_clubs(cfg, out, features=features, strategy=strategy, previous=previous, progress=progress)
    if json_:
        from centile.clubs.compute import clubs_summary_doc

        _print_json({"out": str(res.out), **clubs_summary_doc(res.clubs)})
        return
    from centile.cli.render import print_clubs, print_features

    if res.features is not None:
        print_features(out_console, res.features)
    print_clubs(out_console, res.clubs)
    out_console.print(f"written to {res.out}/")


@app.command()
def clubs(data: DataOpt = None, config: ConfigOpt = None, out: OutOpt = Path("centile-out"),
          strategy: StrategyOpt = None, previous: PreviousOpt = None,
          features: Annotated[Path | None, typer.Option(
              "--features", help="Use this feature table (features.parquet) instead of computing it "
              "from the inputs.", show_default=False)] = None,
          as_of: AsOfOpt = None, strict: StrictOpt = None, threads: ThreadsOpt = None,
          memory_limit: MemoryOpt = None, partitions: PartitionsOpt = None, backend: BackendOpt = None, scheduler: SchedulerOpt = None,
          wait: WaitOpt = False, wait_timeout: WaitTimeoutOpt = None, json_: JsonOpt = False) -> None:
    """Rank every customer on each club metric and form overlap-free 1 % clubs with tiers.

    Writes ranks.parquet, clubs.parquet, club_summary.parquet (and club_stability.parquet
    with --previous), plus features.parquet when the features are computed here.
    """
    if features is None and data is None and config is None:
        err_console.print("Error: pass --data DIR or -c centile.toml (or --features FILE)")
        raise typer.Exit(2)
    _clubs_job(data, config, out, as_of, strict, threads, strategy, previous, features, json_,
               memory_limit, partitions, wait, wait_timeout, backend, scheduler)


@app.command()
def run(data: DataOpt = None, config: ConfigOpt = None,
        out: Annotated[str, typer.Option("--out", "-o", help="Output folder (replaced whole when the run succeeds), "
                                         "or an fsspec URL (s3://bucket/prefix: the run goes to a new "
                                         "<prefix>/runs/<id>/, then <prefix>/LATEST names it).")] = "centile-out",
        strategy: StrategyOpt = None, previous: PreviousOpt = None, as_of: AsOfOpt = None,
        strict: StrictOpt = None, threads: ThreadsOpt = None, memory_limit: MemoryOpt = None,
        partitions: PartitionsOpt = None, backend: BackendOpt = None, scheduler: SchedulerOpt = None,
        force: Annotated[bool, typer.Option("--force", help="Recompute every stage, even those whose "
                                            "inputs and config did not change since the run in --out.")] = False,
        wait: WaitOpt = False, wait_timeout: WaitTimeoutOpt = None, json_: JsonOpt = False,
        state: Annotated[Path | None, typer.Option(
            "--state", help="Run over a refresh state (see `centile ingest`): every stage computes from the "
            "state, the history is not read again (its batch files must still exist); as_of defaults to its "
            "watermark.", show_default=False)] = None,
        keep_runs: Annotated[int, typer.Option(
            "--keep-runs", help="With an output URL: after publishing, remove the runs under <url>/runs/ other "
            "than the newest N (0: keep all).", min=0)] = 0) -> None:
    """Run every stage the inputs allow (features → CLV → ranks and clubs → segments → CLV per
    club and segment → uplift) and write report.html, manifest.json and centile.log into one
    output folder. Configure the stages in the config's [clubs], [segments], [clv], [uplift]
    and [report] sections (see README).

    The folder is replaced whole only when every stage succeeded: a failed or killed run
    leaves the previous results untouched. Stages whose inputs and config did not change
    since the run already in --out are reused, not recomputed (--force recomputes).
    Exit codes: 0 success, 1 user or data error, 2 internal error, 130 interrupted
    (Ctrl-C, or SIGTERM from a job scheduler).
    """
    from centile.run import run_pipeline

    if data is None and config is None and state is None:
        err_console.print("Error: pass --data DIR or -c centile.toml (or --state DIR)")
        raise typer.Exit(1)
    with _errors(), _lock_wait(wait, wait_timeout):
        over = dict(as_of=as_of, strict=strict, threads=threads, strategy=strategy, memory_limit=memory_limit,
                    partitions=partitions, backend=backend, scheduler=scheduler)
        cfg = _config(config, data, **over) if data is not None or state is None else _state_config(config, **over)
        with _stage_progress() as progress:
            res = run_pipeline(cfg, out, force=force, previous=previous, progress=progress, state=state,
                               keep_runs=keep_runs)
    if json_:
        _print_json(res.as_dict())
        return
    from centile.cli.render import print_run

    print_run(out_console, res)


@contextlib.contextmanager
def _stage_progress() -> Iterator[Callable[[str], None]]:
    """Per-stage progress lines on stderr: a spinner on a terminal, log lines otherwise."""
    t0 = time.perf_counter()
    if not err_console.is_terminal:
        yield lambda msg: err_console.print(f"[{time.perf_counter() - t0:6.1f} s] {msg}", highlight=False,
                                            markup=False)
        return
    with err_console.status("starting") as status:
        last = [""]

        def update(msg: str) -> None:
            stage = msg.split(":", 1)[0]
            if stage != last[0] and last[0]:
                err_console.print(f"[green]✓[/] {last[0]}", highlight=False)
            last[0] = stage
            status.update(f"{msg} ({time.perf_counter() - t0:.0f} s)")
        yield update


@app.command()
def report(
    results: Annotated[str, typer.Option("--results", "-r", help="Output folder of a run, or the output URL "
                                         "of centile run (the run its LATEST names).")] = "centile-out",
    config: ConfigOpt = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Where to write the HTML (default: "
                                             "RESULTS/report.html; for a URL, report.html here).",
                                             show_default=False)] = None,
) -> None:
    """Render report.html (self-contained, works offline) over the outputs of a run."""
    from centile import urls
    from centile.report.page import write_report

    with _errors():
        cfg = _config(config, None) if config else None
        if urls.is_url(results):  # the run's files, downloaded; the report is written here
            import tempfile

            from centile.io.outputs import download_run

            with tempfile.TemporaryDirectory(prefix="centile-report-") as tmp:
                path = write_report(download_run(results, Path(tmp)), out or Path("report.html"), cfg)
        else:
            folder = Path(results)
            if not (folder / "manifest.json").exists():
                from centile.errors import InputError

                raise InputError(f"--results {results}: no manifest.json there; pass the --out folder of a centile "
                                 "run")
            path = write_report(folder, out or folder / "report.html", cfg)
    out_console.print(f"report written to {path}")


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="A DuckDB SELECT over the input tables (orders, products, "
                                              "email_events, contacts, customers, touchpoints, rejects) "
                                              "and the outputs in --results (features, clubs, ...).")],
    data: DataOpt = None, config: ConfigOpt = None, as_of: AsOfOpt = None,
    results: Annotated[str, typer.Option("--results", "-r", help="Output folder of an earlier run (or the "
                                         "output URL of centile run) whose Parquet files are registered as "
                                         "views by file name.")] = "centile-out",
    fmt: Annotated[str, typer.Option("--format", "-f", help="table, csv, json or parquet.")] = "table",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the result to this file "
                                             "instead of stdout (required for parquet).")] = None,
    limit: Annotated[int, typer.Option("--limit", help="Rows shown in table format.")] = 50,
    read_only: Annotated[bool, typer.Option("--read-only", help="Allow one SELECT only, reading only the "
                                            "inputs and --results (for shared servers).")] = False,
) -> None:
    """Run ad-hoc SQL (DuckDB) over the inputs and the results of a run.

    This is a console over your own data: any DuckDB statement runs, including ones that read
    or write other files (COPY, read_csv, ATTACH). --read-only allows one SELECT and no file
    access beyond the inputs and --results.
    """
    from centile.io.query import run_query

    with _errors():
        cfg = _config(config, data, as_of=as_of) if (data or config) else None
        with _status("querying") as progress:
            df = run_query(query, cfg, results, progress, read_only=read_only)
        from centile.cli.render import emit_frame

        emit_frame(out_console, df, fmt, out, limit)


@app.command()
def segments(data: DataOpt = None, config: ConfigOpt = None, out: OutOpt = Path("centile-out"),
             features: Annotated[Path | None, typer.Option(
                 "--features", help="Use this feature table (features.parquet) instead of computing it "
                 "from the inputs; the customers table is still read from --data / -c when there is one.",
                 show_default=False)] = None,
             clubs: Annotated[Path | None, typer.Option(
                 "--clubs", help="clubs.parquet (or the output folder of centile clubs): adds the club "
                 "segmentation.", show_default=False)] = None,
             as_of: AsOfOpt = None, strict: StrictOpt = None, threads: ThreadsOpt = None,
             backend: BackendOpt = None, scheduler: SchedulerOpt = None,
             wait: WaitOpt = False, wait_timeout: WaitTimeoutOpt = None, json_: JsonOpt = False) -> None:
    """RFM scores and named segments, rule-based segments ([segments.rules]), clusters and a
    profile per segment.

    Writes segments.parquet, segment_profiles.parquet, rfm_grid.parquet, cluster_centres.parquet
    (plus features.parquet when the features are computed here).
    """
    if features is None and data is None and config is None:
        err_console.print("Error: pass --data DIR or -c centile.toml (or --features FILE)")
        raise typer.Exit(1)
    from centile.cli.render import print_segments
    from centile.segments.compute import segments_summary_doc
    from centile.segments.job import run_segments

    with _errors(), _lock_wait(wait, wait_timeout):
        if data is None and config is None:  # --features alone: no inputs to describe
            from centile.config import Config

            cfg = Config(tables={}, threads=threads)
        else:
            cfg = _config(config, data, as_of=as_of, strict=strict, threads=threads, backend=backend,
                          scheduler=scheduler)
        with _status("segments") as progress:
            res = run_segments(cfg, out, features=features, clubs=clubs, progress=progress)
    if json_:
        _print_json({"out": str(out), **segments_summary_doc(res)})
        return
    print_segments(out_console, res)
    out_console.print(f"written to {out}/")


SegmentsOpt = Annotated[Path | None, typer.Option(
    "--segments", help="Parquet/CSV with customer_id plus segment columns (e.g. segments.parquet, "
    "clubs.parquet) for the breakdowns / strata.", show_default=False)]


@app.command()
def holdout(data: DataOpt = None, config: ConfigOpt = None, out: OutOpt = Path("centile-out"),
            segments: SegmentsOpt = None, as_of: AsOfOpt = None, strict: StrictOpt = None,
            threads: ThreadsOpt = None, wait: WaitOpt = False, wait_timeout: WaitTimeoutOpt = None,
            json_: JsonOpt = False) -> None:
    """Assign every customer to campaign arms from a seeded hash of (customer_id, campaign salt):
    control groups, multi-arm splits, strata and a global long-term holdout ([holdout] in the config).

    Writes assignments.parquet (customer_id, campaign, arm) and assignment_shares.parquet.
    """
    from centile.cli.render import print_holdout
    from centile.uplift.holdout import holdout_summary_doc
    from centile.uplift.holdout_job import run_holdout

    with _errors(), _lock_wait(wait, wait_timeout):
        cfg = _config(config, data, as_of=as_of, strict=strict, threads=threads)
        with _status("holdout") as progress:
            res = run_holdout(cfg, out, segments=segments, progress=progress)
    if json_:
        _print_json({"out": str(res.out), **holdout_summary_doc(res)})
        return
    print_holdout(out_console, res)
    out_console.print(f"written to {res.out}/")


@app.command()
def uplift(data: DataOpt = None, config: ConfigOpt = None, out: OutOpt = Path("centile-out"),
           segments: SegmentsOpt = None, as_of: AsOfOpt = None, strict: StrictOpt = None,
           threads: ThreadsOpt = None, memory_limit: MemoryOpt = None, partitions: PartitionsOpt = None,
           backend: BackendOpt = None, scheduler: SchedulerOpt = None, wait: WaitOpt = False,
           wait_timeout: WaitTimeoutOpt = None, json_: JsonOpt = False) -> None:
    """Uplift of each campaign arm against control, overall and per segment: intervals (Newcombe,
    Welch, Poisson bootstrap), CUPED, Holm/BH p-values, SRM checks, ROI, Qini with a score.

    Reads contacts + orders, or the flat results table in [uplift] path. Writes uplift.parquet,
    uplift_srm.parquet (and uplift_qini*.parquet with [uplift] score).
    """
    from centile.cli.render import print_uplift
    from centile.uplift.compute import uplift_summary_doc
    from centile.uplift.job import run_uplift

    with _errors(), _lock_wait(wait, wait_timeout):
        cfg = _config(config, data, as_of=as_of, strict=strict, threads=threads, memory_limit=memory_limit,
                      partitions=partitions, backend=backend, scheduler=scheduler)
        with _status("uplift") as progress:
            res = run_uplift(cfg, out, segments=segments, progress=progress)
    if json_:
        _print_json({"out": str(res.out), **uplift_summary_doc(res)})
        return
    print_uplift(out_console, res)
    out_console.print(f"written to {res.out}/")


@app.command()
def clv(data: DataOpt = None, config: ConfigOpt = None, out: OutOpt = Path("centile-out"),
        model: Annotated[str | None, typer.Option(
            "--model", help="Purchase model: bgnbd, pareto-nbd or auto (fit both, keep the better by holdout error, "
            "else log-likelihood; default from [clv], else bgnbd).",
            show_default=False)] = None,
        calibration_end: Annotated[str | None, typer.Option(
            "--calibration-end", help="Last day of the calibration period, YYYY-MM-DD (default: the day "
            "before as-of).", show_default=False)] = None,
        holdout_end: Annotated[str | None, typer.Option(
            "--holdout-end", help="Last day of a holdout period after --calibration-end: also report "
            "predicted vs actual transactions there (clv_holdout.parquet).", show_default=False)] = None,
        horizon: Annotated[float | None, typer.Option(
            "--horizon", help="Prediction horizon in time units (default 52).", show_default=False)] = None,
        time_unit: Annotated[str | None, typer.Option(
            "--time-unit", help="day or week (default week).", show_default=False)] = None,
        groups: Annotated[list[str] | None, typer.Option(
            "--groups", help="FILE[:COLUMN] with customer_id and a group column (e.g. clubs.parquet:club); "
            "repeatable; writes clv_groups.parquet.", show_default=False)] = None,
        as_of: AsOfOpt = None, strict: StrictOpt = None, threads: ThreadsOpt = None,
        backend: BackendOpt = None, scheduler: SchedulerOpt = None,
        wait: WaitOpt = False, wait_timeout: WaitTimeoutOpt = None, json_: JsonOpt = False) -> None:
    """Fit BG/NBD (or Pareto/NBD) and Gamma-Gamma; predict per customer P(alive), churn risk,
    expected transactions, repurchase probability, expected order value and CLV.

    Writes clv.parquet and clv_model.json (plus clv_holdout.parquet with --holdout-end and
    clv_groups.parquet with --groups).
    """
    from centile.cli.render import print_clv
    from centile.clv.compute import clv_settings, clv_summary_doc
    from centile.clv.job import read_groups, run_clv

    if data is None and config is None:
        err_console.print("Error: pass --data DIR or -c centile.toml")
        raise typer.Exit(1)
    with _errors(), _lock_wait(wait, wait_timeout):
        cfg = _config(config, data, as_of=as_of, strict=strict, threads=threads, backend=backend,
                      scheduler=scheduler)
        st = clv_settings(cfg, model=model, calibration_end=calibration_end, holdout_end=holdout_end,
                          horizon=horizon, time_unit=time_unit)
        frames = [read_groups(g) for g in groups or []]
        with _status("clv") as progress:
            res = run_clv(cfg, out, settings=st, groups=frames or None, progress=progress)
    if json_:
        _print_json({"out": str(out), **clv_summary_doc(res)})
        return
    print_clv(out_console, res)
    out_console.print(f"written to {out}/")


def main() -> None:
    """Console-script entry point. Exit codes: 0 success, 1 user or data error (including
    bad options), 2 internal error, 130 interrupted (Ctrl-C, SIGTERM), 143 stopped by a SIGTERM
    without unwinding (a second one, or 20 s after the first)."""
    from typer._click import exceptions as click_exc  # typer vendors click since 0.2x

    # a job scheduler (SLURM, Kubernetes, systemd) stops a job with SIGTERM: unwind as for Ctrl-C,
    # so the staging and scratch folders go and the local cluster's workers are closed (DuckDB checks
    # for signals while a query runs: the handler's exception stops the query at once)
    signal.signal(signal.SIGTERM, _terminated)
    threads = _threads_from_argv(sys.argv)
    if threads:
        # Polars reads its pool size once, at import: set it before anything imports polars
        os.environ.setdefault("POLARS_MAX_THREADS", threads)
    try:
        code = app(standalone_mode=False)
    except click_exc.UsageError as exc:
        exc.show()
        sys.exit(1)
    except (click_exc.Abort, typer.Abort):
        err_console.print("Aborted.")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


#: seconds a run has to unwind after SIGTERM before it exits without cleaning up
TERM_GRACE_S = 20.0
_term = {"seen": False}


def _terminated(signum: int, frame: object) -> None:
    """SIGTERM: unwind as for Ctrl-C. The exception raised here can be lost (raised inside a callback
    that a library swallows, e.g. while DuckDB hands a result to Polars), so a watchdog ends the
    process after ``TERM_GRACE_S`` seconds, and a second SIGTERM ends it at once; the next run into
    the same --out then removes what this one left."""
    import threading

    if _term["seen"]:
        _hard_exit("a second SIGTERM")
    _term["seen"] = True

    def watchdog() -> None:
        time.sleep(TERM_GRACE_S)
        _hard_exit(f"SIGTERM, and the run did not stop within {TERM_GRACE_S:g} s")

    threading.Thread(target=watchdog, name="centile-sigterm-watchdog", daemon=True).start()
    raise KeyboardInterrupt(f"signal {signum}")


def _hard_exit(why: str) -> None:
    with contextlib.suppress(Exception):
        sys.stderr.write(f"Stopped ({why}); the next run into the same --out removes what this one left.\n")
        sys.stderr.flush()
    os._exit(143)


def _threads_from_argv(argv: list[str]) -> str | None:
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--threads="):
            return a.split("=", 1)[1]
    return os.environ.get("CENTILE_THREADS")


if __name__ == "__main__":  # pragma: no cover
    main()
