"""Percentile ranks and overlap-free 1 % clubs over the feature table.

Data flow: features (Polars, one row per customer in dense-index order)
→ club metrics, tie-breakers and eligibility evaluated by DuckDB from the
config's SQL expressions → numba kernels (ranks, top-k selection, priority or
stable-matching assignment) → ``ranks.parquet``, ``clubs.parquet``,
``club_summary.parquet``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import duckdb
import numpy as np
import polars as pl

from .config import ClubSpec, Config
from .errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClubInputs:
    """The numeric inputs of the kernels for the clubs that can be formed."""

    clubs: tuple[ClubSpec, ...]
    keys: np.ndarray          # float64[C, n, m]: oriented so larger is better; NaN primary = ineligible
    scores: np.ndarray        # float64[C, n]: the primary metric as defined (not oriented)
    groups: np.ndarray | None  # int64[n] dense group codes, or None
    group_labels: list[Any]
    skipped: dict[str, str]
    eligible: dict[str, int]


@dataclass(frozen=True)
class ClubsResult:
    """What ``run_clubs`` produced."""

    clubs: pl.DataFrame
    summary: pl.DataFrame
    ranks: pl.DataFrame
    skipped: dict[str, str]
    notes: list[str] = field(default_factory=list)
    stability: pl.DataFrame | None = None
    strategy: str = "priority"
    universe: int = 0


def _eval(con: duckdb.DuckDBPyConnection, exprs: dict[str, str], what: str) -> pl.DataFrame:
    """Evaluate named SQL expressions over the registered ``features`` (row order kept)."""
    cols = ", ".join(f"({e}) AS \"{n}\"" for n, e in exprs.items())
    try:
        return con.sql(f"SELECT {cols} FROM features").pl()
    except duckdb.Error as exc:
        names = [r[0] for r in con.execute("DESCRIBE features").fetchall()]
        raise ConfigError(f"{what}: {str(exc).splitlines()[0]}; the features table has: "
                          f"{', '.join(names)}") from None


def _numeric(s: pl.Series, where: str) -> np.ndarray:
    if s.dtype == pl.Boolean:
        s = s.cast(pl.Float64)
    if not s.dtype.is_numeric():
        raise ConfigError(f"{where} is of type {s.dtype}, not a number")
    return s.cast(pl.Float64).fill_null(np.nan).to_numpy().astype(np.float64, copy=False)


def club_inputs(features: pl.DataFrame, cfg: Config) -> ClubInputs:
    """Evaluate every club's metric, tie-breakers and eligibility over ``features``.

    A club whose metric is NULL for every customer (its source table or
    column is absent) is skipped with a note, never filled with zeros.
    """
    n = features.height
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET preserve_insertion_order = true")
        con.register("features", features)
        kept: list[ClubSpec] = []
        skipped: dict[str, str] = {}
        blocks, scores, eligible = [], [], {}
        m = 1 + max((len(c.tie_break) for c in cfg.clubs), default=0)
        for club in cfg.clubs:
            exprs = {"metric": club.metric, "eligible": club.eligible or "TRUE"}
            exprs.update({f"tb{i}": t for i, t in enumerate(club.tie_break)})
            df = _eval(con, exprs, f"club {club.name}")
            metric = _numeric(df["metric"], f"club {club.name}: metric {club.metric!r}")
            if n and np.isnan(metric).all():
                skipped[club.name] = (f"metric {club.metric!r} is null for every customer "
                                      "(its input table or column is absent)")
                continue
            if df["eligible"].dtype != pl.Boolean:
                raise ConfigError(f"club {club.name}: eligibility {club.eligible!r} is not a true/false "
                                  "predicate")
            elig = df["eligible"].fill_null(False).to_numpy() & ~np.isnan(metric)
            sign = -1.0 if club.direction == "asc" else 1.0
            key = np.full((n, m), np.nan)
            key[:, 0] = np.where(elig, sign * metric, np.nan)
            for i, t in enumerate(club.tie_break):
                key[:, 1 + i] = sign * _numeric(df[f"tb{i}"], f"club {club.name}: tie_break {t!r}")
            blocks.append(key)
            scores.append(metric)
            eligible[club.name] = int(elig.sum())
            kept.append(club)
        groups, labels = None, []
        if cfg.group_by:
            g = _eval(con, {"g": cfg.group_by}, f"group_by {cfg.group_by!r}")["g"]
            codes = g.cast(pl.String).fill_null("(none)").cast(pl.Categorical)
            labels = codes.cat.get_categories().to_list()
            groups = codes.to_physical().cast(pl.Int64).to_numpy()
    finally:
        con.close()
    keys = np.stack(blocks) if blocks else np.empty((0, n, m))
    sc = np.stack(scores) if scores else np.empty((0, n))
    return ClubInputs(tuple(kept), np.ascontiguousarray(keys), sc, groups, labels, skipped, eligible)


def tier_sizes(clubs: tuple[ClubSpec, ...], universe: int) -> np.ndarray:
    """ceil(share × N) per club and tier, N = all customers in the universe."""
    tiers = max((len(c.shares) for c in clubs), default=0)
    out = np.zeros((len(clubs), tiers), dtype=np.int64)
    for i, c in enumerate(clubs):
        for t, share in enumerate(c.shares):
            # round first: 0.07 * 100 is 7.000000000000001 in floating point
            out[i, t] = math.ceil(round(share * universe, 9))
    return out


def customer_hashes(ids: pl.Series, seed: int) -> np.ndarray:
    """Seeded 64-bit hashes of the original customer ids (the last tie-breaker)."""
    from centile.kernels._hash import hash_int64, hash_strings

    if ids.dtype.is_integer():
        return hash_int64(ids.cast(pl.Int64).to_numpy(), seed)
    arr = ids.cast(pl.String).to_arrow()
    if hasattr(arr, "combine_chunks"):
        arr = arr.combine_chunks()
    import pyarrow as pa

    arr = arr.cast(pa.large_string())
    _validity, offsets, data = arr.buffers()
    off = np.frombuffer(offsets, dtype=np.int64)[arr.offset: arr.offset + len(arr) + 1]
    buf = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
    return hash_strings(np.ascontiguousarray(off), buf, seed)
