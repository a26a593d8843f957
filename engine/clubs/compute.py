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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl

from centile.backend import open_backend
from centile.config import ClubSpec, Config
from centile.errors import ConfigError, OutputError
from centile.runtime import numba_threads

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClubInputs:
    """The numeric inputs of the kernels for the clubs that can be formed."""

    clubs: tuple[ClubSpec, ...]
    keys: np.ndarray          # float64[C, n, m]: oriented so larger is better; NaN primary = ineligible
    primary: np.ndarray       # float64[n, C], column-major: keys[:, :, 0] laid out for the rank kernel
    signs: np.ndarray         # float64[C]: +1 (desc) or -1 (asc); metric = sign * keys[c, :, 0]
    groups: np.ndarray | None  # int64[n] dense group codes, or None
    group_labels: list[Any]
    skipped: dict[str, str]
    eligible: dict[str, int]


@dataclass(frozen=True)
class ClubsResult:
    """What ``form_clubs`` produced: memberships, summary, ranks (Polars DataFrames)."""

    clubs: pl.DataFrame
    summary: pl.DataFrame
    ranks: pl.DataFrame
    skipped: dict[str, str]
    notes: list[str] = field(default_factory=list)
    stability: pl.DataFrame | None = None
    strategy: str = "priority"
    universe: int = 0


def _duck_type(con: duckdb.DuckDBPyConnection, expr: str, what: str) -> str:
    """DuckDB's type of ``expr`` over the features (raises ConfigError naming ``what``)."""
    return _eval_types(con, {"x": expr}, what)["x"]


def _eval_types(con: duckdb.DuckDBPyConnection, exprs: dict[str, str], what: str) -> dict[str, str]:
    cols = ", ".join(f"({e}) AS \"{n}\"" for n, e in exprs.items())
    try:
        return {r[0]: r[1] for r in con.execute(f"DESCRIBE SELECT {cols} FROM features").fetchall()}
    except duckdb.Error as exc:
        names = [r[0] for r in con.execute("DESCRIBE features").fetchall()]
        raise ConfigError(f"{what}: {str(exc).splitlines()[0]}; the features table has: "
                          f"{', '.join(names)}") from None


_NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
            "UBIGINT", "FLOAT", "DOUBLE", "DECIMAL", "BOOLEAN", '"NULL"')


def _check_club(con: duckdb.DuckDBPyConnection, club: ClubSpec) -> None:
    what = f"club {club.name}"
    t = _duck_type(con, club.metric, f"{what}: metric {club.metric!r}")
    if not t.startswith(_NUMERIC):
        raise ConfigError(f"{what}: metric {club.metric!r} is of type {t}, not a number")
    for tb in club.tie_break:
        t = _duck_type(con, tb, f"{what}: tie_break {tb!r}")
        if not t.startswith(_NUMERIC):
            raise ConfigError(f"{what}: tie_break {tb!r} is of type {t}, not a number")
    if club.eligible:
        t = _duck_type(con, club.eligible, f"{what}: eligible {club.eligible!r}")
        if t not in ("BOOLEAN", '"NULL"'):
            raise ConfigError(f"{what}: eligibility {club.eligible!r} is of type {t}, not a true/false predicate")


