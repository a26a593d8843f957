"""``centile segments``: features (computed or read) → segments, written atomically."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import polars as pl

from centile.config import Config
from centile.errors import InputError
from centile.segments.compute import (
    SEGMENT_TABLES,
    SegmentsResult,
    form_segments,
    segments_config,
    segments_summary_doc,
    write_segments,
)


def run_segments(cfg: Config, out: str | Path, *, features: str | Path | None = None,
                 clubs: str | Path | None = None, progress: Any = None) -> SegmentsResult:
    """Features (computed, or read from ``features``) → segments, written atomically to ``out``.

    ``clubs`` is a ``clubs.parquet`` (or the folder holding it) whose club
    becomes the ``club`` segmentation.
    """
    from centile.backend import open_inputs
    from centile.backend.session import open_session
    from centile.clubs.job import read_features
    from centile.features.compute import manifest, write_features
    from centile.io.outputs import build_manifest, fingerprint, staged_output, write_manifest

    club_df = None
    if clubs is not None:
        p = Path(clubs)
        p = p / "clubs.parquet" if p.is_dir() else p
        if not p.exists():
            raise InputError(f"--clubs {clubs}: no clubs.parquet there; pass the --out folder of centile clubs")
        club_df = pl.read_parquet(p, columns=["customer_id", "club", "tier"])
    segments_config(cfg)  # fail on a bad config before reading anything
    with staged_output(out) as staging:
        if features is not None:
            with staging.timed("read_features"):
                table = read_features(features)
            customers, as_of = None, cfg.as_of
            if "customers" in cfg.tables:  # demographic rules need the validated customers table
                with staging.timed("read_customers"), open_session(cfg, progress, only=("orders", "customers")) as s:
                    customers, as_of = s.frame("SELECT * FROM customers"), s.as_of
            if progress:
                progress("segments")
            with staging.timed("segments"):
                res = form_segments(table, cfg, customers=customers, clubs=club_df, as_of=as_of)
            rows = write_segments(res, staging)
            p = Path(features)
            p = p / "features.parquet" if p.is_dir() else p
            write_manifest(staging, build_manifest(
                "segments", as_of=None, inputs={"features": [fingerprint(p)]}, config=cfg.as_dict(), rows=rows,
                summary={"segments": segments_summary_doc(res)}))
            return replace(res, out=staging.target)
        with open_inputs(cfg, progress, only=SEGMENT_TABLES, spill=staging.spill) as s:
            fres = write_features(s, staging, progress)
            customers = s.frame("SELECT * FROM customers") if s.has("customers") else None
            if progress:
                progress("segments")
            with staging.timed("segments"):
                res = form_segments(fres.features, cfg, customers=customers, clubs=club_df, as_of=s.as_of,
                                    session=s, kept=s.kept.get("features"))
            rows: dict[str, Any] = {"features": fres.features.height, "rejects": s.total_rejects}
            rows.update(write_segments(res, staging))
            write_manifest(staging, manifest(s, "segments", {**fres.summary, "segments": segments_summary_doc(res)},
                                             rows))
        return replace(res, out=staging.target)
