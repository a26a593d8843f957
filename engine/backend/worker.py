"""What runs on a cluster worker: one customer partition of a stage, and the worker's identity.

Nothing here imports dask: a worker process calls :func:`run_partition` (through the Dask
backend's task) and :func:`identity`; both only need centile itself. A partition's task opens
its own DuckDB session over the same input files, validating and keeping only the rows of its
customers (the hash-bucket filter runs while the files are read), runs the stage's function on
it and hands back what the function returns. A per-customer frame goes back through a file in
the run's scratch folder beside the output (a shared file system) rather than through the
scheduler; order lines never leave the worker.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from centile.backend import partitions
from centile.backend.buckets import Pieces
from centile.backend.partitions import Partitioning
from centile.config import Config
from centile.errors import BackendError
from centile.runtime import numba_threads

#: the source files whose bytes make a worker's code identity
_CODE_SUFFIXES = (".py", ".sql")


@dataclass(frozen=True)
class PartitionJob:
    """Everything a worker needs to rebuild one partition's view of the inputs.

    ``cfg`` carries the whole data's ``as_of`` (fixed by the client's validation), so every
    partition uses the same windows; ``only`` the tables the client's session validated;
    ``scratch`` a folder on the shared file system for returned frames (None: through the
    scheduler).
    """

    cfg: Config
    only: tuple[str, ...]
    parts: Partitioning
    label: str
    scratch: str | None = None
    spill: str | None = None
    #: a shared folder where each partition's validated rows are kept from stage to stage
    cache: str | None = None
    #: the customer-hash pieces the client wrote of the validated tables (a partition reads only
    #: its pieces of these tables, not the input files)
    pieces: Mapping[str, Pieces] | None = None


@dataclass(frozen=True)
class FramePart:
    """A Polars frame a worker wrote to ``path`` (Arrow IPC) instead of sending it."""

    path: str
    rows: int


@dataclass(frozen=True)
class FrameFile:
    """A Polars frame the client wrote to ``path`` (Arrow IPC) for a task to read (a partition's
    slice of a per-customer frame); the client removes it when the call's tasks have ended, so a
    retried task reads it again."""

    path: str
    rows: int
    #: the String columns written as dictionaries (:func:`hand_over`), read back as String
    coded: tuple[str, ...] = ()
    #: the in-memory size of what was written (dictionaries counted as codes plus their values)
    nbytes: int = 0

    def read(self, columns: list[str] | None = None) -> Any:
        import polars as pl

        frame = pl.read_ipc(self.path, columns=columns)
        coded = [c for c in self.coded if c in frame.columns]
        return frame.with_columns(pl.col(coded).cast(pl.String)) if coded else frame


def hand_over(frame: Any, path: Path) -> FrameFile:
    """Write ``frame`` for a task to read (:func:`read_inputs`). A String column with few distinct
    values (segment labels, customer attributes: at most one per four rows) is written as a
    dictionary of its values and a 4-byte code per row (a Polars Enum of the sorted values), and
    read back as the same String column."""
    import polars as pl

    coded, columns = [], []
    for col in frame.get_columns():
        if col.dtype == pl.String and col.len() >= 64:
            values = col.drop_nulls().unique()
            if values.len() * 4 <= col.len():
                col = col.cast(pl.Enum(values.sort()))
                coded.append(col.name)
        columns.append(col)
    out = pl.DataFrame(columns) if coded else frame
    out.write_ipc(path, compression="uncompressed")
    return FrameFile(str(path), frame.height, tuple(coded), int(out.estimated_size()))


@dataclass(frozen=True)
class KeptRows:
    """One partition's rows of a per-customer frame, put together on the worker (:func:`read_inputs`):
    the columns ``kept`` read from ``path``, the partition's rows an earlier step left in the scratch
    folder (:class:`~centile.backend.partitions.Kept`), beside the other columns, which the client
    wrote to ``sent`` in the same row order; the frame's columns in the order ``columns``."""

    path: str
    rows: int
    columns: tuple[str, ...]
    kept: tuple[str, ...]
    sent: FrameFile | None

    def read(self) -> Any:
        import polars as pl

        have: dict[str, Any] = {}
        rest = [c for c in self.columns if c not in self.kept]
        for f, part in ((self.path, pl.read_ipc(self.path, columns=list(self.kept)) if self.kept else None),
                        (self.sent.path if self.sent else None, self.sent.read(rest) if rest else None)):
            if part is None:
                continue
            if part.height != self.rows:
                raise RuntimeError(f"{f} holds {part.height:,} rows, not the partition's {self.rows:,}")
            have.update((c, part.get_column(c)) for c in part.columns)
        return pl.DataFrame([have[c] for c in self.columns])


