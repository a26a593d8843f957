"""``centile holdout``: deterministic control groups and multi-arm splits for campaigns.

A customer's arm in a campaign is a function of a seeded 64-bit hash of
(customer id, campaign salt) -- ``centile.kernels.hashing`` seeded with the
hash of the salt under ``cfg.seed`` -- so a rerun gives the same arms, the
input order does not matter, and campaigns with different salts are
independent.

Two methods (``[holdout] method``):

* ``hash`` (default): ``u = hash / 2**64`` is cut at the cumulative arm
  shares. Each customer's arm is fixed forever (new customers never move old
  ones); every stratum gets each share up to binomial sampling error.
* ``stratified``: inside each stratum (``stratify_by`` column) customers are
  ordered by their hash and the first ``round(share x n)`` go to the first arm,
  and so on (largest remainders), so every stratum gets the requested shares
  exactly. Adding customers can move customers at the cut-offs.

A global long-term holdout (``global_share``, salt ``global_salt``) is drawn
first, from its own hash, and excluded from every campaign: those customers
get arm ``global_holdout`` in every campaign until ``global_until``.

Output ``assignments.parquet``: customer_id, campaign, arm (and the stratum).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from centile.config import as_date, check_keys
from centile.errors import ConfigError, InputError

log = logging.getLogger(__name__)

GLOBAL_ARM = "global_holdout"


@dataclass(frozen=True)
class HoldoutSpec:
    """The ``[holdout]`` config section, validated."""

    campaigns: tuple[str, ...] = ("campaign",)
    arms: Mapping[str, float] = field(default_factory=lambda: {"treatment": 0.9, "control": 0.1})
    salts: Mapping[str, str] = field(default_factory=dict)  # campaign -> salt (default: its name)
    stratify_by: str | None = None
    method: str = "hash"
    global_share: float = 0.0
    global_salt: str = "global-holdout"
    global_until: dt.date | None = None


def parse_holdout_spec(section: Mapping[str, Any]) -> HoldoutSpec:
    """Validate the raw ``[holdout]`` section (ConfigError naming the key)."""
    known = set(HoldoutSpec.__dataclass_fields__) | {"control_share"}
    check_keys("[holdout]", section, known)
    kw: dict[str, Any] = {}
    if "campaigns" in section:
        c = section["campaigns"]
        if not isinstance(c, list) or not c or len(set(map(str, c))) != len(c):
            raise ConfigError(f"[holdout] campaigns must be a non-empty list of distinct names, got {c!r}")
        kw["campaigns"] = tuple(str(x) for x in c)
    if "arms" in section and "control_share" in section:
        raise ConfigError("[holdout] give either arms = {...} or control_share, not both")
    if "control_share" in section:
        v = section["control_share"]
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v < 1:
            raise ConfigError(f"[holdout] control_share must be in (0, 1), got {v!r}")
        kw["arms"] = {"treatment": 1.0 - float(v), "control": float(v)}
    if "arms" in section:
        a = section["arms"]
        if not isinstance(a, Mapping) or len(a) < 2 or not all(
                isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 1 for v in a.values()):
            raise ConfigError(f"[holdout] arms must map at least two arm names to shares in [0, 1], e.g. "
                              f"arms = {{ A = 0.45, B = 0.45, control = 0.1 }}; got {a!r}")
        total = sum(float(v) for v in a.values())
        if not math.isclose(total, 1.0, abs_tol=1e-9):
            raise ConfigError(f"[holdout] arms shares must sum to 1, got {total:g}")
        if GLOBAL_ARM in a:
            raise ConfigError(f"[holdout] arms: {GLOBAL_ARM!r} is reserved for the global holdout")
        kw["arms"] = {str(k): float(v) for k, v in a.items()}
    if "salts" in section:
        s = section["salts"]
        if not isinstance(s, Mapping) or not all(isinstance(v, str) and v for v in s.values()):
            raise ConfigError(f"[holdout] salts must map campaign names to non-empty strings, got {s!r}")
        kw["salts"] = dict(s)
    for key in ("stratify_by", "global_salt"):
        if key in section:
            if not isinstance(section[key], str) or not section[key]:
                raise ConfigError(f"[holdout] {key} must be a non-empty string, got {section[key]!r}")
            kw[key] = section[key]
    if "method" in section:
        if section["method"] not in ("hash", "stratified"):
            raise ConfigError(f"[holdout] method must be 'hash' or 'stratified', got {section['method']!r}")
        kw["method"] = section["method"]
    if "global_share" in section:
        v = section["global_share"]
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v < 1:
            raise ConfigError(f"[holdout] global_share must be in [0, 1), got {v!r}")
        kw["global_share"] = float(v)
    if "global_until" in section:
        kw["global_until"] = as_date(section["global_until"], "[holdout] global_until")
    spec = HoldoutSpec(**kw)
    if spec.method == "stratified" and not spec.stratify_by:
        raise ConfigError("[holdout] method = 'stratified' needs stratify_by = '<segment column>'")
    return spec


@dataclass(frozen=True)
class HoldoutResult:
    """Assignments (customer_id, campaign, arm[, stratum]) and shares per campaign, stratum and arm."""

    assignments: pl.DataFrame
    shares: pl.DataFrame
    notes: tuple[str, ...]
    out: Path | None = None  # the folder written by run_holdout


def salt_seed(salt: str, seed: int) -> int:
    """The 64-bit hash seed of a campaign: seeded FNV-1a/SplitMix64 of the salt's UTF-8 bytes."""
    from centile.kernels.hashing import hash_strings

    b = np.frombuffer(salt.encode(), dtype=np.uint8)
    return int(hash_strings(np.array([0, b.size]), b, seed)[0])


