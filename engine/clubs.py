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
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl

from .config import ClubSpec, Config
from .errors import ConfigError, OutputError

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
            text = g.cast(pl.String).fill_null("(none)")
            labels = text.unique().sort().to_list()
            groups = (text.rank("dense") - 1).cast(pl.Int64).to_numpy()
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


def set_threads(threads: int | None) -> None:
    """Limit numba's worker threads (None: all cores)."""
    if threads:
        import numba

        numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))


def compute_ranks(features: pl.DataFrame, inputs: ClubInputs) -> tuple[pl.DataFrame, np.ndarray]:
    """``ranks.parquet``: customer_id plus ``<club>_rank`` and ``<club>_pct_rank`` per club metric.

    The rank is 1-based and descending in the club's direction (ties share
    the best rank); pct_rank is DuckDB's ``percent_rank()`` over the metric in
    the club's direction, so 1.0 is the best eligible customer. Also returns
    the pct matrix (C, n) used by the best-rank strategy.
    """
    from centile.kernels.percentile import rank_pct_many

    c = len(inputs.clubs)
    cols: dict[str, Any] = {"customer_id": features["customer_id"]}
    if c == 0:
        return pl.DataFrame(cols), np.empty((0, features.height))
    primary = np.asfortranarray(inputs.keys[:, :, 0].T)
    rank, pct = rank_pct_many(primary)
    group_rank = group_pct = None
    if inputs.groups is not None:
        group_rank, group_pct = rank_pct_many(primary, groups=inputs.groups)
    for j, club in enumerate(inputs.clubs):
        r = rank[:, j]
        cols[f"{club.name}_rank"] = pl.Series(r).replace(0, None).cast(pl.Int64)
        cols[f"{club.name}_pct_rank"] = pl.Series(pct[:, j]).fill_nan(None)
        if group_rank is not None:
            cols[f"{club.name}_group_rank"] = pl.Series(group_rank[:, j]).replace(0, None).cast(pl.Int64)
            cols[f"{club.name}_group_pct_rank"] = pl.Series(group_pct[:, j]).fill_nan(None)
    if inputs.groups is not None:
        cols["rank_group"] = pl.Series(inputs.group_labels, dtype=pl.String).gather(inputs.groups)
    return pl.DataFrame(cols), np.ascontiguousarray(pct.T)


def assign(inputs: ClubInputs, universe: int, strategy: str, hashes: np.ndarray,
           pct: np.ndarray) -> dict[str, np.ndarray]:
    """Run the assignment kernel of ``strategy`` (``priority`` or ``best-rank``)."""
    from centile.kernels.clubs import assign_best_rank, assign_priority

    sizes = tier_sizes(inputs.clubs, universe)
    if strategy == "best-rank":
        out = assign_best_rank(inputs.keys, hashes, sizes, pct)
    else:
        out = assign_priority(inputs.keys, hashes, sizes)
    names = ("club", "tier", "position", "size", "threshold", "skipped", "qualified")
    return {**dict(zip(names, out, strict=True)), "target": sizes}


def members_table(features: pl.DataFrame, inputs: ClubInputs, ranks: pl.DataFrame,
                  a: dict[str, np.ndarray]) -> pl.DataFrame:
    """``clubs.parquet``: one row per club member."""
    club, tier = a["club"], a["tier"]
    idx = np.flatnonzero(club >= 0)
    names = [c.name for c in inputs.clubs]
    cidx = club[idx]
    score = inputs.scores[cidx, idx] if len(names) else np.empty(0)
    rank_cols = ranks.select([f"{n}_rank" for n in names]).to_numpy() if names else np.empty((0, 0))
    pct_cols = ranks.select([f"{n}_pct_rank" for n in names]).to_numpy() if names else np.empty((0, 0))
    qualified = a["qualified"][idx]
    qual_lists = [[names[j] for j in np.flatnonzero(row)] for row in qualified]
    return pl.DataFrame({
        "customer_id": features["customer_id"].gather(idx),
        "club": pl.Series(names, dtype=pl.String).gather(cidx) if len(idx) else pl.Series([], dtype=pl.String),
        "tier": pl.Series(tier[idx], dtype=pl.Int8),
        "score": pl.Series(score, dtype=pl.Float64),
        "rank": pl.Series(rank_cols[idx, cidx] if len(idx) else [], dtype=pl.Int64),
        "pct_rank": pl.Series(pct_cols[idx, cidx] if len(idx) else [], dtype=pl.Float64),
        "position": pl.Series(a["position"][idx], dtype=pl.Int64),
        "qualified_for": pl.Series(qual_lists, dtype=pl.List(pl.String)),
    }).sort(["club", "tier", "position"])