def club_inputs(features: pl.DataFrame, cfg: Config) -> ClubInputs:
    """Evaluate every club's metric, tie-breakers and eligibility over ``features``.

    DuckDB evaluates the config's SQL in two passes: counts (to skip a club
    whose metric is NULL for every customer: its input table or column is
    absent; such a club is never filled with zeros), then one column per
    club key, oriented so larger is better and NULL where not eligible.
    """
    n = features.height
    with open_backend(cfg).local_sql({"features": features}) as con:
        for club in cfg.clubs:
            _check_club(con, club)
        counts = con.execute("SELECT " + ", ".join(f"count(({c.metric}))" for c in cfg.clubs)
                             + " FROM features").fetchall()[0] if cfg.clubs else ()
        kept = [j for j, _c in enumerate(cfg.clubs) if not n or counts[j] > 0]
        skipped = {c.name: (f"metric {c.metric!r} is null for every customer "
                            "(its input table or column is absent)")
                   for j, c in enumerate(cfg.clubs) if j not in kept}
        clubs = tuple(cfg.clubs[j] for j in kept)
        signs = np.array([-1.0 if c.direction == "asc" else 1.0 for c in clubs])
        m = 1 + max((len(c.tie_break) for c in clubs), default=0)
        cols = []
        for c, club in enumerate(clubs):
            sign = "-" if club.direction == "asc" else ""
            elig = f"coalesce(({club.eligible}), false) AND " if club.eligible else ""
            # NaN, not NULL, for "no value": the columns then convert to NumPy without a copy
            cols.append(f"coalesce(CASE WHEN {elig}({club.metric}) IS NOT NULL "
                        f"THEN {sign}CAST(({club.metric}) AS DOUBLE) END, 'NaN'::DOUBLE) AS k{c}_0")
            cols += [f"coalesce({sign}CAST(({t}) AS DOUBLE), 'NaN'::DOUBLE) AS k{c}_{i + 1}"
                     for i, t in enumerate(club.tie_break)]
        if cfg.group_by:
            _duck_type(con, cfg.group_by, f"group_by {cfg.group_by!r}")
            cols.append(f"CAST(({cfg.group_by}) AS VARCHAR) AS g")
        keys = np.full((len(clubs), n, m), np.nan)
        # primary keys also column by column (n, C), the layout the rank kernel reads without a copy
        primary = np.empty((n, len(clubs)), order="F")
        group_text: list[pl.Series] = []
        if cols:
            # stream the result in batches straight into the key arrays: the evaluated table is
            # never held whole next to them
            reader = con.sql("SELECT " + ", ".join(cols) + " FROM features").to_arrow_reader(1 << 22)
            start = 0
            for batch in reader:
                stop = start + batch.num_rows
                part = pl.from_arrow(batch)
                for c, club in enumerate(clubs):
                    for i in range(1 + len(club.tie_break)):
                        keys[c, start:stop, i] = part[f"k{c}_{i}"].to_numpy()
                    primary[start:stop, c] = keys[c, start:stop, 0]
                if cfg.group_by:
                    group_text.append(part["g"])
                start = stop
    eligible = {club.name: int(np.count_nonzero(~np.isnan(primary[:, c]))) for c, club in enumerate(clubs)}
    groups, labels = None, []
    if cfg.group_by:
        text = pl.concat(group_text).fill_null("(none)")
        labels = text.unique().sort().to_list()
        groups = (text.rank("dense") - 1).cast(pl.Int64).to_numpy()
    return ClubInputs(clubs, keys, primary, signs, groups, labels, skipped, eligible)


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
    from centile.kernels.hashing import hash_int64, hash_strings

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


def _nullable(values: np.ndarray, null: np.ndarray) -> pl.Series:
    """A Polars column over ``values`` without copying them; ``null`` marks missing entries."""
    import pyarrow as pa

    values = np.ascontiguousarray(values)
    validity = pa.py_buffer(np.packbits(~null, bitorder="little"))
    kind = pa.int64() if values.dtype == np.int64 else pa.float64()
    arr = pa.Array.from_buffers(kind, len(values), [validity, pa.py_buffer(values)],
                                null_count=int(np.count_nonzero(null)))
    return pl.Series(arr)


def compute_ranks(features: pl.DataFrame, inputs: ClubInputs) -> tuple[pl.DataFrame, np.ndarray, np.ndarray]:
    """``ranks.parquet``: customer_id plus ``<club>_rank`` and ``<club>_pct_rank`` per club metric.

    The rank is 1-based and descending in the club's direction (ties share
    the best rank); pct_rank is DuckDB's ``percent_rank()`` over the metric in
    the club's direction, so 1.0 is the best eligible customer. Also returns
    the raw rank matrix (n, C; 0 = not ranked) and the pct matrix (C, n) used
    by the best-rank strategy.
    """
    from centile.kernels.percentile import rank_pct_many

    c = len(inputs.clubs)
    cols: dict[str, Any] = {"customer_id": features["customer_id"]}
    if c == 0:
        return pl.DataFrame(cols), np.empty((features.height, 0), np.int64), np.empty((0, features.height))
    primary = inputs.primary
    rank, pct = rank_pct_many(primary)
    group_rank = group_pct = None
    if inputs.groups is not None:
        group_rank, group_pct = rank_pct_many(primary, groups=inputs.groups)
    for j, club in enumerate(inputs.clubs):
        cols[f"{club.name}_rank"] = _nullable(rank[:, j], rank[:, j] == 0)
        cols[f"{club.name}_pct_rank"] = _nullable(pct[:, j], np.isnan(pct[:, j]))
        if group_rank is not None:
            cols[f"{club.name}_group_rank"] = _nullable(group_rank[:, j], group_rank[:, j] == 0)
            cols[f"{club.name}_group_pct_rank"] = _nullable(group_pct[:, j], np.isnan(group_pct[:, j]))
    if inputs.groups is not None:
        cols["rank_group"] = pl.Series(inputs.group_labels, dtype=pl.String).gather(inputs.groups)
    return pl.DataFrame(cols), rank, pct.T  # pct is column-major, so pct.T is C-contiguous


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


