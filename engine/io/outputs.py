"""Atomic output folders and the run manifest.

Every job writes into a hidden temporary folder beside the target and renames
each file into place only when the whole job succeeded, so a failed run never
leaves a half-written table and never destroys the results of an earlier run.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from centile.errors import OutputError


@dataclass
class Staging:
    """A temporary folder whose files are moved into ``target`` on commit."""

    target: Path
    tmp: Path
    timings: dict[str, float] = field(default_factory=dict)
    #: for an output URL (:func:`staged_url`): the run prefix the files went to, once committed
    url: str | None = None
    #: for an output URL: staged files that are a previous run's objects (downloaded for stage reuse),
    #: by name -> (the local download, the object), copied within the store instead of uploaded
    copies: dict[str, tuple[Path, str]] = field(default_factory=dict)

    @property
    def spill(self) -> Path:
        """A folder beside the target for DuckDB to spill to beyond its memory limit; removed with
        the staging folder (and, after a killed run, by the next run's stale-folder clean-up)."""
        return self.target.parent / f".{self.target.name}.centile-spill-{os.getpid()}"

    def path(self, name: str) -> Path:
        """Where to write output ``name`` while the job runs."""
        p = self.tmp / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    @contextlib.contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[stage] = round(time.perf_counter() - t0, 4)


@contextlib.contextmanager
def staged_output(target: str | os.PathLike[str]) -> Iterator[Staging]:
    """Stage outputs for ``target``; move them into place only if the block succeeds.

    Files of an earlier run that the new run does not write are kept; files it
    does write are replaced one by one with ``os.replace`` (atomic per file on
    the same file system). Sub-folders (e.g. partitioned tables) are replaced
    whole.
    """
    from centile import urls

    if urls.is_url(str(target)) or urls.mangled(target):
        raise OutputError(f"--out {target}: only `centile run` writes to a URL (a new run prefix and a pointer "
                          "file); give this job a local folder")
    target = Path(target)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {target}: {exc.strerror}; "
                          "choose a writable --out folder") from exc
    with folder_lock(target.resolve()):
        try:
            tmp = Path(tempfile.mkdtemp(prefix=".centile-tmp-", dir=target))
        except OSError as exc:
            raise OutputError(f"cannot write into {target}: {exc.strerror}; choose a writable --out folder") from None
        yield from _commit_files(target, tmp)


