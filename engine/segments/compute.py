"""Segmentation of existing customers: RFM, rule-based segments, clusters and their profiles.

Data flow: features (+ the ``customers`` table, + clubs if given)
→ RFM scores and named segments (:mod:`centile.rfm`, tie-aware quantile
kernel) → rule-based segmentations evaluated by DuckDB from the config's SQL
→ k-means and optional density clusters (:mod:`centile.clusters`)
→ ``segments.parquet`` (customer_id plus one column per segmentation),
``segment_profiles.parquet`` (:mod:`centile.profiles`) and ``rfm_grid.parquet``.

Config (``[segments]``, every key optional)::

    [segments]
    rfm_bins = 5                 # number of R, F and M scores
    default_rules = true         # add lifecycle, value, age_band, gender, region
    cluster = true               # k-means column "cluster"
    cluster_features = ["recency_days", "orders_12m", "net_revenue_12m",
                        "avg_order_value_12m", "return_rate_12m", "open_rate_12m"]
    k = "auto"                   # or a number of clusters
    k_range = [3, 8]             # candidates for k = "auto" (best silhouette)
    fit_sample = 200000          # k-means is fitted on at most this many customers
    silhouette_sample = 5000
    n_init = 3
    density = "none"             # "hdbscan" or "dbscan": adds a "density_cluster" column
    density_sample = 20000
    min_cluster_size = 200       # smallest density cluster (customers in the sample)
    min_samples = 10             # neighbours that make a core point
    eps = 0.5                    # DBSCAN radius in standardised units
    seed = 0                     # default: the top-level seed

    [segments.rules]             # first matching rule wins; the rest is "other"
    buyer_type = [["new", "tenure_days < 90"], ["regular", "orders_12m >= 4"],
                  ["occasional", "orders_12m >= 1"]]
    region = { expr = "region", other = "unknown" }   # label = the expression's value
    value = { rules = [["top", "net_revenue_12m > 500"]], other = "rest" }

Predicates are DuckDB SQL over the feature columns, the ``customers``
columns (``signup_ts``, ``birth_year``, ``gender``, ``region``,
``postal_code``) and ``age`` (= year of as_of − birth_year); window
functions such as ``cume_dist() OVER (ORDER BY net_revenue_12m DESC)`` work.
"""

from __future__ import annotations

import copy
import datetime as dt
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl

from centile.backend import local_sql
from centile.config import Config, check_expression, check_keys
from centile.errors import ConfigError, InputError
from centile.features.join import add_columns

log = logging.getLogger(__name__)

DEFAULT_CLUSTER_FEATURES = ("recency_days", "orders_12m", "net_revenue_12m", "avg_order_value_12m",
                            "return_rate_12m", "open_rate_12m")
CUSTOMER_COLUMNS = ("signup_ts", "birth_year", "gender", "region", "postal_code")
_TOP = "cume_dist() OVER (ORDER BY net_revenue_12m DESC)"


@dataclass(frozen=True)
class RuleSet:
    """One rule-based segmentation: ordered (label, predicate) rules, or one label expression."""

    name: str
    rules: tuple[tuple[str, str], ...] = ()
    expr: str | None = None
    other: str = "other"
    default: bool = False


DEFAULT_RULES: tuple[RuleSet, ...] = (
    RuleSet("lifecycle", (("no purchase", "orders_total = 0"), ("new", "tenure_days < 90"),
                          ("regular", "orders_12m >= 4"), ("occasional", "orders_12m >= 1"),
                          ("lapsed", "orders_12m = 0")), default=True),
    RuleSet("value", (("top 10 %", f"net_revenue_12m > 0 AND {_TOP} <= 0.10"),
                      ("next 40 %", f"net_revenue_12m > 0 AND {_TOP} <= 0.50"),
                      ("no 12-month revenue", "coalesce(net_revenue_12m, 0) <= 0")), other="bottom 50 %", default=True),
    RuleSet("age_band", (("under 30", "age < 30"), ("30-44", "age < 45"), ("45-59", "age < 60"),
                         ("60+", "age >= 60")), other="unknown", default=True),
    RuleSet("gender", expr="gender", other="unknown", default=True),
    RuleSet("region", expr="region", other="unknown", default=True),
)
MAX_EXPR_LABELS = 64