def _member_index(a: dict[str, np.ndarray]) -> np.ndarray:
    """Indices of all members, ordered by club priority, tier and position in the club."""
    club, tier, pos = a["club"], a["tier"], a["position"]
    idx = np.flatnonzero(club >= 0)
    n = max(len(club), 1)
    key = (club[idx].astype(np.int64) * 256 + tier[idx]) * n + pos[idx]  # unique per member
    return idx[pl.Series(key).arg_sort().to_numpy()]


def _qualified_lists(qualified: np.ndarray, names: list[str]) -> pl.Series:
    """``qualified_for`` lists from a bool matrix (members × clubs), built once per combination."""
    if not len(qualified):
        return pl.Series([], dtype=pl.List(pl.String))
    bits = np.packbits(qualified, axis=1, bitorder="little")
    if bits.shape[1] <= 2:  # up to 16 clubs: a lookup table over all combinations
        mask = bits[:, 0].astype(np.int64) | (bits[:, 1].astype(np.int64) << 8 if bits.shape[1] == 2 else 0)
        present = np.zeros(1 << 16, dtype=bool)
        present[mask] = True
        uniq = np.flatnonzero(present)
        lookup = np.zeros(1 << 16, dtype=np.int64)
        lookup[uniq] = np.arange(len(uniq))
        inverse = lookup[mask]
    else:
        rows = np.ascontiguousarray(bits).view(np.dtype((np.void, bits.shape[1]))).ravel()
        _u, first, inverse = np.unique(rows, return_index=True, return_inverse=True)
        uniq = first
        qualified_u = qualified[first]
    if bits.shape[1] <= 2:
        qualified_u = np.array([[u >> j & 1 for j in range(len(names))] for u in uniq], dtype=bool)
    combos = pl.Series([[n for j, n in enumerate(names) if row[j]] for row in qualified_u],
                       dtype=pl.List(pl.String))
    return combos.gather(np.asarray(inverse).ravel())


def members_table(features: pl.DataFrame, inputs: ClubInputs, rank: np.ndarray, pct: np.ndarray,
                  a: dict[str, np.ndarray]) -> pl.DataFrame:
    """``clubs.parquet``: one row per club member, by club priority, tier and position."""
    idx = _member_index(a)
    names = [c.name for c in inputs.clubs]
    cidx = a["club"][idx]
    empty = not len(idx)
    return pl.DataFrame({
        "customer_id": features["customer_id"].gather(idx),
        "club": pl.Series([], dtype=pl.String) if empty else pl.Series(names, dtype=pl.String).gather(cidx),
        "tier": pl.Series(a["tier"][idx], dtype=pl.Int8),
        "score": pl.Series(inputs.signs[cidx] * inputs.keys[cidx, idx, 0] if not empty else [], dtype=pl.Float64),
        "rank": pl.Series(rank[idx, cidx] if not empty else [], dtype=pl.Int64),
        "pct_rank": pl.Series(pct[cidx, idx] if not empty else [], dtype=pl.Float64),
        "position": pl.Series(a["position"][idx], dtype=pl.Int64),
        "qualified_for": _qualified_lists(a["qualified"][idx], names),
    })


