"""The KPI tiles: per club (or ``[report] segment_by``) means with 95 % CIs and target verdicts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import polars as pl

from centile.config import Config, check_keys, register_config_section, suggest
from centile.errors import ConfigError
from centile.report.html import esc, fmt, read

#: KPIs of the tiles: feature column, label, larger-is-better, percent format
KPIS: dict[str, tuple[str, bool, bool]] = {
    "net_revenue_12m": ("net revenue per customer (12m)", True, False),
    "orders_12m": ("orders per customer (12m)", True, False),
    "avg_order_value_12m": ("average order value (12m)", True, False),
    "return_rate_12m": ("return rate (12m)", False, True),
    "open_rate_12m": ("e-mail open rate (12m)", True, True),
    "click_rate_12m": ("e-mail click rate (12m)", True, True),
}

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
    """Per segment (and 'all customers'): n, and each KPI's mean with a 95 % CI (normal approximation)."""
    base = features.select("customer_id", *[k for k in KPIS if k in features.columns])
    if seg is not None and col is not None:
        base = base.join(seg, on="customer_id", how="left").with_columns(pl.col(col).fill_null(f"no {col}"))
    else:
        col = "segment"
        base = base.with_columns(pl.lit("all").alias(col))
    everyone = base.with_columns(pl.lit("all customers").alias(col))
    frames = []
    for part in (everyone, base):
        aggs = [pl.len().alias("n")]
        for k in KPIS:
            if k not in part.columns:
                continue
            x = pl.col(k).cast(pl.Float64)
            aggs += [x.mean().alias(f"{k}"), x.count().alias(f"{k}__n"), x.std().alias(f"{k}__sd")]
        frames.append(part.group_by(col).agg(aggs))
    out = pl.concat(frames).sort(pl.col(col) != "all customers", col)
    for k in KPIS:
        if k in out.columns:
            half = 1.959964 * pl.col(f"{k}__sd") / pl.col(f"{k}__n").cast(pl.Float64).sqrt()
            out = out.with_columns((pl.col(k) - half).alias(f"{k}_ci_low"), (pl.col(k) + half).alias(f"{k}_ci_high"))
    return out.rename({col: "segment"}).drop([c for c in out.columns if c.endswith(("__sd", "__n"))])


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
    features = read(results, "features")
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
    return (f'<section id="kpis"><h2>KPIs {by}</h2><p class="muted">Means with 95 % confidence intervals '
            f"(normal approximation). {tgt}</p><div class=\"tiles\">{''.join(tiles)}</div></section>")