@dataclass(frozen=True)
class SegmentsConfig:
    """The parsed ``[segments]`` section (see the module docstring)."""

    rfm_bins: int = 5
    rules: tuple[RuleSet, ...] = DEFAULT_RULES
    cluster: bool = True
    cluster_features: tuple[str, ...] = DEFAULT_CLUSTER_FEATURES
    k: int | str = "auto"
    k_range: tuple[int, int] = (3, 8)
    fit_sample: int = 200_000
    silhouette_sample: int = 5_000
    n_init: int = 3
    density: str = "none"
    density_sample: int = 20_000
    min_cluster_size: int = 200
    min_samples: int = 10
    eps: float = 0.5
    seed: int = 0


def _int(raw: Mapping[str, Any], key: str, default: int, lo: int, hi: int | None = None) -> int:
    v = raw.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
        rng = f"{lo} .. {hi}" if hi is not None else f">= {lo}"
        raise ConfigError(f"[segments] {key} = {v!r}: must be an integer {rng}")
    return v


def _ruleset(name: str, spec: Any) -> RuleSet:
    where = f"[segments.rules] {name}"
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ConfigError(f"{where}: the name must be a plain identifier (letters, digits, _)")
    other = "other"
    rules_raw: Any = spec
    expr = None
    if isinstance(spec, Mapping):
        unknown = set(spec) - {"rules", "expr", "other"}
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; use rules, expr, other")
        other = spec.get("other", "other")
        if not isinstance(other, str) or not other:
            raise ConfigError(f"{where}: other = {other!r} must be a non-empty string")
        expr = spec.get("expr")
        rules_raw = spec.get("rules", [])
        if expr is not None and (not isinstance(expr, str) or not expr.strip()):
            raise ConfigError(f"{where}: expr must be a SQL expression string")
        if expr is not None and rules_raw:
            raise ConfigError(f"{where}: give either rules or expr, not both")
    if expr is None:
        if not isinstance(rules_raw, list) or not rules_raw:
            raise ConfigError(f"{where}: expected a list of [label, predicate] pairs, e.g. "
                              "[[\"new\", \"tenure_days < 90\"], [\"regular\", \"orders_12m >= 4\"]]")
        rules = []
        for i, r in enumerate(rules_raw):
            if (not isinstance(r, list | tuple) or len(r) != 2 or not all(isinstance(x, str) and x.strip() for x in r)):
                raise ConfigError(f"{where}: rule {i + 1} = {r!r} must be a [label, predicate] pair of strings")
            check_expression(r[1], f"{where} rule {r[0]!r}")
            rules.append((r[0], r[1]))
        labels = [r[0] for r in rules] + [other]
        if len(set(labels)) != len(labels):
            raise ConfigError(f"{where}: labels must be distinct (including other = {other!r}): {labels}")
        return RuleSet(name, tuple(rules), None, other)
    check_expression(expr, f"{where} expr")
    return RuleSet(name, (), expr, other)