def summary_table(features: pl.DataFrame, inputs: ClubInputs, a: dict[str, np.ndarray]) -> pl.DataFrame:
    """``club_summary.parquet``: per club and tier, size, threshold, overlap and member KPIs.

    The KPIs are ratios of sums over the members, the definitions of the report's KPI tiles
    (:data:`centile.report.kpis.DEFINITIONS`): AOV = gross revenue / orders, return rate =
    returned value / gross revenue, open (click) rate = opened (clicked) e-mails / e-mails sent."""
    rows = []
    for j, club in enumerate(inputs.clubs):
        for t in range(len(club.shares)):
            thr = float(a["threshold"][j, t])
            rows.append({"club": club.name, "_c": j, "tier": t + 1, "share": club.shares[t],
                         "target_size": int(a["target"][j, t]), "size": int(a["size"][j, t]),
                         "eligible": inputs.eligible[club.name],
                         "threshold": None if math.isnan(thr) else float(inputs.signs[j]) * thr,
                         "taken_by_earlier": int(a["skipped"][j, t])})
    base = pl.DataFrame(rows, schema={"club": pl.String, "_c": pl.Int32, "tier": pl.Int8, "share": pl.Float64,
                                      "target_size": pl.Int64, "size": pl.Int64, "eligible": pl.Int64,
                                      "threshold": pl.Float64, "taken_by_earlier": pl.Int64})
    kpi_cols = ["net_revenue_12m", "orders_12m", "gross_revenue_12m", "returned_value_12m",
                "open_rate_12m", "click_rate_12m"]
    idx = np.flatnonzero(a["club"] >= 0)
    present = [c for c in kpi_cols if c in features.columns]
    n_tiers = max((len(c.shares) for c in inputs.clubs), default=1)
    group = a["club"][idx].astype(np.int64) * n_tiers + (a["tier"][idx].astype(np.int64) - 1)
    n_groups = len(inputs.clubs) * n_tiers

    # members' values, gathered once per column (null -> NaN)
    member = {c: features[c].cast(pl.Float64).gather(idx).to_numpy() for c in present}
    # opened / clicked e-mails: round(rate * sent) is exact (the rate is the rounded quotient of two
    # counts), so the e-mail rates are ratios of sums like AOV and the return rate, as in the KPI tiles
    if "emails_sent_12m" in features.columns:
        sent = features["emails_sent_12m"].cast(pl.Float64).gather(idx).to_numpy()
        for c in ("open_rate_12m", "click_rate_12m"):
            if c in member:
                gone = np.isnan(member[c]) | np.isnan(sent)
                member[c.replace("_rate_", "_count_")] = np.where(gone, np.nan, np.round(member[c] * sent))
                member[c.replace("rate", "sent")] = np.where(gone, np.nan, sent)

    # np.bincount adds in row order, so the sums (and the file's bytes) are the
    # same on every run; a threaded group-by may add in any order
    def total(col: str) -> np.ndarray:
        if col not in member:
            return np.full(n_groups, np.nan)
        ok = ~np.isnan(member[col])
        return np.bincount(group[ok], weights=member[col][ok], minlength=n_groups)

    def count(col: str) -> np.ndarray:
        if col not in member:
            return np.zeros(n_groups)
        return np.bincount(group[~np.isnan(member[col])], minlength=n_groups).astype(np.float64)

    total_net = float(np.sum(features["net_revenue_12m"].cast(pl.Float64).to_numpy())) \
        if "net_revenue_12m" in present else float("nan")
    with np.errstate(divide="ignore", invalid="ignore"):
        kpis = pl.DataFrame({
            "_c": np.repeat(np.arange(len(inputs.clubs)), n_tiers).astype(np.int32),
            "tier": np.tile(np.arange(1, n_tiers + 1), len(inputs.clubs)).astype(np.int8),
            "revenue_share_12m": total("net_revenue_12m") / (total_net or float("nan")),
            "orders_12m_mean": total("orders_12m") / count("orders_12m"),
            "aov_12m": total("gross_revenue_12m") / total("orders_12m"),
            "return_rate_12m": total("returned_value_12m") / total("gross_revenue_12m"),
            "open_rate_12m": total("open_count_12m") / total("open_sent_12m"),
            "click_rate_12m": total("click_count_12m") / total("click_sent_12m"),
        })
    return (base.join(kpis, on=["_c", "tier"], how="left").sort("_c", "tier").drop("_c")
                .with_columns(pl.col(c).cast(pl.Float64).fill_nan(None).replace([np.inf, -np.inf], None)
                              for c in ("revenue_share_12m", "orders_12m_mean", "aov_12m", "return_rate_12m",
                                        "open_rate_12m", "click_rate_12m")))


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
    inputs = club_inputs(features, cfg)
    with numba_threads(cfg.threads):
        hashes = customer_hashes(features["customer_id"], cfg.seed)
        ranks, rank, pct = compute_ranks(features, inputs)
        # the rank kernel's layout of the primary keys is not needed any more: free it (n × clubs doubles)
        inputs = replace(inputs, primary=np.empty((0, len(inputs.clubs)), order="F"))
        a = assign(inputs, features.height, strategy, hashes, pct)
    members = members_table(features, inputs, rank, pct, a)
    worst = {}
    for j, c in enumerate(inputs.clubs):
        # the worst eligible primary key, back in the metric's own sign
        worst[c.name] = float(inputs.signs[j] * np.nanmin(inputs.keys[j, :, 0])) if inputs.eligible[c.name] else None
    # nor the keys (clubs × n × keys doubles): the summary needs only the assignment
    inputs = replace(inputs, keys=np.empty((len(inputs.clubs), 0, 1)))
    summary = summary_table(features, inputs, a)
    notes = [f"club {name} skipped: {why}" for name, why in inputs.skipped.items()]
    for row, club in zip(summary.iter_rows(named=True), [c for c in inputs.clubs for _ in c.shares], strict=True):
        if row["size"] and row["threshold"] is not None and row["threshold"] == worst[club.name]:
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
