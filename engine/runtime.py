"""Threads and progress: what every job shares about how it runs, not what it computes.

``--threads`` reaches DuckDB through the backend's connection settings, Polars
through ``POLARS_MAX_THREADS`` (set by the CLI before Polars is imported),
scikit-learn through its ``n_jobs`` arguments, and numba through
:func:`numba_threads`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

#: a callback that shows what a long job is doing ("features: orders", ...)
Progress = Callable[[str], None]


def duckdb_connect(database: str = ":memory:") -> Any:
    """A DuckDB connection as every part of centile opens one: without DuckDB's progress bar,
    which it draws on stdout for queries over two seconds even when stdout is a pipe (it corrupted
    ``centile bench --json`` at 1M customers); centile's own progress goes to stderr."""
    import duckdb

    con = duckdb.connect(database)
    con.execute("SET enable_progress_bar = false")
    return con


@contextlib.contextmanager
def numba_threads(threads: int | None) -> Iterator[None]:
    """Limit numba's worker threads for the block (None: leave as is), then restore."""
    if not threads:
        yield
        return
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(before)


def release_heap() -> None:
    """Collect cycles, then hand the C heap's free pages back to the system (glibc ``malloc_trim``).

    NumPy's arrays below glibc's mmap threshold (which grows to 32 MB after large frees) come from
    the heap; once freed their pages stay in this process, so a stage's temporaries raised the
    resident size of every later stage. A no-op where the C library has no ``malloc_trim``."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    global _TRIM
    if _TRIM is None:
        try:
            _TRIM = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _TRIM = False
    if _TRIM:
        _TRIM(0)


_TRIM: Any = None


def rss_mb() -> float | None:
    """This process's resident set size now (``VmRSS``) in MB; None where ``/proc`` does not say."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration, ValueError):
        return None
    return round(kb / 1024, 1)


def peak_rss_mb(reset: bool = False) -> float | None:
    """This process's peak resident set size (``VmHWM``) in MB since start or the last reset;
    ``reset=True`` then starts a new peak (Linux ``clear_refs``), so a caller can measure the peak of
    one step. None where ``/proc`` does not say (not Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration, ValueError):
        return None
    if reset:
        with contextlib.suppress(OSError):
            with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
                f.write("5")
    return round(kb / 1024, 1)
