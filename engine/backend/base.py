"""The seam through which capabilities reach the input tables and heavy aggregation.

A backend opens the validated inputs as a :class:`~centile.backend.session.Session`
(tables under the contract's names, SQL in, Polars frames out) and evaluates SQL
over in-memory frames (:meth:`Backend.local_sql`). Capabilities never open a DuckDB
connection themselves, so a later backend can run the same stages over
customer-hash partitions, locally or on a cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from centile.config import Config
from centile.registry import Registry
from centile.runtime import Progress

if TYPE_CHECKING:
    import polars as pl

    from centile.backend.partitions import Kept, Partitioning
    from centile.backend.session import Session


class Backend(Protocol):
    """What a backend offers the capabilities."""

    name: str
    cfg: Config

    def open(self, *, only: tuple[str, ...] | None = None, progress: Progress | None = None,
             spill: Path | None = None, elsewhere: tuple[str, ...] = ()) -> AbstractContextManager[Session]:
        """Validate the inputs (``only`` these tables when given) and open them as a session
        (``spill``: where to spill beyond the memory limit; ``elsewhere``: tables the job reads
        from elsewhere, see :func:`centile.backend.session.open_session`)."""
        ...

    def local_sql(self, frames: Mapping[str, pl.DataFrame]) -> AbstractContextManager[Any]:
        """A SQL connection over in-memory frames registered under their names."""
        ...

    def map_partitions(self, s: Session, parts: Partitioning, label: str, fn: Callable[..., Any],
                       *args: Any, progress: Progress | None = None,
                       tables: tuple[str, ...] | None = None) -> list[Any]:
        """``[fn(view, p, *args) for p in range(parts.count)]``, where ``view`` is a session whose
        customer tables hold partition ``p`` only. ``fn`` must be a module-level function and its
        arguments and result small (a partition's mergeable state, or its per-customer frame):
        a backend may run it in another process or on another machine. ``tables``: the input
        tables ``fn`` reads (a remote partition validates only those; None: all)."""
        ...

    def map_rows(self, s: Session, parts: Partitioning, label: str, fn: Callable[..., Any], *args: Any,
                 progress: Progress | None = None, tables: tuple[str, ...] | None = None
                 ) -> tuple[pl.DataFrame, Kept | None]:
        """:meth:`map_partitions` of a ``fn`` returning its partition's per-customer rows: every
        partition's rows in ``customer_id`` order, and where a remote backend's workers left each
        partition's rows for later per-customer tasks (:class:`~centile.backend.partitions.Kept`;
        None when nothing is kept elsewhere)."""
        ...

    def map_reduce(self, s: Session, parts: Partitioning, label: str, fn: Callable[..., Any],
                   merge: Callable[[Any, Any], Any], *args: Any, progress: Progress | None = None,
                   tables: tuple[str, ...] | None = None, finish: Callable[[Any], Any] | None = None) -> Any:
        """``fn`` per partition as :meth:`map_partitions`, the results folded in partition order
        with the associative ``merge(a, b)`` (on a cluster: a tree on the workers), then
        ``finish(state)`` when given (on a cluster: on the worker holding the merged state)."""
        ...

    def distributed(self) -> bool:
        """Does per-partition work leave this process (so that several partitions pay off even
        where one pass would do)?"""
        ...

    def describe(self) -> dict[str, Any]:
        """For the manifest: the backend's kind, and for a cluster its workers and traffic."""
        ...

    def moved(self) -> dict[str, dict[str, Any]]:
        """What the per-partition steps moved so far, by step label (tasks, bytes each way); empty
        when nothing leaves this process."""
        ...

    def __enter__(self) -> Backend:
        """Start what the run needs (a cluster connection); :meth:`__exit__` stops it."""
        ...

    def __exit__(self, *exc: object) -> None:
        ...


def network_delta(before: Mapping[str, Mapping[str, Any]], after: Mapping[str, Mapping[str, Any]]
                  ) -> dict[str, Any]:
    """What moved between two :meth:`Backend.moved` snapshots (a stage's share), for its manifest
    record: tasks, bytes to the workers (with their three kinds: ``bytes_per_task``, pickled with
    every task; ``bytes_broadcast``, frames sent to every worker; ``bytes_per_customer``, frames
    split by partition, each row sent once), ``bytes_to_client`` (through the scheduler and through
    frame files in the scratch folder, which the client reads back), and the same per step.
    Empty when nothing moved (the DuckDB backend, or a stage without per-partition steps)."""
    steps: dict[str, dict[str, Any]] = {}
    for label, now in after.items():
        was = before.get(label, {})
        diff = {k: (round(v - was.get(k, 0), 3) if isinstance(v, float) else v - was.get(k, 0))
                for k, v in now.items()}
        if diff.get("tasks"):
            steps[label] = diff
    if not steps:
        return {}

    def total(key: str) -> int:
        return sum(int(d.get(key, 0)) for d in steps.values())

    return {"tasks": total("tasks"), "bytes_to_workers": total("bytes_to_workers"),
            "bytes_per_task": total("bytes_per_task"), "bytes_broadcast": total("bytes_broadcast"),
            "bytes_per_customer": total("bytes_per_customer"),
            "bytes_to_client": total("bytes_to_client") + total("bytes_via_files"),
            "bytes_held_on_workers": total("bytes_held_on_workers"), "steps": steps}


#: name -> factory(cfg) -> Backend
BACKENDS: Registry[Any] = Registry("backend")


def register_backend(name: str, factory: Any) -> Any:
    """Make a backend selectable by name; a taken name raises."""
    return BACKENDS.add(name, factory)


def open_backend(cfg: Config, name: str | None = None) -> Backend:
    """The backend ``name`` (default: the config's ``[backend] kind``, DuckDB in this process) for
    this config. Use it as a context manager around the run when it may be remote."""
    name = name or cfg.backend.kind
    if name not in BACKENDS:
        from centile.errors import ConfigError

        raise ConfigError(f"backend {name!r} ([backend] kind, --backend) is not available; choose one of {', '.join(BACKENDS.names())}")
    return BACKENDS[name](cfg)


@contextmanager
def open_inputs(cfg: Config, progress: Progress | None = None, *, only: tuple[str, ...] | None = None,
                spill: Path | None = None) -> Iterator[Session]:
    """The validated inputs of a single job (``centile features``, ``clv``, …) as a session on the
    config's backend: with ``--backend dask`` the job's per-partition work runs on the cluster,
    connected (and its workers checked) for the job's duration. ``spill``: the folder beside the
    output where DuckDB spills and, on a cluster, partitions are cached and frames handed back."""
    with open_backend(cfg) as backend, backend.open(only=only, progress=progress, spill=spill) as s:
        yield s


def _dask(cfg: Config) -> Backend:
    # imported on use: dask is an optional extra, and `centile --help` must not pay for it
    from centile.backend.dask import DaskBackend

    return DaskBackend(cfg)


register_backend("dask", _dask)

def local_sql(frames: Mapping[str, pl.DataFrame], cfg: Config | None = None) -> AbstractContextManager[Any]:
    """SQL over in-memory frames (e.g. a club's eligibility over the feature table), row order kept."""
    from types import MappingProxyType

    return open_backend(cfg if cfg is not None else Config(tables=MappingProxyType({})), "duckdb").local_sql(frames)
