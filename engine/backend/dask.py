"""The Dask backend: per-partition work as tasks on the workers of a Dask cluster.

``centile run --backend dask [--scheduler tcp://host:8786]``. as_of and every global step
(ranks and clubs, the CLV fit, merges) stay in this process, the client, as with the DuckDB
backend; work that a stage hands to :meth:`Session.map_partitions` runs as one task per
customer-hash partition. The customer tables are validated by the workers too: a task per chunk
of the input files writes its validated rows into customer-hash pieces in the shared scratch
folder, a task per piece sets duplicate lines aside, and the client merges their counts
(:mod:`centile.backend.chunks`). A task opens its own DuckDB session over the same input files,
keeping only its customers' rows (:mod:`centile.backend.worker`), so the workers must see the
inputs and the output's parent folder under the same paths as the client (a shared file
system). Without a scheduler address a ``distributed.LocalCluster`` of worker processes is
started for the run and closed after it.

Importing this module imports dask: the backend registry loads it only when ``dask`` is chosen.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from centile.backend import worker
from centile.backend.partitions import (
    Kept,
    Partitioning,
    PerCustomer,
    sorted_rows,
    split_by_partition,
    stack_rows,
)
from centile.backend.session import Session, frames_sql, open_session, scratch_folder
from centile.config import Config
from centile.errors import BackendError, CentileError, ConfigError
from centile.runtime import Progress

if TYPE_CHECKING:
    import polars as pl

try:
    import distributed
except ImportError:  # pragma: no cover - depends on the installation
    distributed = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

#: seconds to wait for a scheduler to answer before saying it cannot be reached
CONNECT_TIMEOUT = 10

#: seconds to wait for the first worker of a cluster that has none yet
WORKER_TIMEOUT = 60

#: seconds a failed run waits for its cancelled tasks that are still running on the workers
SETTLE_TIMEOUT = 60

#: partitions per worker thread when none are configured (some slack, so that one slow partition
#: does not leave the other workers idle at the end of a stage)
PARTS_PER_THREAD = 2

#: a task argument whose pickled size reaches this is sent once, as a held value its tasks depend on
#: (:meth:`DaskBackend._hold`), not pickled into every task of the call
HOLD_BYTES = 64 * 1024


def _task(job: worker.PartitionJob, part: int, fn: Callable[..., Any], *args: Any) -> Any:
    """One partition on a worker. Without ``--threads``, DuckDB and numba take one thread per task:
    a worker runs as many tasks at once as it has threads."""
    t: dict[str, float] = {}
    value = worker.run_partition(job, part, fn, args, threads=1, timings=t)
    return worker.Timed(value, t["open_s"], t["work_s"], cpu_s=t["cpu_s"])


def _executing(token: str, dask_worker: Any = None) -> list[str]:
    """The keys of this run's tasks still executing on a worker (also cancelled ones: a running
    task cannot be interrupted)."""
    return [str(k) for k, ts in dask_worker.state.tasks.items()
            if token in str(k) and ts.state in ("executing", "long-running", "cancelled", "resumed")]


class DaskBackend:
    """Per-partition work on a Dask cluster; everything else as the DuckDB backend, here."""

    name = "dask"

    def __init__(self, cfg: Config, *, check: bool = True) -> None:
        if distributed is None:
            raise ConfigError("the dask backend needs the packages dask and distributed, which are not "
                              "installed: pip install 'centile[dask]' (or run without --backend dask)")
        in_memory = [p for spec in cfg.tables.values() for p in spec.paths if p.lower().startswith("memory://")]
        if in_memory:
            raise ConfigError(f"{in_memory[0]}: a memory:// input lives in this process, and the Dask workers are "
                              "other processes that cannot read it; put the inputs where every worker can read "
                              "them (a shared folder, file:// or s3://), or run without --backend dask")
        self.cfg = cfg
        self._check = check  # False: connect only (``centile worker-check`` reports instead of refusing)
        self.client: Any = None
        self._cluster: Any = None
        self._spill: Path | None = None
        self._token = uuid.uuid4().hex[:8]  # this run's tasks and partition cache
        #: per map_partitions label: tasks; bytes sent to the workers, back to the client through
        #: the scheduler, and through frame files in the scratch folder; bytes of merged state that a
        #: finish step reduced on a worker; the tasks' seconds opening their partition (reading and
        #: validating it, or loading it from the cache) and working, their threads' CPU seconds
        #: (merges included); the client's wall seconds from submitting to holding the results
        self.traffic: dict[str, dict[str, Any]] = {}

    # -- the cluster --------------------------------------------------------------------------

    def __enter__(self) -> DaskBackend:
        address = self.cfg.backend.scheduler
        try:
            if address:
                try:
                    self.client = distributed.Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False)
                except (OSError, TimeoutError, ValueError) as exc:
                    raise BackendError(
                        f"cannot reach the Dask scheduler at {address} ({type(exc).__name__}: {exc}); start "
                        "one (`dask scheduler`, then `dask worker <address>` on each machine), check the "
                        "address and port, or leave out --scheduler to run on a local cluster") from None
            else:
                self._cluster = distributed.LocalCluster(processes=True, dashboard_address=":0",
                                                         silence_logs=logging.ERROR)
                self.client = distributed.Client(self._cluster, set_as_default=False)
            if self._check:
                self.check_workers()
        except BaseException:
            self.__exit__()
            raise
        log.info("dask backend: %d workers, %d threads (%s)", len(self.client.nthreads()),
                 sum(self.client.nthreads().values()), address or "local cluster")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.close()
            self.client = None
        if self._cluster is not None:
            with contextlib.suppress(Exception):
                self._cluster.close()
            self._cluster = None

    def _running(self) -> Any:
        if self.client is None:
            raise RuntimeError("the dask backend is not started: use it as a context manager")
        return self.client

    def identities(self, timeout: float | None = None) -> dict[str, Any]:
        """Every worker's :func:`~centile.backend.worker.identity` (or the exception it raised
        there), by address, once at least one worker is up (at most ``timeout`` s, default
        :data:`WORKER_TIMEOUT`; then :class:`BackendError`)."""
        client = self._running()
        wait = WORKER_TIMEOUT if timeout is None else timeout
        try:
            client.wait_for_workers(1, timeout=wait)
        except TimeoutError:
            raise BackendError(
                f"the Dask cluster at {self.cfg.backend.scheduler or 'local'} has had no worker for "
                f"{wait:g} s; start some (`dask worker <scheduler address>`), or give an adaptive "
                "cluster a minimum of one worker, and run again") from None
        try:
            return dict(client.run(worker.identity, on_error="return"))
        except Exception as exc:  # the function cannot even be unpickled where centile is missing
            return {addr: exc for addr in client.nthreads()}

    def check_workers(self) -> None:
        """Every worker must run the client's centile (version and source files) and Python
        minor version; raise :class:`BackendError` naming the workers that do not."""
        found = self.identities()
        bad = worker.mismatches(worker.identity(), found)
        if bad:
            raise BackendError(
                f"{len(bad)} of {len(found)} Dask workers do not run this centile "
                f"(version {worker.identity()['centile']}):\n  " + "\n  ".join(bad)
                + "\nInstall the same centile (and Python) on every worker, e.g. the same wheel or "
                "container image, and restart the workers.")

    def describe(self) -> dict[str, Any]:
        """For the manifest: where the partitions ran and what moved over the network."""
        nthreads = self.client.nthreads() if self.client is not None else {}
        return {"kind": self.name, "scheduler": self.cfg.backend.scheduler or "local cluster",
                "workers": len(nthreads), "threads": sum(nthreads.values()),
                "partitions": {k: {n: round(x, 3) if isinstance(x, float) else x for n, x in v.items()}
                               for k, v in self.traffic.items()}}

    def moved(self) -> dict[str, dict[str, Any]]:
        """A copy of :attr:`traffic` (the runner records each stage's share of it)."""
        return {k: dict(v) for k, v in self.traffic.items()}

    def threads(self) -> int:
        return sum(self._running().nthreads().values())

    # -- the seam -----------------------------------------------------------------------------

    def open(self, *, only: tuple[str, ...] | None = None, progress: Progress | None = None,
             spill: Path | None = None, elsewhere: tuple[str, ...] = ()) -> Session:
        """Open the inputs: the workers validate the customer tables into pieces, the client the
        others, merges the summary and fixes as_of; partitions go to the workers."""
        # the validated rows go into customer-hash pieces in the shared scratch folder, one per
        # partition of the tasks (two per worker thread, or --partitions): a partition's first task
        # reads only its pieces, not every input file
        # the workers validate the customer tables and write their pieces, a task per chunk of the
        # input files, then set duplicate lines aside a task per piece (:mod:`centile.backend.chunks`)
        spill, owned = scratch_folder(self.cfg, spill)
        s = open_session(self.cfg, progress, only=only, spill=spill, bucket=spill,
                         bucket_min=PARTS_PER_THREAD * self.threads(), chunked=self._write_chunks,
                         elsewhere=elsewhere)
        s.owned_scratch = owned
        s.backend = self
        self._spill = spill
        return s

    def _write_chunks(self, con: Any, tables: dict[str, Any], scratch: Path, count: int,
                      progress: Progress | None) -> tuple[dict[str, Any], dict[str, Any], int]:
        """Validate the customer tables and write their ``count`` pieces under ``scratch`` on the
        workers: a task per chunk of the input files, then a task per piece for the duplicate lines
        and the summary state; here only the schema files, the plan and the merge of small states."""
        from centile.backend import chunks

        client = self._running()
        job, plan = chunks.prepare(con, self.cfg, tables, scratch, count, spill=scratch)
        traffic = self._traffic("validation")
        t0 = time.perf_counter()
        if progress:
            progress(f"validating {', '.join(tables)} on the cluster: {len(plan)} chunks into {count} pieces")
        shared = self._hold(job, "validation")
        try:
            futures = [client.submit(_chunk_task, shared, c, key=f"centile-validate-{c.index}-{self._token}",
                                     pure=False) for c in plan]
            written = self._watch(futures, "validating", traffic, progress, collect=True, unit="chunk",
                                  what=[f"validating {c.table}, {c.describe()}" for c in plan])
            groups = chunks.by_piece(written)
            futures = [client.submit(_settle_task, shared, k, fs, key=f"centile-settle-{k}-{self._token}",
                                     pure=False) for k, fs in groups.items()]
            settled = self._watch(futures, "duplicates", traffic, progress, collect=True, unit="piece",
                                  what=[f"setting duplicate lines aside in piece {k}" for k in groups])
        finally:
            del shared
        traffic["tasks"] += len(plan) + len(groups)
        sent = {"bytes_broadcast": len(client.nthreads()) * _nbytes(job),
                "bytes_per_task": sum(_nbytes(c) for c in plan) + sum(_nbytes(fs) for fs in groups.values())}
        for k, v in sent.items():
            traffic[k] += v
        traffic["bytes_to_workers"] += sum(sent.values())
        pieces, states, duplicates = chunks.merge(job, settled, written)
        for st in settled:
            for f in st.superseded:  # the chunks' files of a piece written again without its duplicates
                with contextlib.suppress(OSError):
                    os.unlink(f)
        traffic["wall_s"] += time.perf_counter() - t0
        return pieces, states, duplicates

    def _hold(self, obj: Any, label: str) -> Any:
        """``obj`` as a value on the cluster that tasks take as an argument: a task of its own that
        returns it, so each worker fetches it once however many tasks read it, and the scheduler,
        which keeps the task, computes it again if every worker holding it dies (a scattered value
        would be lost with them, and the run with it)."""
        import warnings

        with warnings.catch_warnings():
            # a large value is sent once, here, on purpose: the warning asks for exactly this
            warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
            return self._running().submit(_given, obj, pure=False,
                                          key=f"centile-held-{_slug(label)}-"
                                              f"{self._token}-{uuid.uuid4().hex[:8]}")

    def _traffic(self, label: str) -> dict[str, Any]:
        return self.traffic.setdefault(label, {"tasks": 0, "bytes_to_workers": 0, "bytes_per_task": 0,
                                               "bytes_broadcast": 0, "bytes_per_customer": 0,
                                               "bytes_to_client": 0, "bytes_via_files": 0,
                                               "bytes_held_on_workers": 0, "bytes_kept_on_workers": 0,
                                               "open_s": 0.0, "work_s": 0.0, "cpu_s": 0.0, "wall_s": 0.0})

    def local_sql(self, frames: Mapping[str, pl.DataFrame]) -> contextlib.AbstractContextManager[Any]:
        """SQL over in-memory frames, here (they are the client's frames)."""
        return frames_sql(self.cfg, frames)

    def distributed(self) -> bool:
        return True

    def default_partitions(self, s: Session) -> Partitioning:
        """Enough partitions to keep every worker thread busy (or more, for the memory limit)."""
        return Partitioning(max(s.parts.count, PARTS_PER_THREAD * self.threads()))

    def map_partitions(self, s: Session, parts: Partitioning, label: str, fn: Callable[..., Any],
                       *args: Any, progress: Progress | None = None,
                       tables: tuple[str, ...] | None = None) -> list[Any]:
        """One task per partition; results in partition order (frames through the scratch folder).
        A failed partition cancels the others and raises :class:`BackendError` (a
        :class:`CentileError` from the task as it is)."""
        scratch = None
        if self._spill is not None:
            scratch = self._spill / f"parts-{uuid.uuid4().hex[:8]}"
            scratch.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        futures, shared, traffic = self._submit(s, parts, label, fn, args, scratch, tables)
        try:
            results = self._watch(futures, label, traffic, progress, collect=True)
        finally:
            _remove_inputs(shared)
            del futures, shared
        out = [worker.reload(r) for r in results]
        traffic["wall_s"] += time.perf_counter() - t0
        if scratch is not None:
            with contextlib.suppress(OSError):
                scratch.rmdir()
        return out

    def map_rows(self, s: Session, parts: Partitioning, label: str, fn: Callable[..., Any], *args: Any,
                 progress: Progress | None = None, tables: tuple[str, ...] | None = None
                 ) -> tuple[pl.DataFrame, Kept | None]:
        """One task per partition returning its per-customer rows, sorted there by ``customer_id``;
        the client stacks them in ``customer_id`` order. Each partition's rows stay in the file the
        task wrote them to (in the run's scratch folder, removed with it), for later per-customer
        tasks to read (:class:`~centile.backend.partitions.Kept`)."""
        if self._spill is None:  # no scratch folder: the rows came through the scheduler, none are kept
            frames = self.map_partitions(s, parts, label, sorted_rows, fn, *args, progress=progress, tables=tables)
            return stack_rows(frames)[0], None
        import polars as pl

        scratch = self._spill / f"rows-{uuid.uuid4().hex[:8]}"
        scratch.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        futures, shared, traffic = self._submit(s, parts, label, sorted_rows, (fn, *args), scratch, tables)
        try:
            files = self._watch(futures, label, traffic, progress, collect=True)
        finally:
            _remove_inputs(shared)
            del futures, shared
        if not all(isinstance(f, worker.FramePart) for f in files):
            raise RuntimeError(f"{label}: a partition returned no frame of per-customer rows")
        df, order = stack_rows([pl.read_ipc(f.path) for f in files])
        kept = Kept(parts, tuple(f.path for f in files), tuple(f.rows for f in files), tuple(df.columns),
                    order, df.get_column("customer_id"))
        traffic["wall_s"] += time.perf_counter() - t0
        return df, kept

    def map_reduce(self, s: Session, parts: Partitioning, label: str, fn: Callable[..., Any],
                   merge: Callable[[Any, Any], Any], *args: Any, progress: Progress | None = None,
                   tables: tuple[str, ...] | None = None, finish: Callable[[Any], Any] | None = None) -> Any:
        """One task per partition, merged pairwise on the workers (lower partitions on the left),
        then ``finish`` on the worker holding the merged state, so that one (finished) state comes
        back to the client."""
        client = self._running()
        t0 = time.perf_counter()
        futures, shared, traffic = self._submit(s, parts, label, fn, args, None, tables)
        level, tree = list(futures), []
        while len(level) > 1:
            nxt = [client.submit(_merge_task, merge, a, b, pure=False,
                                 key=f"centile-merge-{self._token}-{uuid.uuid4().hex[:8]}")
                   for a, b in zip(level[::2], level[1::2], strict=False)]
            if len(level) % 2:
                nxt.append(level[-1])
            tree += nxt
            level = nxt
        if finish is not None:
            level = [client.submit(_finish_task, finish, level[0], pure=False,
                                   key=f"centile-finish-{self._token}-{uuid.uuid4().hex[:8]}")]
            tree += level
        try:
            self._watch(futures, label, traffic, progress, collect=False)
            self._watch(level, label, traffic, None, collect=False)
            timed = level[0].result()
            traffic["bytes_to_client"] += _nbytes(timed)
            traffic["bytes_held_on_workers"] += timed.held_bytes
            traffic["open_s"] += timed.open_s
            traffic["work_s"] += timed.work_s
            traffic["cpu_s"] += timed.cpu_s
            traffic["wall_s"] += time.perf_counter() - t0
            return timed.value
        except BaseException:
            client.cancel(tree)
            self._settle()
            raise
        finally:
            _remove_inputs(shared)
            del futures, shared, level, tree

    def _submit(self, s: Session, parts: Partitioning, label: str, fn: Callable[..., Any],
                args: tuple[Any, ...], scratch: Path | None, tables: tuple[str, ...] | None
                ) -> tuple[list[Any], list[Any], dict[str, int]]:
        import polars as pl

        client = self._running()
        # the tables the function reads (orders always: as_of and the views are built on it)
        # (none: the function reads only what an earlier pass left in the scratch folder)
        only = () if tables == () else tuple(t for t in s.tables if tables is None or t in tables or t == "orders")
        cache = self._spill / f"cache-{self._token}" if self._spill else None
        if cache is not None:
            cache.mkdir(parents=True, exist_ok=True)  # here: workers never create the run's folders
        job = worker.PartitionJob(s.cfg.with_(as_of=s.as_of), only, parts, label,
                                  str(scratch) if scratch else None,
                                  str(cache) if cache else None, str(cache) if cache else None,
                                  {n: p for n, p in s.pieces.items() if n in only})
        # a frame argument goes to each worker once, not per task; a PerCustomer frame (e.g. the
        # segments of every customer) is split by partition and each task gets its own rows only:
        # written to the run's scratch folder, which the workers read (an Arrow file is written
        # and read at memory speed; through the scheduler each slice was pickled and sent), or
        # held on the cluster when there is no scratch folder
        # a PerCustomer frame with the rows the workers kept (the feature table's) takes the columns
        # they hold from the kept files; only its other columns go out, in the kept rows' order
        call = uuid.uuid4().hex[:8]
        slices: dict[int, list[Any]] = {}
        sent_size: dict[int, int] = {}
        kept_size = 0
        for i, a in enumerate(args):
            if isinstance(a, PerCustomer):
                folder = self._spill / f"in-{self._token}-{call}" if self._spill is not None else None
                if folder is not None:
                    folder.mkdir(parents=True, exist_ok=True)
                if folder is not None and a.kept is not None and a.kept.serves(a.frame, parts):
                    slices[i], sent_size[i] = worker.from_kept(a.frame, a.kept, folder, f"{i}-")
                    kept_size += int(a.frame.select([c for c in a.frame.columns if c in a.kept.columns])
                                     .estimated_size())
                    continue
                frames = split_by_partition(a.frame, parts, _id_type(s))
                if folder is not None:
                    slices[i] = [worker.hand_over(f, folder / f"{i}-{p:05d}.arrow") for p, f in enumerate(frames)]
                    sent_size[i] = sum(f.nbytes for f in slices[i])
                else:
                    slices[i] = [self._hold(f, label) for f in frames]
        # frames and large arguments go to each worker once (held on the cluster), the rest with
        # every task
        sizes = {i: int(a.estimated_size()) if isinstance(a, pl.DataFrame) else _nbytes(a)
                 for i, a in enumerate(args) if i not in slices}
        held = {i for i, a in enumerate(args)
                if i not in slices and (isinstance(a, pl.DataFrame) or sizes[i] >= HOLD_BYTES)}
        shared = [slices[i] if i in slices else self._hold(a, label) if i in held else a
                  for i, a in enumerate(args)]
        traffic = self._traffic(label)
        traffic["tasks"] += parts.count
        # three kinds, which grow differently with the cluster and the data: what every task carries
        # (the job, the function, small arguments), values sent to every worker (at most once each),
        # and per-customer frames split by partition (each row crosses the network once)
        sent = {"bytes_per_task": parts.count * (_nbytes((job, fn)) + sum(sizes[i] for i in sizes if i not in held)),
                "bytes_broadcast": len(client.nthreads()) * sum(sizes[i] for i in held),
                "bytes_per_customer": sum(sent_size[i] if i in sent_size else int(a.frame.estimated_size())
                                          for i, a in enumerate(args) if isinstance(a, PerCustomer))}
        for k, v in sent.items():
            traffic[k] += v
        traffic["bytes_to_workers"] += sum(sent.values())
        traffic["bytes_kept_on_workers"] += kept_size
        slug = _slug(label)
        futures = [client.submit(_task, job, p, fn, *[a[p] if i in slices else a for i, a in enumerate(shared)],
                                 key=f"centile-{slug}-{p}-{self._token}-{call}", pure=False)
                   for p in range(parts.count)]
        return futures, shared, traffic

    def _watch(self, futures: list[Any], label: str, traffic: dict[str, int], progress: Progress | None,
               *, collect: bool, unit: str = "partition", what: list[str] | None = None) -> list[Any]:
        """Wait for ``futures`` (one per partition, or per ``unit`` of other work, in order), saying
        progress; the results when ``collect``. The first failure cancels the rest and raises, naming
        the task by ``what`` when given (else by its partition)."""
        client = self._running()
        index = {f.key: p for p, f in enumerate(futures)}
        results: list[Any] = [None] * len(futures)
        t0, done, count = time.perf_counter(), 0, len(futures)
        try:
            for fut in distributed.as_completed(futures, loop=client.loop):
                part = index[fut.key]
                if fut.status != "finished":
                    raise _failure(label, part, count, fut, where=what[part] if what else None)
                if collect:
                    timed = fut.result()
                    traffic["bytes_to_client"] += _nbytes(timed)
                    traffic["open_s"] += timed.open_s
                    traffic["work_s"] += timed.work_s
                    traffic["cpu_s"] += timed.cpu_s
                    results[part] = timed.value
                    traffic["bytes_via_files"] += sum(os.path.getsize(f.path) for f in _frame_parts(results[part]))
                done += 1
                if progress and count > 1:
                    spent = time.perf_counter() - t0
                    eta = spent / done * (count - done)
                    progress(f"{label}: {unit} {done}/{count} done on the cluster in {spent:.0f} s"
                             + (f", about {eta:.0f} s left" if done < count else ""))
        except BaseException:
            client.cancel(futures)
            self._settle()
            raise
        return results

    def _settle(self) -> None:
        """Wait until no task of this run still executes on a worker (at most SETTLE_TIMEOUT s): a
        cancelled task runs to its end, and must not write into the run's scratch folder after the
        failed run removed it."""
        client = self._running()
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while time.monotonic() < deadline:
            try:
                busy = client.run(_executing, self._token, on_error="return")
            except Exception:  # the cluster is going away: nothing to wait for
                return
            if not any(isinstance(keys, list) and keys for keys in busy.values()):
                return
            time.sleep(0.2)
        log.warning("tasks of the failed run still run on the Dask workers after %d s", SETTLE_TIMEOUT)


@dataclass(frozen=True)
class WorkerStatus:
    """One worker as ``centile worker-check`` sees it."""

    address: str
    centile: str | None
    python: str | None
    code: str | None
    #: why the worker cannot run this client's tasks (None: it can)
    problem: str | None

    @property
    def ok(self) -> bool:
        return self.problem is None


@dataclass(frozen=True)
class ClusterCheck:
    """The client's identity and every worker's, for ``centile worker-check``."""

    scheduler: str
    client: dict[str, str]
    workers: list[WorkerStatus]

    @property
    def ok(self) -> bool:
        return bool(self.workers) and all(w.ok for w in self.workers)

    def as_dict(self) -> dict[str, Any]:
        return {"scheduler": self.scheduler, "client": self.client, "ok": self.ok,
                "workers": [{**asdict(w), "ok": w.ok} for w in self.workers]}


def check_cluster(scheduler: str | None, timeout: float | None = None) -> ClusterCheck:
    """Connect to the scheduler (None: a local cluster, which checks this installation's workers) and
    compare every worker's centile version, source hash and Python with this process's.

    Raises :class:`BackendError` when the scheduler cannot be reached or no worker comes up within
    ``timeout`` seconds; a worker that differs is reported, not raised."""
    from types import MappingProxyType

    from centile.config import BackendSpec

    cfg = Config(tables=MappingProxyType({}), backend=BackendSpec("dask", scheduler))
    me = worker.identity()
    with DaskBackend(cfg, check=False) as backend:
        found = backend.identities(timeout)
    rows = []
    for addr, ident in sorted(found.items()):
        known = ident if isinstance(ident, dict) else {}
        rows.append(WorkerStatus(addr, known.get("centile"), known.get("python"), known.get("code"),
                                 worker.verdict(me, ident)))
    return ClusterCheck(scheduler or "local cluster", me, rows)


def _chunk_task(job: Any, chunk: Any) -> worker.Timed:
    """One chunk of a table's input files validated and written into its pieces, on a worker."""
    from centile.backend import chunks

    value, wall, cpu = chunks.timed(chunks.write_chunk, job, chunk)
    return worker.Timed(value, 0.0, wall, cpu_s=cpu)


def _settle_task(job: Any, piece: int, files: Any) -> worker.Timed:
    """One piece's duplicate lines set aside and its summary state counted, on a worker."""
    from centile.backend import chunks

    value, wall, cpu = chunks.timed(chunks.settle_piece, job, piece, files)
    return worker.Timed(value, 0.0, wall, cpu_s=cpu)


def _slug(label: str) -> str:
    """A step label as it appears in task keys (``segments: rules`` -> ``segments-rules``)."""
    return re.sub(r"[^0-9A-Za-z]+", "-", label)


def _given(obj: Any) -> Any:
    """A held value (:meth:`DaskBackend._hold`): the task returns its argument."""
    return obj


def _remove_inputs(shared: list[Any]) -> None:
    """Remove the scratch files of a call's per-customer slices (after its tasks ended; the kept
    rows they were read beside stay)."""
    import shutil

    handed = [f.sent if isinstance(f, worker.KeptRows) else f for a in shared if isinstance(a, list) for f in a]
    folders = {Path(f.path).parent for f in handed if isinstance(f, worker.FrameFile)}
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


def _merge_task(merge: Callable[[Any, Any], Any], a: Any, b: Any) -> Any:
    """One step of a tree reduction on a worker. ``merge`` may update ``a``: it gets a copy, so that
    a retried step (its worker died) starts again from the unchanged input."""
    import copy

    c0 = time.thread_time()
    value = merge(copy.deepcopy(a.value), b.value)
    return worker.Timed(value, a.open_s + b.open_s, a.work_s + b.work_s,
                        cpu_s=a.cpu_s + b.cpu_s + time.thread_time() - c0)


def _finish_task(finish: Callable[[Any], Any], a: Any) -> Any:
    """The last step of a tree reduction on a worker: ``finish`` over the merged state (which it
    must not update: a retried step starts from the same input), with the merged state's size
    before it (what stayed on the workers)."""
    c0 = time.thread_time()
    value = finish(a.value)
    return worker.Timed(value, a.open_s, a.work_s, held_bytes=_nbytes(a.value),
                        cpu_s=a.cpu_s + time.thread_time() - c0)


def _nbytes(obj: Any) -> int:
    """The size of ``obj`` as sent between client and workers (pickled)."""
    import cloudpickle

    return len(cloudpickle.dumps(obj))


def _frame_parts(obj: Any) -> list[worker.FramePart]:
    if isinstance(obj, worker.FramePart):
        return [obj]
    if isinstance(obj, tuple | list):
        return [f for x in obj for f in _frame_parts(x)]
    if isinstance(obj, dict):
        return [f for x in obj.values() for f in _frame_parts(x)]
    return []


def _failure(label: str, part: int, count: int, fut: Any, where: str | None = None) -> BaseException:
    """The error of a failed partition task (or of the task ``where`` names), said for the user."""
    exc = fut.exception()
    if isinstance(exc, BackendError):
        return exc
    task = where or f"{label}: partition {part + 1} of {count}"
    if isinstance(exc, CentileError):  # e.g. an input a worker cannot read: say where it happened
        try:
            err = type(exc)(f"{task}, on a Dask worker (the workers read the "
                            f"inputs themselves, under the client's paths): {exc}")
        except TypeError:
            return exc
        err.__cause__ = exc
        return err
    what = f"{task} failed on the Dask cluster"
    if exc is None:  # no exception: the scheduler lost the task or its inputs (every worker holding them died)
        err = BackendError(f"{what}: the cluster lost it ({fut.status}): the workers holding it or its inputs "
                           "died. Check the workers' memory and logs, and run again. Nothing was written; the "
                           "previous output folder is untouched.")
        return err
    if type(exc).__name__ == "KilledWorker":
        # a partition's task holds one partition (more partitions make it smaller); a validation task
        # one input chunk: a CSV file, a Parquet file or about 2M rows of one
        fix = ("give the workers more memory, or use more partitions (--partitions)" if where is None else
               "give the workers more memory, or split large CSV files (a validation task holds one CSV file, "
               "or one Parquet file or about 2M rows of one, at a time)")
        err = BackendError(f"{what}: the workers running it died ({exc}). A worker usually dies of "
                           f"memory: {fix}. Nothing was written; the previous output folder is untouched.")
    else:
        err = BackendError(f"{what}: {type(exc).__name__}: {exc}. Nothing was written; the previous "
                           "output folder is untouched.")
    err.__cause__ = exc
    return err


def _id_type(s: Session) -> str:
    """The SQL type of ``customer_id`` in the session's validated order lines."""
    rows = s.con.execute("SELECT data_type FROM information_schema.columns WHERE table_name = 'orders' "
                         "AND column_name = 'customer_id'").fetchall()
    return rows[0][0] if rows else "BIGINT"