def segments_config(cfg: Config) -> SegmentsConfig:
    """Parse and validate ``[segments]`` into a :class:`SegmentsConfig` (raises ConfigError)."""
    raw = dict(cfg.section("segments"))
    known = set(SegmentsConfig.__dataclass_fields__) | {"default_rules"}
    check_keys("[segments]", raw, known)
    rules_raw = raw.get("rules", {})
    if not isinstance(rules_raw, Mapping):
        raise ConfigError("[segments] rules must be a table: [segments.rules] name = [[label, predicate], ...]")
    default_rules = raw.get("default_rules", True)
    if not isinstance(default_rules, bool):
        raise ConfigError(f"[segments] default_rules = {default_rules!r}: must be true or false")
    user = tuple(_ruleset(n, s) for n, s in rules_raw.items())
    names = {r.name for r in user}
    rules = tuple(r for r in DEFAULT_RULES if default_rules and r.name not in names) + user
    reserved = {"customer_id", "club", "rfm_segment", "r", "f", "m", "cluster", "density_cluster"}
    bad = names & reserved
    if bad:
        raise ConfigError(f"[segments.rules]: {sorted(bad)} is a reserved column name; choose another")
    k = raw.get("k", "auto")
    if not (k == "auto" or (isinstance(k, int) and not isinstance(k, bool) and 2 <= k <= 100)):
        raise ConfigError(f"[segments] k = {k!r}: must be \"auto\" or an integer 2 .. 100")
    kr = raw.get("k_range", [3, 8])
    if (not isinstance(kr, list) or len(kr) != 2 or not all(isinstance(x, int) and not isinstance(x, bool) for x in kr)
            or not 2 <= kr[0] <= kr[1] <= 50):
        raise ConfigError(f"[segments] k_range = {kr!r}: must be [low, high] with 2 <= low <= high <= 50")
    feats = raw.get("cluster_features", list(DEFAULT_CLUSTER_FEATURES))
    if not isinstance(feats, list) or not feats or not all(isinstance(x, str) for x in feats):
        raise ConfigError(f"[segments] cluster_features = {feats!r}: must be a non-empty list of feature columns")
    density = raw.get("density", "none")
    if density not in ("none", "hdbscan", "dbscan"):
        raise ConfigError(f"[segments] density = {density!r}: use \"none\", \"hdbscan\" or \"dbscan\"")
    cluster = raw.get("cluster", True)
    if not isinstance(cluster, bool):
        raise ConfigError(f"[segments] cluster = {cluster!r}: must be true or false")
    eps = raw.get("eps", 0.5)
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not eps > 0:
        raise ConfigError(f"[segments] eps = {eps!r}: must be a positive number")
    seed = raw.get("seed", cfg.seed)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"[segments] seed = {seed!r}: must be a non-negative integer")
    return SegmentsConfig(
        rfm_bins=_int(raw, "rfm_bins", 5, 2, 100), rules=rules, cluster=cluster, cluster_features=tuple(feats),
        k=k, k_range=(kr[0], kr[1]), fit_sample=_int(raw, "fit_sample", 200_000, 100),
        silhouette_sample=_int(raw, "silhouette_sample", 5_000, 100), n_init=_int(raw, "n_init", 3, 1, 100),
        density=density, density_sample=_int(raw, "density_sample", 20_000, 100),
        min_cluster_size=_int(raw, "min_cluster_size", 200, 2), min_samples=_int(raw, "min_samples", 10, 1),
        eps=float(eps), seed=seed)


@dataclass(frozen=True)
class SegmentsResult:
    """What :func:`form_segments` produced (Polars DataFrames)."""

    segments: pl.DataFrame             # customer_id + one column per segmentation (+ r, f, m scores)
    profiles: pl.DataFrame             # one row per segmentation and segment (+ "all customers")
    rfm_grid: pl.DataFrame             # R x F cells: customers, revenue share
    segmentations: tuple[str, ...]
    cluster_centres: pl.DataFrame | None = None
    k: int | None = None
    silhouette: dict[int, float] = field(default_factory=dict)
    density_clusters: int | None = None
    notes: tuple[str, ...] = ()
    out: Path | None = None  # the folder written by run_segments
    #: CPU seconds of the k-means fit (silhouettes included) on its sample: set by fit_sample, not by the customers
    kmeans_fit_cpu_s: float | None = None


def _base(features: pl.DataFrame, customers: pl.DataFrame | None, as_of: dt.date | None) -> pl.DataFrame:
    """Features left-joined with the customer attributes (feature columns win), plus ``age``."""
    if customers is None or customers.is_empty() or "customer_id" not in customers.columns:
        return features
    extra = [c for c in customers.columns if c != "customer_id" and c not in features.columns]
    cust = customers.select("customer_id", *extra).unique("customer_id", keep="first")
    if cust["customer_id"].dtype != features["customer_id"].dtype:
        cust = cust.with_columns(pl.col("customer_id").cast(features["customer_id"].dtype, strict=False))
    base = add_columns(features, cust)
    if "birth_year" in base.columns and "age" not in base.columns:
        year = (as_of or dt.date.today()).year
        # computed on its own column and put beside the others: a with_columns on the whole table copied
        # every column of it (they are chunked unevenly: features per partition, the added columns whole)
        age = base.get_column("birth_year").to_frame().select((pl.lit(year) - pl.col("birth_year").cast(pl.Int32))
                                                              .alias("age")).to_series()
        base = base.hstack([age])
    return base