def _kpi(features: pl.DataFrame, col: str) -> pl.Expr:
    return pl.col(col) if col in features.columns else pl.lit(None, dtype=pl.Float64)


def summary_table(features: pl.DataFrame, inputs: ClubInputs, members: pl.DataFrame,
                  a: dict[str, np.ndarray]) -> pl.DataFrame:
    """``club_summary.parquet``: per club and tier, size, threshold, overlap and member KPIs."""
    rows = []
    for j, club in enumerate(inputs.clubs):
        sign = -1.0 if club.direction == "asc" else 1.0
        for t in range(a["target"].shape[1]):
            if t >= len(club.shares):
                continue
            thr = float(a["threshold"][j, t])
            rows.append({"club": club.name, "tier": t + 1, "share": club.shares[t],
                         "target_size": int(a["target"][j, t]), "size": int(a["size"][j, t]),
                         "eligible": inputs.eligible[club.name],
                         "threshold": None if math.isnan(thr) else sign * thr,
                         "taken_by_earlier": int(a["skipped"][j, t])})
    base = pl.DataFrame(rows, schema={"club": pl.String, "tier": pl.Int8, "share": pl.Float64,
                                      "target_size": pl.Int64, "size": pl.Int64, "eligible": pl.Int64,
                                      "threshold": pl.Float64, "taken_by_earlier": pl.Int64})
    total_net = features["net_revenue_12m"].sum() if "net_revenue_12m" in features.columns else None
    joined = members.select("customer_id", "club", "tier").join(features, on="customer_id", how="left")
    kpis = joined.group_by("club", "tier").agg(
        (_kpi(joined, "net_revenue_12m").sum() / (total_net or float("nan"))).alias("revenue_share_12m"),
        _kpi(joined, "orders_12m").mean().alias("orders_12m_mean"),
        (_kpi(joined, "gross_revenue_12m").sum() / _kpi(joined, "orders_12m").sum()).alias("aov_12m"),
        (_kpi(joined, "returned_value_12m").sum() / _kpi(joined, "gross_revenue_12m").sum()).alias("return_rate_12m"),
        _kpi(joined, "open_rate_12m").mean().alias("open_rate_12m"),
        _kpi(joined, "click_rate_12m").mean().alias("click_rate_12m"),
    )
    out = base.join(kpis, on=["club", "tier"], how="left")
    order = {c.name: i for i, c in enumerate(inputs.clubs)}
    return (out.with_columns(pl.col("club").replace_strict(order, return_dtype=pl.Int32).alias("_o"))
               .sort("_o", "tier").drop("_o")
               .with_columns(pl.col(c).fill_nan(None) for c in ("revenue_share_12m", "aov_12m",
                                                                "return_rate_12m")))


def stability(members: pl.DataFrame, previous: str | Path) -> pl.DataFrame:
    """Per club: members who stayed, joined and left since the run in ``previous``."""
    path = Path(previous) / "clubs.parquet"
    if not path.exists():
        raise OutputError(f"--previous {previous}: no clubs.parquet there; pass the --out folder of an "
                          "earlier clubs or run")
    prev = pl.read_parquet(path, columns=["customer_id", "club"])
    now = members.select("customer_id", "club")
    if prev["customer_id"].dtype != now["customer_id"].dtype:
        prev = prev.with_columns(pl.col("customer_id").cast(pl.String))
        now = now.with_columns(pl.col("customer_id").cast(pl.String))
    both = now.join(prev, on="customer_id", how="full", suffix="_prev", coalesce=True)
    clubs = sorted(set(now["club"].to_list()) | set(prev["club"].to_list()))
    rows = []
    for c in clubs:
        is_now = both["club"] == c
        was = both["club_prev"] == c
        rows.append({"club": c, "members": int(is_now.fill_null(False).sum()),
                     "stayed": int((is_now & was).fill_null(False).sum()),
                     "joined": int((is_now & ~was.fill_null(False)).fill_null(False).sum()),
                     "left": int((was & ~is_now.fill_null(False)).fill_null(False).sum())})
    return pl.DataFrame(rows, schema={"club": pl.String, "members": pl.Int64, "stayed": pl.Int64,
                                      "joined": pl.Int64, "left": pl.Int64})


