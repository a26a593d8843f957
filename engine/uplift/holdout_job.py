"""``centile holdout``: reproducible control groups for the configured campaigns, written atomically."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import polars as pl

from centile.config import Config
from centile.uplift.holdout import (
    HoldoutResult,
    assign,
    customers_for_holdout,
    holdout_summary_doc,
    parse_holdout_spec,
    write_holdout,
)


def run_holdout(cfg: Config, out: str | Path, *, segments: str | Path | pl.DataFrame | None = None,
                progress: Any = None) -> HoldoutResult:
    """``centile holdout``: read the customers, assign arms, write atomically with a manifest."""
    from centile.backend.session import open_session
    from centile.features.compute import manifest
    from centile.io.outputs import staged_output, write_manifest
    from centile.uplift.compute import read_segments

    spec = parse_holdout_spec(cfg.section("holdout"))
    seg = segments if isinstance(segments, pl.DataFrame) or segments is None else read_segments(segments)
    with staged_output(out) as staging:
        with open_session(cfg, progress, only=("orders", "customers")) as s:
            customers = customers_for_holdout(s, spec, seg)
            with staging.timed("holdout"):
                res = assign(customers, spec, seed=cfg.seed, as_of=s.as_of)
            rows = write_holdout(res, staging)
            write_manifest(staging, manifest(s, "holdout", holdout_summary_doc(res), rows))
        return replace(res, out=staging.target)