def with_columns_beside(frame: pl.DataFrame, columns: list[pl.Series]) -> pl.DataFrame:
    """``frame.with_columns(columns)`` without copying ``frame``'s other columns (a column of the same
    name is replaced in place, the others are appended)."""
    new = {s.name: s for s in columns}
    kept = [new.pop(c) if c in new else frame.get_column(c) for c in frame.columns]
    return pl.DataFrame(kept + list(new.values()))


def _rule_columns(sqls: list[str], columns: list[str]) -> list[str]:
    """The columns of ``columns`` whose name appears in one of the SQL expressions (as a word or a
    quoted identifier, case-insensitively, as DuckDB binds them): a superset of what they read."""
    words: set[str] = set()
    for sql in sqls:
        for quoted, word in re.findall(r'"((?:[^"]|"")+)"|(\w+)', sql):
            words.add((quoted.replace('""', '"') if quoted else word).lower())
    return [c for c in columns if c.lower() in words]


#: SQL that reads other customers' rows (a window function, a subquery): evaluated over every customer
_GLOBAL_SQL = re.compile(r"\bover\s*\(|\bselect\b|\bfrom\b", re.IGNORECASE)


def _rule_values(base: pl.DataFrame, sels: list[str], session: Any, kept: Any = None) -> pl.DataFrame:
    """The value of each rule expression ``sels[i]`` per customer as column ``s<i>``. Expressions
    that read only the customer's own row run per partition on a session's workers
    (``segments: rules``; the feature columns read from the rows the workers kept, ``kept``); the
    others (window functions, subqueries) here over every customer."""
    from centile.backend.partitions import per_customer
    from centile.segments.remote import columns, rules_task

    cols = [c for c in base.columns if c != "__row"]
    local = [i for i, sel in enumerate(sels) if not _GLOBAL_SQL.search(sel)]
    whole = [i for i in range(len(sels)) if i not in local]
    out: dict[str, pl.Series] = {}
    for idx, remote in ((local, True), (whole, False)):
        if not idx:
            continue
        sql = ", ".join(f"{sels[i]} AS s{i}" for i in idx)
        frame = columns(base, _rule_columns([sels[i] for i in idx], cols))
        res = per_customer(session if remote else None, frame, "segments: rules", rules_task, sql, kept=kept)
        out.update({c: res.get_column(c) for c in res.columns})
    return pl.DataFrame([out[f"s{i}"] for i in range(len(sels))])


