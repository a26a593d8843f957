"""Customer partitions for basket counting and recommendations: where one partition's lines come from,
and where per-partition state waits between passes.

A pass reads the lines of one partition at a time (:class:`SessionLines`: the session's views limited
to the partition; :class:`FrameLines`: an in-memory frame split by customer), computes integer counts
that merge by addition, and may park what later passes need about the partition's customers
(:class:`Parked`: in memory for a single partition, else a file per partition in a scratch folder).
"""

from __future__ import annotations

import pickle
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from centile.backend.partitions import Partitioning
from centile.runtime import Progress


class FrameLines:
    """Lines already in memory, split into ``count`` parts by the customer's row in the sorted ids
    (row modulo ``count``); one part is the frame itself."""

    def __init__(self, lines: pl.DataFrame, count: int = 1) -> None:
        self.lines = lines
        self.count = max(1, int(count))

    def each(self, label: str) -> Iterator[pl.DataFrame]:
        if self.count == 1:
            yield self.lines
            return
        ids = self.lines.get_column("customer_id").unique().sort()
        part = pl.DataFrame({"customer_id": ids, "__part": np.arange(ids.len(), dtype=np.int64) % self.count})
        tagged = self.lines.join(part, on="customer_id", how="left", maintain_order="left")
        for p in range(self.count):
            yield tagged.filter(pl.col("__part") == p).drop("__part")

    def distinct_items(self, where: pl.Expr | None = None) -> pl.Series:
        lines = self.lines if where is None else self.lines.filter(where)
        return lines.get_column("item").unique().sort()


class SessionLines:
    """Lines read by ``read(session)`` with the session's views limited to one customer-hash
    partition at a time (``partitions.observe`` sees each)."""

    def __init__(self, s: Any, parts: Partitioning, read: Callable[[Any], pl.DataFrame],
                 progress: Progress | None = None) -> None:
        self.s = s
        self.parts = parts
        self.read = read
        self.progress = progress
        self.count = parts.count

    @property
    def remote(self) -> bool:
        """Do the partitions run on the session's cluster (``read`` then goes there: a module-level
        function or a :func:`functools.partial` of one)?"""
        return self.s.distributed()

    def each(self, label: str) -> Iterator[pl.DataFrame]:
        for part in self.parts.each(label, self.progress):
            with self.s.partition(self.parts, part, label):
                lines = self.read(self.s)
            yield lines
            del lines


class Parked:
    """Per-partition state between passes: kept in memory for one partition, else pickled into a
    scratch folder (inside ``under`` when given) and read back one partition at a time."""

    def __init__(self, count: int, under: str | Path | None = None) -> None:
        self.count = count
        self.mem: dict[int, Any] = {}
        self.dir: Path | None = None
        if count > 1:
            if under is not None:
                Path(under).mkdir(parents=True, exist_ok=True)
            self.dir = Path(tempfile.mkdtemp(prefix="centile-baskets-", dir=under))

    def put(self, part: int, state: Any) -> None:
        if self.dir is None:
            self.mem[part] = state
            return
        with open(self.dir / f"{part}.pkl", "wb") as f:
            pickle.dump(state, f, protocol=5)

    def get(self, part: int) -> Any:
        if self.dir is None:
            return self.mem[part]
        with open(self.dir / f"{part}.pkl", "rb") as f:
            return pickle.load(f)  # noqa: S301 - our own file, written above in this run

    def close(self) -> None:
        self.mem.clear()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Parked:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