def form_clubs(features: pl.DataFrame, cfg: Config, *, strategy: str | None = None,
               previous: str | Path | None = None) -> ClubsResult:
    """Ranks and clubs over a feature table (one row per customer). Writes nothing.

    Parameters
    ----------
    features : polars.DataFrame
        The feature table (``features.parquet`` or ``run_features(...).features``).
    cfg : Config
        Club definitions, ``group_by``, ``seed``, ``threads``.
    strategy : {"priority", "best-rank"}, optional
        Overrides ``cfg.strategy``.
    previous : path, optional
        An earlier output folder to compare memberships with.
    """
    strategy = strategy or cfg.strategy
    if strategy not in ("priority", "best-rank"):
        raise ConfigError(f"strategy {strategy!r}: use 'priority' or 'best-rank'")
    if "customer_id" not in features.columns:
        raise ConfigError("the feature table has no customer_id column")
    if features["customer_id"].null_count() or features["customer_id"].n_unique() != features.height:
        raise ConfigError("the feature table must have one row per customer_id (no nulls, no duplicates)")
    set_threads(cfg.threads)
    inputs = club_inputs(features, cfg)
    hashes = customer_hashes(features["customer_id"], cfg.seed)
    ranks, pct = compute_ranks(features, inputs)
    a = assign(inputs, features.height, strategy, hashes, pct)
    members = members_table(features, inputs, ranks, a)
    summary = summary_table(features, inputs, members, a)
    notes = [f"club {name} skipped: {why}" for name, why in inputs.skipped.items()]
    lowest = {c.name: np.nanmin(inputs.scores[j][~np.isnan(inputs.keys[j, :, 0])]) if inputs.eligible[c.name]
              else None for j, c in enumerate(inputs.clubs)}
    highest = {c.name: np.nanmax(inputs.scores[j][~np.isnan(inputs.keys[j, :, 0])]) if inputs.eligible[c.name]
               else None for j, c in enumerate(inputs.clubs)}
    for row, club in zip(summary.iter_rows(named=True), [c for c in inputs.clubs for _ in c.shares], strict=True):
        worst = lowest[club.name] if club.direction == "desc" else highest[club.name]
        if row["size"] and row["threshold"] is not None and row["threshold"] == worst:
            notes.append(f"club {row['club']} tier {row['tier']}: its threshold {row['threshold']:g} is the "
                         "worst eligible score, so members there are chosen among equals by the tie-breakers "
                         "and the id hash")
        if row["size"] < row["target_size"]:
            notes.append(f"club {row['club']} tier {row['tier']}: {row['size']:,} of {row['target_size']:,} "
                         "members (too few eligible customers left)")
    stab = stability(members, previous) if previous is not None else None
    return ClubsResult(members, summary, ranks, dict(inputs.skipped), notes, stab, strategy, features.height)


def write_clubs(res: ClubsResult, staging: Any) -> dict[str, int]:
    """Write ranks, clubs, club_summary (and stability) Parquet files into ``staging``."""
    res.ranks.write_parquet(staging.path("ranks.parquet"), compression="zstd")
    res.clubs.write_parquet(staging.path("clubs.parquet"), compression="zstd")
    res.summary.write_parquet(staging.path("club_summary.parquet"), compression="zstd")
    rows = {"ranks": res.ranks.height, "clubs": res.clubs.height, "club_summary": res.summary.height}
    if res.stability is not None:
        res.stability.write_parquet(staging.path("club_stability.parquet"), compression="zstd")
        rows["club_stability"] = res.stability.height
    return rows


def clubs_summary_doc(res: ClubsResult) -> dict[str, Any]:
    """JSON-friendly account of a clubs run (manifest and ``--json``)."""
    return {"strategy": res.strategy, "universe": res.universe, "members": res.clubs.height,
            "skipped_clubs": res.skipped, "notes": res.notes,
            "clubs": res.summary.to_dicts(),
            "stability": res.stability.to_dicts() if res.stability is not None else None}