def rule_segments(base: pl.DataFrame, rulesets: tuple[RuleSet, ...], session: Any = None, kept: Any = None
                  ) -> tuple[pl.DataFrame, list[str]]:
    """Evaluate every rule set over ``base`` (first match wins); returns labels and notes.

    A default rule set whose columns are absent (no customers table) is
    skipped with a note; a configured one raises :class:`ConfigError`. With a ``session`` on a
    cluster the row-local rules run on its workers (:func:`_rule_values`; ``kept``: the feature
    rows they kept, of which ``base`` has the rows and the feature columns).
    """
    notes: list[str] = []
    out: dict[str, pl.Series] = {}
    # the predicates are bound against an empty frame of the table's schema, then evaluated over the
    # columns they name only: registering the whole table made DuckDB's scan align (copy) all of it
    schema = pl.DataFrame(schema=base.schema).with_row_index("__row")
    with local_sql({"base": schema}) as con:
        cols = {r[0] for r in con.execute("DESCRIBE base").fetchall()}
        selects: list[tuple[RuleSet, str]] = []
        for rs in rulesets:
            if rs.expr is not None:
                sel = f"CAST(({rs.expr}) AS VARCHAR)"
            else:
                whens = " ".join(f"WHEN coalesce(({p}), false) THEN {i}" for i, (_l, p) in enumerate(rs.rules))
                sel = f"CAST(CASE {whens} ELSE {len(rs.rules)} END AS SMALLINT)"
            try:
                con.execute(f"DESCRIBE SELECT {sel} FROM base").fetchall()
            except duckdb.Error as exc:
                if rs.default:
                    m = re.search(r'column "([^"]+)" not found', str(exc))
                    col = m.group(1) if m else None
                    why = (("needs birth_year in the customers table" if col == "age" else
                            f"needs the column {col!r} (customers table)") if col else str(exc).splitlines()[0])
                    notes.append(f"segmentation {rs.name} skipped: {why}")
                    continue
                raise ConfigError(f"[segments.rules] {rs.name}: {str(exc).splitlines()[0]}; columns available: "
                                  f"{', '.join(sorted(cols - {'__row'}))}") from None
            selects.append((rs, sel))
    if selects:
        res = _rule_values(base, [sel for _rs, sel in selects], session, kept)
        for i, (rs, _sel) in enumerate(selects):
            col = res[f"s{i}"]
            if rs.expr is not None:
                n_labels = col.n_unique()
                if n_labels > MAX_EXPR_LABELS:
                    msg = (f"segmentation {rs.name}: expr {rs.expr!r} has {n_labels} distinct values "
                           f"(more than {MAX_EXPR_LABELS}); group them with rules instead")
                    if rs.default:
                        notes.append(msg + "; skipped")
                        continue
                    raise ConfigError(f"[segments.rules] {msg}")
                if col.null_count() == col.len() and rs.default:
                    notes.append(f"segmentation {rs.name} skipped: {rs.expr} is null for every customer")
                    continue
                out[rs.name] = col.fill_null(rs.other).alias(rs.name)
            else:
                labels = [lab for lab, _p in rs.rules] + [rs.other]
                out[rs.name] = pl.Series(rs.name, np.asarray(labels, dtype=object)[col.to_numpy()],
                                         dtype=pl.String)
    return pl.DataFrame(list(out.values())) if out else pl.DataFrame(), notes


def _club_labels(features: pl.DataFrame, clubs: pl.DataFrame) -> pl.Series:
    """Club per customer (tier 1: the club's name; later tiers: '<club> tier <t>'); null outside clubs."""
    c = clubs.select("customer_id", pl.when(pl.col("tier") > 1)
                     .then(pl.format("{} tier {}", pl.col("club"), pl.col("tier")))
                     .otherwise(pl.col("club").cast(pl.String)).alias("club"))
    ids = features.get_column("customer_id").to_frame()  # not features.select: see clusters.prepare_matrix
    return ids.join(c, on="customer_id", how="left", maintain_order="left")["club"]


