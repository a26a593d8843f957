"""``centile attribution``: every attribution model for the configured inputs, written atomically."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import polars as pl

from centile.attribution.compute import (
    AttributionResult,
    AttributionSettings,
    attribution_from_session,
    attribution_settings,
    summary_doc,
    write_attribution,
)
from centile.config import Config
from centile.errors import InputError


def _read(spec: str | Path | pl.DataFrame | None, what: str) -> pl.DataFrame | None:
    if spec is None or isinstance(spec, pl.DataFrame):
        return spec
    p = Path(spec)
    try:
        return pl.read_csv(p) if p.suffix.lower() == ".csv" else pl.read_parquet(p)
    except Exception as exc:  # polars raises several error types for unreadable files
        raise InputError(f"--{what} {p}: cannot read it: {exc}") from None


def run_attribution(cfg: Config, out: str | Path, *, settings: AttributionSettings | None = None,
                    segments: str | Path | pl.DataFrame | None = None,
                    uplift: str | Path | pl.DataFrame | None = None, progress: Any = None) -> AttributionResult:
    """Open the inputs, attribute and write ``attribution*.parquet`` and a manifest into ``out``.

    ``segments``: customer_id + segment columns (a frame or a Parquet/CSV file, e.g. a run's
    ``segments.parquet``); ``uplift``: an ``uplift.parquet`` to compare with.
    """
    from centile.backend import open_inputs
    from centile.features.compute import manifest
    from centile.io.outputs import staged_output, write_manifest
    from centile.runtime import numba_threads

    st = settings or attribution_settings(cfg)
    seg = _read(segments, "segments")
    if seg is not None and "customer_id" not in seg.columns:
        raise InputError(f"--segments {segments}: needs a customer_id column (has {', '.join(seg.columns[:12])})")
    upl = _read(uplift, "uplift")
    if upl is not None and not {"campaign", "breakdown", "outcome", "method", "incremental"} <= set(upl.columns):
        raise InputError(f"--uplift {uplift}: not an uplift table (needs campaign, breakdown, outcome, method, "
                         "incremental; use the uplift.parquet of centile uplift or centile run)")
    with staged_output(out) as staging, open_inputs(cfg, progress, only=("orders", "touchpoints", "contacts"),
                                                                 spill=staging.spill) as s:
        with staging.timed("attribution"), numba_threads(cfg.threads):
            res = attribution_from_session(s, st, seg, upl, progress=progress)
        rows = write_attribution(res, staging)
        rows["rejects"] = s.total_rejects
        write_manifest(staging, manifest(s, "attribution", {"attribution": summary_doc(res)}, rows))
    return replace(res, out=staging.target)
