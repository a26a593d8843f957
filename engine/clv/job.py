"""``centile clv``: fit, predict and write customer value for the configured inputs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import polars as pl

from centile.backend import open_inputs
from centile.clv.compute import (
    ClvResult,
    ClvSettings,
    clv_settings,
    clv_summary_doc,
    compute_clv,
    write_clv,
)
from centile.config import Config
from centile.errors import InputError
from centile.io.outputs import staged_output, write_manifest
from centile.runtime import Progress, numba_threads


def read_groups(spec: str) -> pl.DataFrame:
    """``FILE[:COLUMN]`` → a frame of customer_id and the group column (default: ``club``,
    then ``segment``, else the second column)."""
    path, _, col = spec.partition(":") if not Path(spec).exists() else (spec, "", "")
    p = Path(path)
    try:
        df = pl.read_parquet(p) if p.suffix != ".csv" else pl.read_csv(p)
    except Exception as exc:  # polars raises several error types for unreadable files
        raise InputError(f"--groups {spec}: cannot read {p}: {exc}") from None
    if "customer_id" not in df.columns:
        raise InputError(f"--groups {spec}: {p} has no customer_id column")
    if not col:
        col = next((c for c in ("club", "segment") if c in df.columns),
                   next((c for c in df.columns if c != "customer_id"), ""))
    if col not in df.columns or col == "customer_id":
        raise InputError(f"--groups {spec}: no column {col!r} in {p}; columns: {', '.join(df.columns)}")
    return df.select("customer_id", col)


def run_clv(cfg: Config, out: str | Path, *, settings: ClvSettings | None = None,
            groups: Sequence[pl.DataFrame] | None = None, progress: Progress | None = None) -> ClvResult:
    """Open the session, compute CLV and write it atomically into ``out`` with a manifest."""
    from centile.features.compute import manifest

    st = settings or clv_settings(cfg)
    with staged_output(out) as staging, open_inputs(cfg, progress, only=("orders",), spill=staging.spill) as s:
        with staging.timed("clv"), numba_threads(cfg.threads):
            res = compute_clv(s, st, groups=groups, progress=progress)
        rows = write_clv(res, staging)
        rows["rejects"] = s.total_rejects
        write_manifest(staging, manifest(s, "clv", {"clv": clv_summary_doc(res)}, rows))
    return replace(res, out=staging.target)