def _cluster_columns(features: pl.DataFrame, sc: SegmentsConfig, cols: dict[str, pl.Series],
                     notes: list[str], session: Any = None, fit_cpu: list[float] | None = None,
                     kept: Any = None) -> tuple[pl.DataFrame | None, int | None, dict[int, float], int | None]:
    """Add the ``cluster`` / ``density_cluster`` columns to ``cols``; returns centres, k, silhouettes, #density.

    The matrix's standardisation comes from exact moments per partition (``segments: scaling``),
    k-means is fitted here on its seeded sample of customers (positions in customer order, so
    the same customers for any partitioning) and each customer's nearest centre is found per
    partition (``segments: clusters``); with a session on a cluster those steps run on its workers,
    which read the feature columns from the rows they kept (``kept``) when they have them.
    Density clusters need every customer's row here."""
    from centile.backend.partitions import per_customer, reduce_customers
    from centile.segments.clusters import (
        centres_frame,
        density_clusters,
        fit_kmeans,
        kmeans_names,
        kmeans_sample,
        merge_moments,
        recency_fill,
        scaling,
    )
    from centile.segments.remote import clusters_task, columns, scaling_task

    centres, k, sil, n_density = None, None, {}, None
    fit_cpu = fit_cpu if fit_cpu is not None else [0.0]
    feats = sc.cluster_features
    missing = [c for c in feats if c not in features.columns]
    if missing:
        raise ConfigError(f"[segments] cluster_features: {missing} not in the feature table; it has: "
                          f"{', '.join(features.columns)}")
    frame = columns(features, feats)
    fill = recency_fill(frame, feats)
    scal = scaling(feats, fill, reduce_customers(session, frame, "segments: scaling", scaling_task, merge_moments,
                                                 feats, fill, kept=kept))
    n = features.height
    if sc.cluster:
        fit_idx, rng = kmeans_sample(n, sc.fit_sample, sc.seed)
        zf = scal.apply(frame[fit_idx]) if fit_idx.size < n else scal.apply(frame)
        try:
            c0 = time.process_time()
            model, k, sil = fit_kmeans(zf, sc.k, rng, k_range=sc.k_range, seed=sc.seed,
                                       silhouette_sample=sc.silhouette_sample, n_init=sc.n_init)
            fit_cpu[0] = time.process_time() - c0
        except ConfigError as exc:
            if sc.k != "auto":
                raise
            # a tiny customer base: no k to choose; the other segmentations still stand
            notes.append(f"clustering skipped: {exc}")
        else:
            if fit_idx.size < n:
                # the tasks predict from the centres; the sample's labels (8 bytes a row) stay here
                sent = copy.copy(model)
                del sent.labels_
                raw = per_customer(session, frame, "segments: clusters", clusters_task, scal, sent,
                                   kept=kept)["raw"].to_numpy()
            else:  # the fit saw every customer
                raw = model.labels_
            cols["cluster"], cen = kmeans_names(raw, model)
            centres = centres_frame(cen, scal.used, scal.mean, scal.sd)
    if sc.density != "none":
        labels, n_density = density_clusters(scal.apply(frame), method=sc.density, seed=sc.seed,
                                             sample=sc.density_sample, min_cluster_size=sc.min_cluster_size,
                                             min_samples=sc.min_samples, eps=sc.eps)
        cols["density_cluster"] = labels
        if n_density == 0:
            notes.append(f"{sc.density}: no cluster found on the sample (every customer is noise); "
                         "lower min_cluster_size or raise eps")
    return centres, k, sil, n_density