def uniforms(ids: pl.Series, salt: str, seed: int) -> np.ndarray:
    """``hash(customer_id, salt) / 2**64`` in [0, 1), one per id (53-bit resolution)."""
    from centile.clubs.compute import customer_hashes

    h = customer_hashes(ids, salt_seed(salt, seed))
    return (h >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _by_threshold(u: np.ndarray, shares: np.ndarray) -> np.ndarray:
    cut = np.cumsum(shares)
    cut[-1] = 1.0 + 1e-12  # every u < 1 lands in an arm despite rounding
    return np.searchsorted(cut, u, side="right")


def _stratified(u: np.ndarray, strata: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """Exact per-stratum counts: order by u inside each stratum, cut at largest-remainder counts."""
    arm = np.empty(u.size, np.int64)
    order = np.lexsort((u, strata))
    bounds = np.flatnonzero(np.diff(strata[order])) + 1
    for part in np.split(order, bounds):
        n = part.size
        raw = shares * n
        cnt = np.floor(raw).astype(np.int64)
        short = n - cnt.sum()
        if short:
            cnt[np.argsort(-(raw - cnt), kind="stable")[:short]] += 1
        arm[part] = np.repeat(np.arange(shares.size), cnt)
    return arm


def assign(customers: pl.DataFrame, spec: HoldoutSpec, *, seed: int = 0,
           as_of: dt.date | None = None) -> HoldoutResult:
    """Assign every customer to an arm of every campaign in ``spec``.

    Parameters
    ----------
    customers : polars.DataFrame
        ``customer_id`` (integer or text, unique) plus the ``spec.stratify_by`` column.
    spec : HoldoutSpec
        The parsed ``[holdout]`` section.
    seed : int
        ``cfg.seed``; with the campaign salt it seeds the hash.
    as_of : datetime.date, optional
        The global holdout is not applied after ``spec.global_until``.

    Returns
    -------
    HoldoutResult
        ``assignments`` (customer_id, campaign, arm[, stratum]: one row per customer
        and campaign), ``shares`` (n, share and planned share per campaign, stratum
        and arm) and ``notes``.

    Raises
    ------
    InputError
        Duplicate customer ids or a missing ``stratify_by`` column.
    """
    if "customer_id" not in customers.columns:
        raise InputError("holdout needs a customer_id column")
    if spec.stratify_by and spec.stratify_by not in customers.columns:
        raise InputError(f"[holdout] stratify_by column {spec.stratify_by!r} not found (have "
                         f"{', '.join(customers.columns[:12])}); pass it in --segments or the customers table")
    dup = customers["customer_id"].is_duplicated()
    if dup.any():
        raise InputError(f"holdout: {int(dup.sum())} duplicate customer ids (first: "
                         f"{customers.filter(dup)['customer_id'][0]!r})")
    ids = customers["customer_id"]
    notes: list[str] = []
    arms = list(spec.arms)
    shares = np.array([spec.arms[a] for a in arms])
    if spec.stratify_by:
        stratum = customers[spec.stratify_by].cast(pl.String).fill_null("(missing)")
    else:
        stratum = pl.Series("stratum", ["all"] * customers.height, dtype=pl.String)
    glob = np.zeros(ids.len(), bool)
    if spec.global_share > 0:
        if spec.global_until and as_of and as_of > spec.global_until:
            notes.append(f"global holdout ended on {spec.global_until}; not applied")
        else:
            glob = uniforms(ids, spec.global_salt, seed) < spec.global_share
    codes = stratum.cast(pl.Categorical).to_physical().to_numpy().astype(np.int64)
    parts = []
    for camp in spec.campaigns:
        u = uniforms(ids, spec.salts.get(camp, camp), seed)
        idx = np.flatnonzero(~glob)
        arm = np.full(ids.len(), -1, np.int64)
        if spec.method == "stratified":
            arm[idx] = _stratified(u[idx], codes[idx], shares)
        else:
            arm[idx] = _by_threshold(u[idx], shares)
        labels = pl.Series(arms + [GLOBAL_ARM], dtype=pl.String).gather(np.where(arm < 0, len(arms), arm))
        parts.append(pl.DataFrame({"customer_id": ids, "campaign": pl.Series([camp] * ids.len(), dtype=pl.String),
                                   "arm": labels, "stratum": stratum}))
    out = pl.concat(parts)
    shares_df = (out.group_by("campaign", "stratum", "arm").agg(n=pl.len())
                 # arms: share of the customers in the campaign (the global holdout excluded), as planned;
                 # the global holdout: share of everyone
                 .with_columns(share=pl.col("n") / pl.when(pl.col("arm") == GLOBAL_ARM).then(
                     pl.col("n").sum().over("campaign", "stratum")).otherwise(
                     pl.col("n").filter(pl.col("arm") != GLOBAL_ARM).sum().over("campaign", "stratum")))
                 .with_columns(planned=pl.col("arm").replace_strict(
                     {**{a: float(s) for a, s in spec.arms.items()}, GLOBAL_ARM: None}, return_dtype=pl.Float64))
                 .sort("campaign", "stratum", "arm"))
    if not spec.stratify_by:
        out = out.drop("stratum")
    return HoldoutResult(out, shares_df, tuple(notes))


def customers_for_holdout(s: Any, spec: HoldoutSpec, segments: pl.DataFrame | None) -> pl.DataFrame:
    """Every customer of the inputs (customers table, else order history) with the stratum column."""
    src = "customers" if s.has("customers") else "orders"
    df = s.frame(f"SELECT DISTINCT customer_id FROM {src} ORDER BY customer_id")
    col = spec.stratify_by
    if col:
        if segments is not None and col in segments.columns:
            seg = segments.select("customer_id", col).unique("customer_id", keep="first")
            df = df.join(seg.with_columns(pl.col("customer_id").cast(df["customer_id"].dtype)),
                         on="customer_id", how="left")
        elif s.has("customers", col):
            from centile.io.sqlfiles import ident

            df = df.join(s.frame(f"SELECT customer_id, {ident(col)} FROM customers").unique("customer_id"),
                         on="customer_id", how="left")
        else:
            raise InputError(f"[holdout] stratify_by column {col!r} is neither in --segments nor in customers")
    return df


def write_holdout(res: HoldoutResult, staging: Any) -> dict[str, int]:
    """Write ``assignments.parquet`` and ``assignment_shares.parquet`` into ``staging``."""
    res.assignments.write_parquet(staging.path("assignments.parquet"), compression="zstd")
    res.shares.write_parquet(staging.path("assignment_shares.parquet"), compression="zstd")
    return {"assignments": res.assignments.height, "assignment_shares": res.shares.height}


def holdout_summary_doc(res: HoldoutResult) -> dict[str, Any]:
    """Arm sizes per campaign (JSON-friendly)."""
    per = res.assignments.group_by("campaign", "arm").agg(n=pl.len()).sort("campaign", "arm")
    return {"customers": res.assignments["customer_id"].n_unique(), "arms": per.to_dicts(),
            "notes": list(res.notes)}