def _commit_files(target: Path, tmp: Path) -> Iterator[Staging]:
    staging = Staging(target=target, tmp=tmp)
    try:
        yield staging
        for item in sorted(tmp.iterdir()):
            dest = target / item.name
            if item.is_dir():
                if dest.exists():
                    old = target / f".centile-old-{item.name}-{os.getpid()}"
                    os.replace(dest, old)
                    os.replace(item, dest)
                    shutil.rmtree(old, ignore_errors=True)
                else:
                    os.replace(item, dest)
            else:
                os.replace(item, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(staging.spill, ignore_errors=True)


def fingerprint(path: Path, *, full_hash_limit: int = 64 << 20) -> dict[str, Any]:
    """Size, mtime and a content fingerprint of one input file.

    Files up to ``full_hash_limit`` bytes are hashed whole; larger ones by
    their size plus first and last 4 MiB, which catches every rewrite that
    matters in practice without reading gigabytes.
    """
    st = path.stat()
    h = hashlib.blake2b(digest_size=16)
    with path.open("rb") as fh:
        if st.st_size <= full_hash_limit:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
            kind = "blake2b"
        else:
            h.update(fh.read(4 << 20))
            fh.seek(st.st_size - (4 << 20))
            h.update(fh.read(4 << 20))
            h.update(str(st.st_size).encode())
            kind = "blake2b-head-tail"
    return {"path": str(path), "bytes": st.st_size, "mtime": int(st.st_mtime),
            "fingerprint": f"{kind}:{h.hexdigest()}"}


def versions() -> dict[str, str]:
    """Versions of centile and the libraries whose behaviour shapes the results."""
    from importlib import metadata

    out = {}
    for dist in ("centile", "duckdb", "polars", "numba", "numpy", "pyarrow"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def build_manifest(job: str, *, as_of: str | None, inputs: dict[str, Any], config: dict[str, Any],
                   rows: dict[str, Any], summary: dict[str, Any], stages: dict[str, Any] | None = None,
                   notes: list[str] | None = None, timings: dict[str, Any] | None = None) -> dict[str, Any]:
    """The manifest of one job's output folder: what ran, over which inputs, with which config.

    ``centile run`` adds ``stages`` (status, key, files per stage), ``notes`` and ``timings``;
    :func:`write_manifest` adds the library versions and the staging timings.
    """
    import datetime as dt

    doc: dict[str, Any] = {"job": job, "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                           "as_of": as_of, "inputs": inputs, "config": config}
    if stages is not None:
        doc["stages"] = stages
    doc["rows"] = rows
    if notes is not None:
        doc["notes"] = notes
    doc["summary"] = summary
    if timings is not None:
        doc["versions"] = versions()
        doc["timings_s"] = timings
    return doc


def write_manifest(staging: Staging, manifest: dict[str, Any]) -> Path:
    """Write ``manifest.json`` into the staging folder (merging timings)."""
    doc = {**manifest, "timings_s": {**manifest.get("timings_s", {}), **staging.timings}}
    doc.setdefault("versions", versions())
    p = staging.path("manifest.json")
    p.write_text(json.dumps(doc, indent=2, default=str, sort_keys=False) + "\n")
    return p


def exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2(RENAME_EXCHANGE)``); False if unsupported."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    rc = fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return rc == 0


@dataclass(frozen=True)
class LockWait:
    """How to wait for another run's lock on an output folder: at most ``timeout`` seconds
    (None: as long as it takes), telling ``notify`` (else the log) when waiting starts and ends."""

    timeout: float | None = None
    notify: Callable[[str], None] | None = None


_LOCK_WAIT: contextvars.ContextVar[LockWait | None] = contextvars.ContextVar("centile_lock_wait", default=None)
#: seconds between two attempts to take a lock another run holds
LOCK_POLL_S = 0.2


@contextlib.contextmanager
def waiting_for_lock(timeout: float | None = None,
                     notify: Callable[[str], None] | None = None) -> Iterator[LockWait]:
    """Within the block, a job whose output folder is locked by another run waits for it (at most
    ``timeout`` seconds) instead of failing at once; ``centile <command> --wait`` uses this.

    >>> with waiting_for_lock(600):                     # doctest: +SKIP
    ...     run_pipeline(cfg, "out")
    """
    if timeout is not None and timeout < 0:
        raise ValueError(f"timeout must be >= 0 seconds, got {timeout}")
    wait = LockWait(timeout, notify)
    token = _LOCK_WAIT.set(wait)
    try:
        yield wait
    finally:
        _LOCK_WAIT.reset(token)


@contextlib.contextmanager
def folder_lock(out: Path, wait: LockWait | None = None) -> Iterator[None]:
    """One writer per output folder: an exclusive ``fcntl`` lock on ``.<out>.centile.lock`` beside it.

    A second run into the same folder fails at once (:class:`OutputError`, exit 1) instead
    of deleting the first run's temporary folder -- or, with ``wait`` (default: the one set by
    :func:`waiting_for_lock`), waits until the first run is done. The lock dies with its
    process, so a killed run never leaves the folder locked.
    """
    import fcntl

    wait = wait if wait is not None else _LOCK_WAIT.get()
    path = out.parent / f".{out.name}.centile.lock"
    try:
        fh = open(path, "a+")  # noqa: SIM115 - held for the whole block
    except OSError as exc:
        raise OutputError(f"cannot create {path}: {exc.strerror}; choose a writable --out folder") from None
    try:
        t0 = time.monotonic()
        waited = False
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                fh.seek(0)
                owner = fh.read().strip() or "another process"
            if wait is None:
                raise OutputError(f"--out {out} is being written by another centile run ({owner}); wait for it "
                                  "to finish (--wait) or choose another --out folder") from None
            took = time.monotonic() - t0
            if wait.timeout is not None and took >= wait.timeout:
                raise OutputError(f"--out {out} is still being written by another centile run ({owner}) after "
                                  f"waiting {took:.0f} s (--wait-timeout {wait.timeout:g}); wait longer or "
                                  "choose another --out folder") from None
            if not waited:
                waited = True
                limit = f" (at most {wait.timeout:g} s)" if wait.timeout is not None else ""
                _tell(wait, f"--out {out} is being written by another centile run ({owner}); waiting for it "
                            f"to finish{limit}")
            time.sleep(LOCK_POLL_S if wait.timeout is None else
                       max(0.0, min(LOCK_POLL_S, wait.timeout - took)))
        if waited:
            _tell(wait, f"--out {out} is free after {time.monotonic() - t0:.1f} s; continuing")
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        yield
    finally:
        fh.close()


def _tell(wait: LockWait, msg: str) -> None:
    if wait.notify is not None:
        wait.notify(msg)
    else:
        import logging

        logging.getLogger(__name__).warning(msg)


#: the object under an output URL that names its current run (written last)
POINTER = "LATEST"


def _pointer(fs: Any, base: str) -> str | None:
    """The run id ``<base>/LATEST`` names (None before the first run)."""
    try:
        return fs.cat_file(f"{base}/{POINTER}").decode().strip() or None
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def staged_url(url: str, keep_runs: int = 0) -> Iterator[Staging]:
    """A local staging folder for an output URL (an object store has no rename): when the block
    succeeds, every file is uploaded under a new run prefix ``<url>/runs/<run id>/``, then the
    pointer object ``<url>/LATEST`` is written with the run id, last.

    What that guarantees: a reader who reads ``LATEST`` and then the prefix it names sees a complete
    run (each object write is atomic on s3, gcs and azure); a run that fails before or while
    uploading leaves ``LATEST`` as it was (a partial prefix it uploaded is removed when possible, else
    left unnamed by the pointer). ``LATEST`` moves only if it still names the run it named when this
    run started, read again just before the write: a run published meanwhile is not overwritten (a
    window of one request between that read and the write remains; object stores offer no
    compare-and-swap through fsspec). Staged files listed in ``Staging.copies`` (stages reused from
    the previous run) are copied within the store rather than uploaded.

    ``keep_runs`` > 0: after publishing, prefixes under ``runs/`` other than the newest ``keep_runs``
    are removed, but only those older than the run that was current when this one started, so a
    run started meanwhile (still uploading) is never removed under it."""
    import datetime as dt
    import logging
    import uuid

    from centile import urls

    fs, base = urls.filesystem(url)
    base = base.rstrip("/")
    started_from = _pointer(fs, base)
    root = Path(tempfile.mkdtemp(prefix="centile-url-out-"))
    staging = Staging(target=root / "run", tmp=root / "staging")
    staging.tmp.mkdir()
    # ids sort by start time (to the microsecond), which prune_runs relies on
    run_id = f"{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%S.%fZ')}-{uuid.uuid4().hex[:8]}"
    prefix = f"{base}/runs/{run_id}"
    try:
        yield staging
        try:
            for f in sorted(p for p in staging.tmp.rglob("*") if p.is_file()):
                name = f.relative_to(staging.tmp).as_posix()
                local, obj = staging.copies.get(name, (None, None))
                if local is not None and local.exists() and os.path.samefile(local, f):
                    fs.copy(obj, f"{prefix}/{name}")  # a reused stage's file: the same bytes, no upload
                else:
                    fs.put_file(str(f), f"{prefix}/{name}")
            now = _pointer(fs, base)
            if now != started_from:
                raise OutputError(f"another run ({now}) was published to {url} while this one ran: {POINTER} "
                                  f"still names it, not this run. This run's files are complete under "
                                  f"{urls.full(fs, prefix)}; run again to publish after it (unchanged stages "
                                  "are reused), and do not run two jobs into one URL at once")
            fs.pipe_file(f"{base}/{POINTER}", (run_id + "\n").encode())
        except OutputError:
            raise
        except Exception as exc:
            with contextlib.suppress(Exception):
                fs.rm(prefix, recursive=True)
            raise OutputError(f"cannot write the run to {url} ({type(exc).__name__}: {exc}); {POINTER} still names "
                              "the previous run; check the credentials and the bucket, and run again") from exc
        staging.url = urls.full(fs, prefix)
        if keep_runs > 0 and started_from is not None:
            try:
                gone = prune_runs(fs, base, keep_runs, keep={run_id}, older_than=started_from)
            except Exception as exc:  # the run is published; old prefixes stay until the next run
                logging.getLogger(__name__).warning("cannot remove old runs under %s/runs (%s: %s); they stay",
                                                    url, type(exc).__name__, exc)
            else:
                if gone:
                    logging.getLogger(__name__).info("removed %d old runs under %s/runs: %s", len(gone), url,
                                                     ", ".join(gone))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def prune_runs(fs: Any, base: str, keep_runs: int, *, keep: set[str], older_than: str) -> list[str]:
    """Remove ``<base>/runs/<id>`` prefixes except the newest ``keep_runs`` ids and ``keep``, and only
    ids that sort before ``older_than`` (run ids start with their UTC start time); returns the ids
    removed."""
    try:
        ids = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(f"{base}/runs", detail=False))
    except FileNotFoundError:
        return []
    kept = set(ids[-keep_runs:]) | keep
    gone = [i for i in ids if i not in kept and i < older_than]
    for i in gone:
        fs.rm(f"{base}/runs/{i}", recursive=True)
    return gone


def current_run(url: str) -> str | None:
    """The URL of the run ``<url>/LATEST`` names (None before the first run)."""
    from centile import urls

    fs, base = urls.filesystem(url)
    run_id = _pointer(fs, base.rstrip("/"))
    return None if run_id is None else urls.full(fs, f"{base.rstrip('/')}/runs/{run_id}")


def run_url(url: str) -> str:
    """The run an output URL holds, for reading: the run ``<url>/LATEST`` names, else ``url`` itself
    when it is a run prefix (it holds ``manifest.json``).

    Raises
    ------
    InputError
        Neither: no run there.
    """
    from centile import urls
    from centile.errors import InputError

    current = current_run(url)
    if current is not None:
        return current
    fs, path = urls.filesystem(url)
    if fs.exists(f"{path.rstrip('/')}/manifest.json"):
        return urls.full(fs, path.rstrip("/"))
    raise InputError(f"--results {url}: no run there (neither {POINTER} nor manifest.json); pass the --out URL of "
                     "centile run, or one of its runs/<id> prefixes")


def download_run(url: str, dest: Path) -> Path:
    """Every file of the run :func:`run_url` finds at ``url``, copied into the folder ``dest``."""
    from centile import urls

    fs, path = urls.filesystem(run_url(url))
    dest.mkdir(parents=True, exist_ok=True)
    for f in fs.find(path):
        rel = f[len(path):].lstrip("/")
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(f, str(dest / rel))
    return dest


def fetch_previous(url: str, wanted: Callable[[dict[str, Any]], list[str]], dest: Path,
                   staging: Staging) -> tuple[dict[str, Any], str | None]:
    """The manifest of the run ``<url>/LATEST`` names (empty when there is none) and that run's URL
    (None before the first run), with the files ``wanted(manifest)`` lists downloaded into ``dest``
    and recorded in ``staging.copies``: a run to a URL reuses unchanged stages as a run into a
    folder does. A file that cannot be read is left
    out (its stage is then recomputed)."""
    from centile import urls

    prev = current_run(url)
    if prev is None:
        return {}, None
    fs, path = urls.filesystem(prev)
    try:
        doc = json.loads(fs.cat_file(f"{path}/manifest.json"))
    except (OSError, ValueError):
        return {}, prev
    if not isinstance(doc, dict) or doc.get("job") != "run":
        return {}, prev
    dest.mkdir(parents=True, exist_ok=True)
    for name in wanted(doc):
        obj = f"{path}/{name}"
        try:
            fs.get_file(obj, str(dest / name))
        except (OSError, ValueError):
            with contextlib.suppress(OSError):
                (dest / name).unlink()
            continue
        staging.copies[name] = (dest / name, obj)
    return doc, prev


@contextlib.contextmanager
def staged_folder(out: Path) -> Iterator[Staging]:
    """A temporary folder beside ``out`` that replaces ``out`` whole when the block succeeds."""
    out = out.resolve()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {out.parent}: {exc.strerror}; choose a writable --out folder") from None
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file; pass a folder")
    with folder_lock(out), _staged_folder(out) as staging:
        yield staging


@contextlib.contextmanager
def _staged_folder(out: Path) -> Iterator[Staging]:
    # under the folder lock: no other run is using these, they are left behind by a killed run
    for stale in out.parent.glob(f".{out.name}.centile-*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    tmp = out.parent / f".{out.name}.centile-tmp-{os.getpid()}"
    try:
        tmp.mkdir()
    except OSError as exc:
        raise OutputError(f"cannot create {tmp}: {exc.strerror}; choose a writable --out folder") from None
    staging = Staging(target=out, tmp=tmp)
    try:
        yield staging
        if not out.exists():
            os.replace(tmp, out)
        elif exchange(tmp, out):
            shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the previous run
        else:
            old = out.parent / f".{out.name}.centile-old-{os.getpid()}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging.spill, ignore_errors=True)
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