def from_kept(frame: Any, kept: partitions.Kept, folder: Path, prefix: str = "") -> tuple[list[KeptRows], int]:
    """Per partition of ``kept``, the :class:`KeptRows` of ``frame``, which has the kept rows in their
    order (:meth:`~centile.backend.partitions.Kept.serves`): its columns the kept files hold are read
    there, the others (gathered once into the files' row order, then cut per partition) written to
    ``folder`` (``<prefix><partition>.arrow``). Returns them and the bytes of the columns written."""
    import polars as pl

    own = tuple(c for c in frame.columns if c in kept.columns)
    rest = [frame.get_column(c) for c in frame.columns if c not in kept.columns]
    sent = pl.DataFrame(rest).gather(kept.where()) if rest else None  # one gather, then zero-copy slices
    out, at = [], kept.offsets
    for p, (path, rows) in enumerate(zip(kept.files, kept.heights, strict=True)):
        handed = None if sent is None else hand_over(sent.slice(at[p], rows), folder / f"{prefix}{p:05d}.arrow")
        out.append(KeptRows(path, rows, tuple(frame.columns), own, handed))
    return out, sum(k.sent.nbytes for k in out if k.sent is not None)


def read_inputs(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """``args`` with every :class:`FrameFile` read back into its frame, every :class:`KeptRows`
    put together."""
    if not any(isinstance(a, FrameFile | KeptRows) for a in args):
        return args
    return tuple(a.read() if isinstance(a, FrameFile | KeptRows) else a for a in args)


@dataclass(frozen=True)
class Timed:
    """A task's result with the seconds its partition(s) spent opening and working."""

    value: Any
    open_s: float
    work_s: float
    #: the pickled size of the state a ``finish`` step reduced (it stayed on the workers)
    held_bytes: int = 0
    #: CPU seconds of the task's thread (DuckDB and numba run one thread per task on a cluster),
    #: with the merge and finish steps that folded it in
    cpu_s: float = 0.0


def run_partition(job: PartitionJob, part: int, fn: Any, args: tuple[Any, ...],
                  threads: int | None = None, timings: dict[str, float] | None = None) -> Any:
    """``fn(view, part, *args)`` over a session holding partition ``part`` only (on a worker).

    ``threads``: DuckDB's and numba's threads when the config sets none (on a cluster one per task:
    a worker runs as many tasks at once as it has threads, so tasks must not each take every core). ``timings`` gets
    ``open_s`` (reading and validating the partition, or loading it from the cache) and
    ``work_s`` (``fn`` and handing its frames over) and ``cpu_s`` (this thread's CPU seconds).
    """
    from centile.backend.session import open_session

    if job.scratch is not None and not Path(job.scratch).is_dir():
        raise BackendError(
            f"this worker ({platform.node()}) cannot see the run's scratch folder {job.scratch}, which the "
            "client made beside --out: the workers and the client must share the file system that holds "
            "--out (and the inputs), under the same paths")
    cfg = job.cfg if job.cfg.threads or not threads else job.cfg.with_(threads=threads)
    spill = Path(job.spill) / f"spill-{part}" if job.spill else None
    t0, c0 = time.perf_counter(), time.thread_time()
    args = read_inputs(args)
    if not job.only:  # the function reads no input table (e.g. a later pass over parked state)
        t1 = t0
        if partitions.observe is not None:
            partitions.observe(job.label, part, None)
        with numba_threads(cfg.threads):
            result = fn(None, part, *args)
    else:
        with open_session(cfg, only=job.only, spill=spill, buckets=job.parts.bounds(part), cache=job.cache,
                          pieces=job.pieces) as s:
            t1 = time.perf_counter()
            if partitions.observe is not None:
                partitions.observe(job.label, part, s)
            with numba_threads(cfg.threads):
                result = fn(s, part, *args)
    if job.scratch is not None:
        stem = f"{re.sub(r'[^0-9A-Za-z]+', '-', job.label).strip('-') or 'part'}-{part:05d}"
        result = _offload(result, Path(job.scratch), stem)
    if timings is not None:
        timings.update(open_s=t1 - t0, work_s=time.perf_counter() - t1, cpu_s=time.thread_time() - c0)
    return result


def _offload(obj: Any, folder: Path, stem: str) -> Any:
    """``obj`` with every Polars frame in it (also inside tuples, lists and dicts) written to
    ``folder`` and replaced by a :class:`FramePart`."""
    import polars as pl

    if isinstance(obj, pl.DataFrame):
        path = folder / f"{stem}.arrow"
        obj.write_ipc(path, compression="uncompressed")
        return FramePart(str(path), obj.height)
    if isinstance(obj, tuple | list):
        return type(obj)(_offload(x, folder, f"{stem}-{i}") for i, x in enumerate(obj))
    if isinstance(obj, dict):
        return {k: _offload(v, folder, f"{stem}-{i}") for i, (k, v) in enumerate(obj.items())}
    return obj


def reload(obj: Any) -> Any:
    """The inverse of :func:`_offload` on the client: frames read back, their files removed."""
    if isinstance(obj, FramePart):
        import polars as pl

        df = pl.read_ipc(obj.path)
        os.unlink(obj.path)
        return df
    if isinstance(obj, tuple | list):
        return type(obj)(reload(x) for x in obj)
    if isinstance(obj, dict):
        return {k: reload(v) for k, v in obj.items()}
    return obj


@functools.cache
def code_hash() -> str:
    """A SHA-256 over centile's installed Python and SQL sources (engine, kernels, queries),
    named by package-relative path, so an editable checkout and a wheel of the same code agree."""
    import centile
    import centile.kernels
    import centile.sql

    roots = {"centile": Path(centile.__path__[0]), "centile.kernels": Path(centile.kernels.__path__[0]),
             "centile.sql": Path(centile.sql.__path__[0])}
    h = hashlib.sha256()
    for name, root in sorted(roots.items()):
        inner = [r for n, r in roots.items() if n != name and r != root and r.is_relative_to(root)]
        files = sorted(f for f in root.rglob("*") if f.suffix in _CODE_SUFFIXES and f.is_file()
                       and "__pycache__" not in f.parts and not any(f.is_relative_to(r) for r in inner))
        for f in files:
            h.update(f"{name}/{f.relative_to(root).as_posix()}\0".encode())
            h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def identity() -> dict[str, str]:
    """What a worker must share with the client: centile's version and code, Python's minor version
    (functions and frames are pickled between them)."""
    from centile import __version__

    return {"centile": __version__, "code": code_hash(),
            "python": ".".join(platform.python_version_tuple()[:2])}


def verdict(client: dict[str, str], ident: Any) -> str | None:
    """Why a worker whose :func:`identity` is ``ident`` (or the exception it raised) cannot run the
    client's tasks; None when it can."""
    if isinstance(ident, BaseException):
        why = f"{type(ident).__name__}: {ident}"
        if isinstance(ident, ModuleNotFoundError) or "centile" in str(ident):
            why = f"centile cannot be imported there ({why})"
        return why
    diff = [f"{k} {ident.get(k)!r} (client: {v!r})" for k, v in client.items()
            if k != "code" and ident.get(k) != v]
    if ident.get("code") != client["code"]:
        diff.append(f"other code (sources hash {str(ident.get('code'))[:12]}, client: {client['code'][:12]})")
    return ", ".join(diff) or None


def mismatches(client: dict[str, str], workers: dict[str, Any]) -> list[str]:
    """One line per worker whose identity differs from the client's (or that could not tell)."""
    out = []
    for addr, ident in sorted(workers.items()):
        why = verdict(client, ident)
        if why:
            out.append(f"{addr}: {why}")
    return out
