"""Jobs that chain stages: features → ranks → clubs (``centile clubs`` and ``centile run``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from centile.backend import open_inputs
from centile.clubs.compute import ClubsResult, clubs_summary_doc, form_clubs, write_clubs
from centile.config import Config
from centile.errors import InputError
from centile.features.compute import FEATURE_TABLES, FeaturesResult, manifest, write_features
from centile.io.outputs import build_manifest, fingerprint, staged_output, write_manifest
from centile.runtime import Progress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClubsJobResult:
    """Everything a pipeline run produced (also written to ``out``)."""

    out: Path
    features: FeaturesResult | None
    clubs: ClubsResult


def read_features(path: str | Path) -> pl.DataFrame:
    """Read a feature table written by ``centile features`` (or built elsewhere)."""
    p = Path(path)
    if p.is_dir():
        p = p / "features.parquet"
    if not p.exists():
        raise InputError(f"--features {path}: no such file; pass features.parquet or the folder holding it")
    try:
        return pl.read_parquet(p)
    except Exception as exc:  # polars raises several error types for unreadable files
        raise InputError(f"--features {p}: cannot read it as Parquet: {exc}") from None


def feature_columns(path: str | Path) -> list[str]:
    """The column names of a feature table file (its schema only is read)."""
    p = Path(path)
    p = p / "features.parquet" if p.is_dir() else p
    if not p.exists():
        raise InputError(f"--features {path}: no such file; pass features.parquet or the folder holding it")
    try:
        return list(pl.read_parquet_schema(p))
    except Exception as exc:  # polars raises several error types for unreadable files
        raise InputError(f"--features {p}: cannot read it as Parquet: {exc}") from None


def run_clubs(cfg: Config, out: str | Path, *, features: str | Path | None = None, strategy: str | None = None,
              previous: str | Path | None = None, progress: Progress | None = None) -> ClubsJobResult:
    """Features (computed from the inputs, or read from ``features``) → ranks → clubs, written to ``out``.

    Returns a :class:`RunResult`; ``result.clubs.clubs`` is the membership table
    as a Polars DataFrame.
    """
    with staged_output(out) as staging:
        if features is not None:
            with staging.timed("read_features"):
                table = read_features(features)
            if progress:
                progress("ranking and assigning clubs")
            with staging.timed("clubs"):
                res = form_clubs(table, cfg, strategy=strategy, previous=previous)
            rows = write_clubs(res, staging)
            p = Path(features)
            p = p / "features.parquet" if p.is_dir() else p
            write_manifest(staging, build_manifest(
                "clubs", as_of=None, inputs={"features": [fingerprint(p)]}, config=cfg.as_dict(), rows=rows,
                summary={"clubs": clubs_summary_doc(res)}))
            return ClubsJobResult(staging.target, None, res)
        with open_inputs(cfg, progress, only=FEATURE_TABLES, spill=staging.spill) as s:
            fres = write_features(s, staging, progress)
            if progress:
                progress("ranking and assigning clubs")
            with staging.timed("clubs"):
                res = form_clubs(fres.features, cfg, strategy=strategy, previous=previous)
            rows: dict[str, Any] = {"features": fres.features.height, "rejects": s.total_rejects}
            rows.update(write_clubs(res, staging))
            write_manifest(staging, manifest(s, "run", {**fres.summary, "clubs": clubs_summary_doc(res)}, rows))
        return ClubsJobResult(staging.target, fres, res)
