"""The KPI tiles: per club (or ``[report] segment_by``) KPIs with 95 % CIs and target verdicts.

One definition per KPI, the same as the club table (``club_summary.parquet``):
every KPI is a ratio of sums over the segment's customers, ``R = Σy / Σx``.

* net revenue and orders per customer: ``Σy / customers`` (a mean);
* average order value: gross revenue / orders;
* return rate: returned value / gross revenue (returns in the 12 months include
  returns of purchases made before them, so the rate can exceed 100 %);
* e-mail open and click rates: opened (clicked) e-mails / e-mails sent, the
  counts recovered exactly from the features as ``round(rate · sent)``.

95 % intervals, kept within each KPI's range:

* the delta method for a ratio estimator, ``SE(R) = √(Σ(y - R x)² / (n - 1) / n) / x̄``
  (Cochran, *Sampling Techniques*, 3rd ed., eq. 6.13), over the n customers;
* net revenue (any sign): ``R ± 1.96 SE``;
* non-negative KPIs (orders, AOV, return rate): on the log scale,
  ``R · exp(±1.96 SE / R)`` (``[0, 1.96 SE]`` when R = 0);
* proportions (open and click rates): Wilson's interval at the effective sample
  size ``min(Σx, R (1 - R) / SE²)``, so the clustering of e-mails within customers
  widens the interval and it stays within [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import polars as pl

from centile.config import Config, check_keys, register_config_section, suggest
from centile.errors import ConfigError
from centile.report.html import esc, fmt, read

Z95 = 1.959963984540054

#: KPIs of the tiles: feature column, label, larger-is-better, percent format
KPIS: dict[str, tuple[str, bool, bool]] = {
    "net_revenue_12m": ("net revenue per customer (12m)", True, False),
    "orders_12m": ("orders per customer (12m)", True, False),
    "avg_order_value_12m": ("average order value (12m)", True, False),
    "return_rate_12m": ("return rate (12m)", False, True),
    "open_rate_12m": ("e-mail open rate (12m)", True, True),
    "click_rate_12m": ("e-mail click rate (12m)", True, True),
}


def _count(rate: str) -> pl.Expr:
    """Opened / clicked e-mails from the rate feature: ``round(rate · sent)`` is exact, as the rate
    is the correctly rounded quotient of two integer counts."""
    return (pl.col(rate).cast(pl.Float64) * pl.col("emails_sent_12m").cast(pl.Float64)).round(0)


#: the one definition of each KPI: (numerator, denominator (None: per customer), range, feature columns needed)
#: range is "real" (any sign), "nonneg" ([0, inf)) or "proportion" ([0, 1])
DEFINITIONS: dict[str, tuple[pl.Expr, pl.Expr | None, str, tuple[str, ...]]] = {
    "net_revenue_12m": (pl.col("net_revenue_12m"), None, "real", ("net_revenue_12m",)),
    "orders_12m": (pl.col("orders_12m"), None, "nonneg", ("orders_12m",)),
    "avg_order_value_12m": (pl.col("gross_revenue_12m"), pl.col("orders_12m"), "nonneg",
                            ("gross_revenue_12m", "orders_12m")),
    "return_rate_12m": (pl.col("returned_value_12m"), pl.col("gross_revenue_12m"), "nonneg",
                        ("returned_value_12m", "gross_revenue_12m")),
    "open_rate_12m": (_count("open_rate_12m"), pl.col("emails_sent_12m"), "proportion",
                      ("open_rate_12m", "emails_sent_12m")),
    "click_rate_12m": (_count("click_rate_12m"), pl.col("emails_sent_12m"), "proportion",
                       ("click_rate_12m", "emails_sent_12m")),
}


def ratio_interval(r: float, se: float, kind: str, sx: float) -> tuple[float | None, float | None]:
    """The 95 % interval of a ratio ``r`` with delta-method standard error ``se``, within its range
    (``kind`` as in :data:`DEFINITIONS`; ``sx`` is the denominator's sum, the trials of a proportion)."""
    if not (math.isfinite(r) and math.isfinite(se)):
        return None, None
    if kind == "proportion":
        p = min(max(r, 0.0), 1.0)
        n = sx if se <= 0 else min(sx, p * (1.0 - p) / (se * se)) if 0 < p < 1 else sx
        if n <= 0:
            return None, None
        z2 = Z95 * Z95
        centre = (p + z2 / (2 * n)) / (1 + z2 / n)
        half = Z95 / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
        return max(0.0, centre - half), min(1.0, centre + half)
    if kind == "nonneg" and r > 0:
        f = math.exp(Z95 * se / r)
        return r / f, r * f
    if kind == "nonneg" and r == 0:
        return 0.0, Z95 * se
    return r - Z95 * se, r + Z95 * se


def _finish(agg: pl.DataFrame, k: str, kind: str) -> pl.DataFrame:
    """The ratio, its delta-method SE and interval from the per-segment sums of ``k``."""
    n = agg[f"{k}__n"].cast(pl.Float64).to_numpy()
    sx, sy = agg[f"{k}__sx"].to_numpy(), agg[f"{k}__sy"].to_numpy()
    syy, sxx, sxy = (agg[f"{k}__{s}"].to_numpy() for s in ("syy", "sxx", "sxy"))
    vals, lo, hi = [], [], []
    for i in range(agg.height):
        if n[i] < 1 or sx[i] == 0:
            vals.append(None)
            lo.append(None)
            hi.append(None)
            continue
        r = sy[i] / sx[i]
        vals.append(r)
        if n[i] < 2:
            lo.append(None)
            hi.append(None)
            continue
        s2 = max(0.0, (syy[i] - 2 * r * sxy[i] + r * r * sxx[i]) / (n[i] - 1))
        se = math.sqrt(s2 / n[i]) / (sx[i] / n[i])
        a, b = ratio_interval(r, se, kind, sx[i])
        lo.append(a)
        hi.append(b)
    return agg.with_columns(pl.Series(k, vals, dtype=pl.Float64), pl.Series(f"{k}_ci_low", lo, dtype=pl.Float64),
                            pl.Series(f"{k}_ci_high", hi, dtype=pl.Float64))


def _segment_column(results: Path, cfg: Config | None) -> tuple[str, pl.DataFrame] | None:
    """The segmentation the KPI tiles break down by: [report] segment_by, else club."""
    by = cfg.settings("report").segment_by if cfg else "club"
    if by == "club":
        clubs = read(results, "clubs")
        if clubs is None:
            return None
        return "club", clubs.select("customer_id", pl.col("club").cast(pl.String))
    seg = read(results, "segments")
    if seg is None or by not in seg.columns:
        raise ConfigError(f"[report] segment_by = {by!r}: segments.parquet has no such column; use 'club' or "
                          f"one of {seg.columns[1:] if seg is not None else '(no segments.parquet)'}")
    return by, seg.select("customer_id", pl.col(by).cast(pl.String))


def kpi_table(features: pl.DataFrame, seg: pl.DataFrame | None, col: str | None) -> pl.DataFrame:
    """Per segment (and 'all customers'): n, and each KPI (:data:`DEFINITIONS`, a ratio of sums over
    the segment's customers) with its 95 % CI (``<kpi>_ci_low``, ``<kpi>_ci_high``)."""
    defs = {k: d for k, d in DEFINITIONS.items() if set(d[3]) <= set(features.columns)}
    parts = [pl.col("customer_id")]
    for k, (y, x, _kind, _) in defs.items():
        parts += [y.cast(pl.Float64).fill_nan(None).alias(f"{k}__y"),
                  (x.cast(pl.Float64) if x is not None else pl.lit(1.0)).fill_nan(None).alias(f"{k}__x")]
    base = features.select(parts)
    if seg is not None and col is not None:
        base = base.join(seg, on="customer_id", how="left").with_columns(pl.col(col).fill_null(f"no {col}"))
    else:
        col = "segment"
        base = base.with_columns(pl.lit("all").alias(col))
    everyone = base.with_columns(pl.lit("all customers").alias(col))
    frames = []
    for part in (everyone, base):
        aggs = [pl.len().alias("n")]
        for k in defs:
            y, x = pl.col(f"{k}__y"), pl.col(f"{k}__x")
            if DEFINITIONS[k][1] is None:   # a mean: customers without a value are left out
                ok = y.is_not_null()
                y, x = y.filter(ok), x.filter(ok)
            else:                            # a ratio of sums: a missing count is none
                y, x = y.fill_null(0.0), x.fill_null(0.0)
            aggs += [y.sum().alias(f"{k}__sy"), x.sum().alias(f"{k}__sx"), (y * y).sum().alias(f"{k}__syy"),
                     (x * x).sum().alias(f"{k}__sxx"), (x * y).sum().alias(f"{k}__sxy"), y.count().alias(f"{k}__n")]
        frames.append(part.group_by(col).agg(aggs))
    out = pl.concat(frames).sort(pl.col(col) != "all customers", col)
    for k, d in defs.items():
        out = _finish(out, k, d[2])
    keep = ["n"] + [c for k in defs for c in (k, f"{k}_ci_low", f"{k}_ci_high")]
    return out.select(pl.col(col).alias("segment"), *keep)


@dataclass(frozen=True)
class ReportSettings:
    """``[report]``: the segmentation the KPI tiles break down by, and a target per KPI."""

    segment_by: str = "club"
    targets: Mapping[str, float] = field(default_factory=dict)


def report_settings(cfg: Config) -> ReportSettings:
    """Parse and validate ``[report]`` (ConfigError naming the key)."""
    raw = cfg.section("report")
    check_keys("[report]", raw, ("segment_by", "targets"))
    by = raw.get("segment_by", "club")
    if not isinstance(by, str) or not by:
        raise ConfigError(f"[report] segment_by = {by!r}: expected a column name of segments.parquet, or 'club'")
    targets = raw.get("targets", {}) or {}
    if not isinstance(targets, Mapping):
        raise ConfigError("[report.targets] must be a table, e.g. avg_order_value_12m = 60")
    for k in targets:
        if k not in KPIS:
            raise ConfigError(f"[report.targets]: unknown KPI {k!r}{suggest(k, KPIS)}; targets exist for "
                              f"{', '.join(KPIS)}")
    out = {}
    for k, v in targets.items():
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ConfigError(f"[report.targets] {k} = {v!r}: every target must be a number, "
                              "e.g. avg_order_value_12m = 60")
        out[k] = float(v)
    return ReportSettings(by, MappingProxyType(out))


def _targets(cfg: Config | None) -> Mapping[str, float]:
    return cfg.settings("report").targets if cfg else {}


register_config_section("report", report_settings)


def kpis_section(results: Path, cfg: Config | None) -> str:
    # only the columns the KPIs read: the whole table is about 250 MB per million customers
    features = read(results, "features", columns=["customer_id", *dict.fromkeys(
        c for d in DEFINITIONS.values() for c in d[3])])
    if features is None:
        return ""
    sc = _segment_column(results, cfg)
    col, seg = (sc if sc else (None, None))
    kt = kpi_table(features, seg, col)
    targets = _targets(cfg)
    tiles = []
    for row in kt.iter_rows(named=True):
        items = []
        for k, (label, higher, pct) in KPIS.items():
            if k not in kt.columns or row[k] is None:
                continue
            lo, hi = row[f"{k}_ci_low"], row[f"{k}_ci_high"]
            status = ""
            if k in targets:
                t = targets[k]
                if lo is not None and hi is not None and lo <= t <= hi:
                    status = '<span class="warn">target within CI</span>'
                elif (row[k] >= t) == higher:
                    status = '<span class="ok">meets target</span>'
                else:
                    status = '<span class="flag">misses target</span>'
                status = f" · target {fmt(t, pct)} {status}"
            items.append(f'<div class="k" data-kpi="{k}" data-value="{row[k]!r}">{esc(label)}: '
                         f'<b>{fmt(row[k], pct)}</b> <span class="muted">(95 % CI {fmt(lo, pct)} – {fmt(hi, pct)})'
                         f"</span>{status}</div>")
        tiles.append(f'<div class="tile" data-segment="{esc(row["segment"])}"><div class="v">{esc(row["segment"])}</div>'
                     f'<div class="k">{row["n"]:,} customers</div>{"".join(items)}</div>')
    by = f"by {col}" if col else "over all customers"
    tgt = ("Targets from [report.targets] in the config." if targets else
           "No targets set: add [report.targets] to the config (e.g. avg_order_value_12m = 60).")
    note = ("Each KPI is a ratio of sums over the customers of the tile, the same definition as the club "
            "table: net revenue and orders per customer, average order value = gross revenue / orders, "
            "return rate = returned value / gross revenue, open and click rates = opened and clicked e-mails / "
            "e-mails sent. 95 % confidence intervals by the delta method (ratio estimator), on the log scale for "
            "non-negative KPIs, and Wilson intervals at the effective sample size for the e-mail rates, so no "
            "interval leaves its KPI's range. A return rate can exceed 100 %: the returns of the last 12 months "
            "include returns of purchases made before them.")
    return (f'<section id="kpis"><h2>KPIs {by}</h2><p class="muted" id="kpi-note">{esc(note)} {tgt}</p>'
            f"<div class=\"tiles\">{''.join(tiles)}</div></section>")