def form_segments(features: pl.DataFrame, cfg: Config, *, customers: pl.DataFrame | None = None,
                  clubs: pl.DataFrame | None = None, as_of: dt.date | None = None,
                  session: Any = None, kept: Any = None) -> SegmentsResult:
    """All segmentations and their profiles over a feature table. Writes nothing.

    Parameters
    ----------
    features : polars.DataFrame
        One row per customer (``features.parquet`` or ``run_features(...).features``).
    cfg : Config
        ``[segments]`` section and ``seed``.
    customers : polars.DataFrame, optional
        Customer attributes (``customers`` table): demographic rules and mix.
        Extra columns are allowed and usable in rule predicates.
    clubs : polars.DataFrame, optional
        ``clubs.parquet`` (customer_id, club, tier): adds the ``club`` segmentation.
    as_of : date, optional
        For ``age``; default today.
    session : Session, optional
        An open session: on a cluster the per-customer steps (row-local rules, the cluster matrix's
        moments and labels, the profiles' aggregation) run on its workers.
    kept : centile.backend.partitions.Kept, optional
        Where the workers kept the feature rows (``session.kept["features"]``) when ``features`` is
        the feature table they computed in this session (with columns added, e.g. ``clv_*``): the
        steps' tasks read the feature columns there and get only the others from this process.
    """
    from centile.segments.profiles import profiles_in_session
    from centile.segments.rfm import RFM_COLUMNS, rf_grid, rfm_scores, segment_labels

    sc = segments_config(cfg)
    missing = [c for c in ("customer_id", *RFM_COLUMNS) if c not in features.columns]
    if missing:
        raise ConfigError(f"the feature table lacks {missing}; pass features.parquet of centile features")
    if features.is_empty():
        raise InputError("the feature table has no customers: nothing to segment")
    if features["customer_id"].null_count() or features["customer_id"].n_unique() != features.height:
        raise ConfigError("the feature table must have one row per customer_id (no nulls, no duplicates)")
    notes: list[str] = []
    cols: dict[str, pl.Series] = {"customer_id": features["customer_id"]}
    if clubs is not None:
        cols["club"] = _club_labels(features, clubs)
    sc_rfm = rfm_scores(features["recency_days"].to_numpy(), features["orders_12m"].to_numpy(),
                        features["net_revenue_12m"].to_numpy(), sc.rfm_bins)
    cols["rfm_segment"] = segment_labels(sc_rfm.segment)
    for name, arr in (("r", sc_rfm.r), ("f", sc_rfm.f), ("m", sc_rfm.m)):
        cols[name] = pl.Series(name, arr, dtype=pl.Int8).replace(0, None)
    grid = rf_grid(sc_rfm.r, sc_rfm.f, features["net_revenue_12m"].to_numpy(), sc.rfm_bins)
    base = _base(features, customers, as_of)
    ruled, rule_notes = rule_segments(base, sc.rules, session, kept)
    notes += rule_notes
    for c in ruled.columns:
        cols[c] = ruled[c]
    centres, k, sil, n_density = None, None, {}, None
    fit_cpu = [0.0]
    if (sc.cluster or sc.density != "none") and features.height >= 3:
        from threadpoolctl import threadpool_limits

        # scikit-learn's OpenMP loops run on cfg.threads (default 1): with all cores they were 5-25x
        # slower on a shared 2-core machine (threads spin while others hold the cores)
        with threadpool_limits(cfg.threads or 1):
            centres, k, sil, n_density = _cluster_columns(features, sc, cols, notes, session, fit_cpu, kept)
    segments = pl.DataFrame([s.alias(n) for n, s in cols.items()])
    names = tuple(c for c in segments.columns if c not in ("customer_id", "r", "f", "m"))
    prof_base = with_columns_beside(base, [segments.get_column(n) for n in names])
    # a segmentation named like a feature column replaced it in prof_base: that one is sent
    profiles = profiles_in_session(session, prof_base, list(names), kept.without(names) if kept else None)
    return SegmentsResult(segments, profiles, grid, names, centres, k, sil, n_density, tuple(notes),
                          kmeans_fit_cpu_s=round(fit_cpu[0], 3) if k is not None else None)


#: rows per row group of segments.parquet. Polars cuts row groups where the frame's columns are
#: chunked, and the columns computed per partition on a cluster come back chunked otherwise than
#: one pass's; a fixed size gives the same file for any partitioning (the size of the DuckDB
#: result batches the rule columns had in one pass, so the file is what it was for those runs)
SEGMENTS_ROW_GROUP = 122_880


def write_segments(res: SegmentsResult, staging: Any) -> dict[str, int]:
    """Write segments, segment_profiles and rfm_grid (and cluster_centres) Parquet files into ``staging``."""
    res.segments.write_parquet(staging.path("segments.parquet"), compression="zstd", row_group_size=SEGMENTS_ROW_GROUP)
    res.profiles.write_parquet(staging.path("segment_profiles.parquet"), compression="zstd")
    res.rfm_grid.write_parquet(staging.path("rfm_grid.parquet"), compression="zstd")
    rows = {"segments": res.segments.height, "segment_profiles": res.profiles.height, "rfm_grid": res.rfm_grid.height}
    if res.cluster_centres is not None:
        res.cluster_centres.write_parquet(staging.path("cluster_centres.parquet"), compression="zstd")
        rows["cluster_centres"] = res.cluster_centres.height
    return rows


def segments_summary_doc(res: SegmentsResult) -> dict[str, Any]:
    """JSON-friendly account of a segments run (manifest and ``--json``)."""
    sizes = {s: dict(res.segments[s].cast(pl.String).fill_null("(none)").value_counts(sort=True).iter_rows())
             for s in res.segmentations}
    return {"customers": res.segments.height, "segmentations": list(res.segmentations), "sizes": sizes,
            "k": res.k, "silhouette": {str(k): v for k, v in res.silhouette.items()},
            "density_clusters": res.density_clusters, "notes": list(res.notes),
            "kmeans_fit_cpu_s": res.kmeans_fit_cpu_s}


SEGMENT_TABLES = ("orders", "products", "email_events", "customers")
