"""``report.html``: one self-contained page over a run's output folder.

No scripts, no network: styles are inline and every chart is an inline SVG
(:mod:`centile.charts`). Sections appear when their outputs exist: data
freshness and run configuration (always), KPI tiles per segment with targets
and 95 % confidence intervals, clubs, the RFM grid, segment profiles, customer
value, uplift. Each section is a ``<section id=...>`` whose tables carry the
numbers of the Parquet outputs, so tests can check the page against them.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from centile.config import Config
from centile.errors import ConfigError
from centile.report import charts

#: KPIs of the tiles: feature column, label, larger-is-better, percent format
KPIS: dict[str, tuple[str, bool, bool]] = {
    "net_revenue_12m": ("net revenue per customer (12m)", True, False),
    "orders_12m": ("orders per customer (12m)", True, False),
    "avg_order_value_12m": ("average order value (12m)", True, False),
    "return_rate_12m": ("return rate (12m)", False, True),
    "open_rate_12m": ("e-mail open rate (12m)", True, True),
    "click_rate_12m": ("e-mail click rate (12m)", True, True),
}

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1a1a1a;margin:0;background:#f6f6f4}
main{max-width:1180px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px} h2{font-size:18px;margin:0 0 12px;border-bottom:2px solid #0072B2;padding-bottom:4px}
h3{font-size:15px;margin:16px 0 8px}
section{background:#fff;border:1px solid #ddd;border-radius:6px;padding:16px 20px;margin:16px 0}
table{border-collapse:collapse;width:100%;font-size:12.5px;margin:8px 0}
th,td{border-bottom:1px solid #e3e3e3;padding:4px 8px;text-align:right;vertical-align:top;white-space:nowrap}
td[data-col=description],td[data-col=top_categories],td[data-col=parameters],td[data-col=files]{white-space:normal}
th{background:#f0f3f7;position:sticky;top:0} td.l,th.l{text-align:left}
.muted{color:#5a5a5a;font-size:12.5px} .flag{color:#fff;background:#D55E00;padding:1px 6px;border-radius:3px;font-weight:600}
.ok{color:#fff;background:#009E73;padding:1px 6px;border-radius:3px} .warn{color:#1a1a1a;background:#E69F00;padding:1px 6px;border-radius:3px}
.tiles{display:grid;grid-template-columns:repeat(auto-fill,minmax(250px,1fr));gap:10px}
.tile{border:1px solid #ddd;border-radius:6px;padding:10px 12px;background:#fafafa}
.tile .v{font-size:20px;font-weight:650;overflow-wrap:anywhere} .tile .k{font-size:12px;color:#444}
.chart{overflow-x:auto;margin:8px 12px 8px 0;display:inline-block;vertical-align:top;max-width:100%} .chart svg{max-width:100%;height:auto}
td[data-col=description]{min-width:340px} td[data-col=top_categories]{min-width:160px}
nav a{margin-right:12px;color:#0057a0} .scroll{overflow-x:auto}
"""


def _esc(v: Any) -> str:
    return html.escape(str(v), quote=True)


def fmt(v: Any, pct: bool = False) -> str:
    """Numbers as people read them: thousands separators, 3–4 significant digits."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if pct and isinstance(v, int | float):
        return f"{100 * v:.1f} %"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if v != 0 and abs(v) < 0.001:
            return f"{v:.2e}"
        return f"{v:,.0f}" if abs(v) >= 10_000 else f"{v:,.4g}" if abs(v) >= 1 else f"{v:.3f}"
    if isinstance(v, list):
        return ", ".join(str(x) for x in v)
    return str(v)


def table(df: pl.DataFrame, *, pct: Sequence[str] = (), left: Sequence[str] = (), table_id: str = "",
          labels: Mapping[str, str] | None = None, max_rows: int = 200) -> str:
    """A DataFrame as an HTML table; ``data-col`` and ``data-value`` hold raw values for tests."""
    labels = labels or {}
    cols = df.columns
    head = "".join(f'<th class="{"l" if c in left else ""}" data-col="{_esc(c)}">{_esc(labels.get(c, c))}</th>'
                   for c in cols)
    body = []
    for row in df.head(max_rows).iter_rows(named=True):
        cells = []
        for c in cols:
            v = row[c]
            raw = "" if v is None else (json.dumps(v, default=str) if not isinstance(v, str) else v)
            cells.append(f'<td class="{"l" if c in left else ""}" data-col="{_esc(c)}" data-value="{_esc(raw)}">'
                         f"{_esc(fmt(v, c in pct))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    more = (f'<p class="muted">{df.height - max_rows:,} more rows in the Parquet file.</p>'
            if df.height > max_rows else "")
    ident = f' id="{_esc(table_id)}"' if table_id else ""
    return (f'<div class="scroll"><table{ident}><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody>'
            f"</table></div>{more}")


def _chart(svg: str, caption: str) -> str:
    return f'<figure class="chart" role="img" aria-label="{_esc(caption)}">{svg}<figcaption class="muted">{_esc(caption)}</figcaption></figure>'


def _read(results: Path, name: str) -> pl.DataFrame | None:
    p = results / f"{name}.parquet"
    return pl.read_parquet(p) if p.exists() else None


def _read_json(results: Path, name: str) -> dict[str, Any] | None:
    p = results / name
    try:
        return json.loads(p.read_text()) if p.exists() else None
    except ValueError:
        return None


# ---------------------------------------------------------------------------
# sections

def _header(results: Path, manifest: dict[str, Any]) -> str:
    inputs = (manifest.get("summary") or {}).get("inputs") or {}
    tables = inputs.get("tables") or {}
    orders = tables.get("orders") or {}
    rows = [{"table": n, "rows_read": t.get("rows_read"), "rows_valid": t.get("rows_valid"),
             "rows_rejected": t.get("rows_rejected"), "from": (t.get("date_min") or "")[:10] or None,
             "to": (t.get("date_max") or "")[:10] or None, "customers": t.get("customers")}
            for n, t in tables.items()]
    freshness = (f'<p id="freshness">Newest order: <b data-k="newest_order">{_esc((orders.get("date_max") or "—")[:19])}</b>'
                 f' · as_of: <b data-k="as_of">{_esc(manifest.get("as_of") or "—")}</b>'
                 f' · rejected rows: <b data-k="rejects">{fmt(inputs.get("rows_rejected"))}</b>'
                 f' (set aside in rejects.parquet)</p>')
    counts = table(pl.DataFrame(rows), left=("table", "from", "to"), table_id="input-rows") if rows else ""
    stages = manifest.get("stages") or {}
    st = pl.DataFrame([{"stage": k, "status": v.get("status"), "seconds": v.get("seconds"),
                        "files": ", ".join(v.get("files") or []) or None, "note": v.get("reason")}
                       for k, v in stages.items()]) if stages else None
    cfg = manifest.get("config") or {}
    ver = manifest.get("versions") or {}
    conf = (f'<p class="muted">Config: {_esc(cfg.get("source") or "--data folder")}; windows (days) '
            f'{_esc(cfg.get("windows_days"))}; club strategy {_esc(cfg.get("strategy"))}; seed {_esc(cfg.get("seed"))}. '
            f'Versions: {_esc(", ".join(f"{k} {v}" for k, v in ver.items()))}. Run created {_esc(manifest.get("created"))}.</p>')
    unread = [f"{t}: present, not read by any stage yet (not validated)" for t in inputs.get("not_read_by_this_job") or []]
    notes = "".join(f"<li>{_esc(n)}</li>" for n in (manifest.get("notes") or []) + (inputs.get("notes") or []) + unread)
    return (f'<section id="data"><h2>Data and run</h2>{freshness}{counts}'
            + (table(st, left=("stage", "status", "files", "note"), table_id="stages") if st is not None else "")
            + (f'<ul class="muted">{notes}</ul>' if notes else "") + conf + "</section>")


def _segment_column(results: Path, cfg: Config | None) -> tuple[str, pl.DataFrame] | None:
    """The segmentation the KPI tiles break down by: [report] segment_by, else club."""
    by = str((cfg.section("report") if cfg else {}).get("segment_by", "club"))
    if by == "club":
        clubs = _read(results, "clubs")
        if clubs is None:
            return None
        return "club", clubs.select("customer_id", pl.col("club").cast(pl.String))
    seg = _read(results, "segments")
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


def _targets(cfg: Config | None) -> dict[str, float]:
    raw = dict((cfg.section("report") if cfg else {}).get("targets", {}) or {})
    unknown = set(raw) - set(KPIS)
    if unknown:
        raise ConfigError(f"[report.targets]: unknown KPI(s) {sorted(unknown)}; targets exist for {', '.join(KPIS)}")
    try:
        return {k: float(v) for k, v in raw.items()}
    except (TypeError, ValueError):
        raise ConfigError("[report.targets]: every target must be a number, e.g. avg_order_value_12m = 60") from None


def _kpis(results: Path, cfg: Config | None) -> str:
    features = _read(results, "features")
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
            items.append(f'<div class="k" data-kpi="{k}" data-value="{row[k]!r}">{_esc(label)}: '
                         f'<b>{fmt(row[k], pct)}</b> <span class="muted">(95 % CI {fmt(lo, pct)} – {fmt(hi, pct)})'
                         f"</span>{status}</div>")
        tiles.append(f'<div class="tile" data-segment="{_esc(row["segment"])}"><div class="v">{_esc(row["segment"])}</div>'
                     f'<div class="k">{row["n"]:,} customers</div>{"".join(items)}</div>')
    by = f"by {col}" if col else "over all customers"
    tgt = ("Targets from [report.targets] in the config." if targets else
           "No targets set: add [report.targets] to the config (e.g. avg_order_value_12m = 60).")
    return (f'<section id="kpis"><h2>KPIs {by}</h2><p class="muted">Means with 95 % confidence intervals '
            f"(normal approximation). {tgt}</p><div class=\"tiles\">{''.join(tiles)}</div></section>")


def _clubs(results: Path) -> str:
    summary = _read(results, "club_summary")
    if summary is None:
        return ""
    cols = [c for c in ("club", "tier", "size", "target_size", "eligible", "threshold", "taken_by_earlier",
                        "revenue_share_12m", "orders_12m_mean", "aov_12m", "return_rate_12m", "open_rate_12m",
                        "click_rate_12m") if c in summary.columns]
    t = table(summary.select(cols), left=("club",), table_id="club-table",
              pct=("revenue_share_12m", "return_rate_12m", "open_rate_12m", "click_rate_12m"))
    t1 = summary.filter(pl.col("tier") == 1) if "tier" in summary.columns else summary
    svg = charts.bar_chart([str(c) for c in t1["club"]], [float(v) for v in t1["revenue_share_12m"].fill_null(0) * 100],
                           title="Share of 12-month net revenue, tier 1 (top 1 %)", xlabel="% of all net revenue")
    stab = _read(results, "club_stability")
    st = ("<h3>Stability against the previous run</h3>" + table(stab, left=("club",), table_id="club-stability")
          if stab is not None else "")
    return (f'<section id="clubs"><h2>1 % clubs</h2><p class="muted">Overlap-free: each customer is in at most one '
            f"club and tier. threshold = score of the tier's last member; taken = customers ranked above it who "
            f"are in an earlier club.</p>{t}{_chart(svg, 'Revenue share per club, tier 1')}{st}</section>")


def _uplift(results: Path) -> str:
    from centile.uplift.compute import PREFERRED_METHODS, preferred_rows

    u = _read(results, "uplift")
    if u is None or u.is_empty():
        return ""
    best = preferred_rows(u)
    overall = best.filter(pl.col("breakdown") == "overall").select(
        "campaign", "arm", "outcome", "method", "n_arm", "n_control", "mean_arm", "mean_control", "uplift",
        "uplift_ci_low", "uplift_ci_high", "rel_uplift", "p_holm", "incremental", "roi", "srm_flag")
    srm = _read(results, "uplift_srm")
    flagged = (srm.filter(pl.col("flag")).unique(["campaign", "breakdown", "segment"], maintain_order=True)
               if srm is not None and "flag" in srm.columns else None)
    if flagged is not None and flagged.height:
        items = "".join(f"<li>campaign {_esc(r['campaign'])}, {_esc(r['breakdown'])} = {_esc(r['segment'])}: "
                        f"p = {fmt(r['p_value'])}</li>" for r in flagged.iter_rows(named=True))
        srm_html = (f'<div id="srm-flags"><p><span class="flag">Sample ratio mismatch</span> in '
                    f"{flagged.height} stratum(s): the arms' shares differ from the plan; do not trust the uplifts "
                    f"there.</p><ul>{items}</ul></div>")
    else:
        srm_html = '<p id="srm-flags"><span class="ok">SRM check passed</span> in every campaign and stratum.</p>'
    outcome = "response" if "response" in set(best["outcome"]) else best["outcome"][0]
    charts_html = []
    for bname in best["breakdown"].unique(maintain_order=True).to_list():
        part = best.filter(pl.col("breakdown") == bname, pl.col("outcome") == outcome).sort("campaign", "segment", "arm")
        part = part.filter(pl.col("uplift").is_not_null())
        if part.is_empty():
            continue
        shown = part.head(60)
        labels = [f"campaign {r['campaign']}" + ("" if bname == "overall" else f" · {r['segment']}")
                  + ("" if part["arm"].n_unique() == 1 else f" · {r['arm']}") for r in shown.iter_rows(named=True)]
        svg = charts.forest(labels, shown["uplift"].to_list(), shown["uplift_ci_low"].fill_null(float("nan")).to_list(),
                            shown["uplift_ci_high"].fill_null(float("nan")).to_list(),
                            title=f"Uplift in {outcome} vs control, by {bname} (95 % CI)",
                            xlabel=f"{outcome}: arm − control", flagged=shown["srm_flag"].fill_null(False).to_list())
        more = f" ({part.height - 60} more rows in uplift.parquet)" if part.height > 60 else ""
        charts_html.append(_chart(svg, f"Uplift by {bname}; diamonds: failed sample-ratio check{more}"))
    return (f'<section id="uplift"><h2>Uplift against control groups</h2>{srm_html}<p class="muted">Per campaign and '
            f"arm; intervals: {', '.join(PREFERRED_METHODS)} (first available per outcome); p_holm adjusted over "
            "segments and arms; ROI = (incremental margin − contact cost) / contact cost. Every method and "
            "breakdown is in uplift.parquet.</p>"
            + table(overall, left=("campaign", "arm", "outcome", "method"), table_id="uplift-overall",
                    pct=("rel_uplift",)) + "".join(charts_html) + "</section>")


def _clv(results: Path) -> str:
    model = _read_json(results, "clv_model.json")
    clv = _read(results, "clv")
    if model is None or clv is None:
        return ""
    st = model.get("settings", {})
    rows = [{"model": m["name"], "parameters": ", ".join(f"{k} = {fmt(v)} ± {fmt(m['se'].get(k))}"
                                                         for k, v in m["params"].items()),
             "log_likelihood": m["loglik"], "customers": m["n"], "converged": m["converged"]}
            for m in model.get("models", [])]
    head = (f'<p class="muted">Calibration to {_esc(model.get("calibration_end"))}; horizon {fmt(st.get("horizon"))} '
            f'{_esc(st.get("time_unit"))}s; monthly discount rate {fmt(st.get("discount_rate_monthly"), True)}; '
            f'margin {fmt(st.get("margin"), True)}. Parameters ± standard errors (from the Hessian).</p>')
    parts = [head, table(pl.DataFrame(rows), left=("model", "parameters"), table_id="clv-models")]
    svg = charts.histogram(clv["clv"].to_numpy(), title="Customer lifetime value over the horizon",
                           xlabel="CLV (log scale)", log_x=True)
    q = clv.select(pl.col("clv").sum().alias("total"), pl.col("clv").mean().alias("mean"),
                   pl.col("clv").median().alias("median"), pl.col("p_alive").mean().alias("p_alive_mean"),
                   pl.col("p_repurchase").mean().alias("p_repurchase_mean"))
    parts += [table(q, table_id="clv-totals"), _chart(svg, "CLV distribution (customers with CLV > 0)")]
    hold = _read(results, "clv_holdout")
    if hold is not None:
        by = hold.filter(pl.col("frequency") != "all")
        svg = charts.paired_bars(by["frequency"].to_list(), by["actual_mean"].to_list(), by["predicted_mean"].to_list(),
                                 a_label="actual", b_label="predicted", title="Holdout transactions per customer",
                                 xlabel="repeat transactions in the calibration period", ylabel="mean per customer")
        parts += ["<h3>Holdout accuracy</h3>", table(hold, left=("frequency",), table_id="clv-holdout"),
                  _chart(svg, "Predicted vs actual holdout transactions by calibration frequency")]
    groups = _read(results, "clv_groups")
    if groups is not None:
        parts += ["<h3>Per club and RFM segment</h3>",
                  table(groups, left=("grouping", "group"), table_id="clv-groups",
                        pct=("p_alive_mean", "churn_risk_mean", "p_repurchase_mean"))]
    return f'<section id="clv"><h2>Customer value</h2>{"".join(parts)}</section>'


#: later sections (segments, RFM grid, CLV, uplift) register here: name -> renderer(results, cfg)
SECTIONS: list[tuple[str, Callable[[Path, Config | None], str]]] = [
    ("kpis", _kpis),
    ("clubs", lambda results, cfg: _clubs(results)),
]


def sections() -> list[tuple[str, Callable[[Path, Config | None], str]]]:
    """Every section in page order: the ones above, then those of the later jobs."""
    from centile.segments.report import rfm_section, segments_section

    return [*SECTIONS, ("rfm", rfm_section), ("segments", segments_section),
            ("clv", lambda results, cfg: _clv(results)), ("uplift", lambda results, cfg: _uplift(results))]


def render_report(results: str | Path, cfg: Config | None = None, *, name: str | None = None) -> str:
    """The report over an output folder, as an HTML string (``name``: the folder shown in the title)."""
    results = Path(results)
    manifest = _read_json(results, "manifest.json") or {}
    parts = [_header(results, manifest)]
    for _name, render in sections():
        parts.append(render(results, cfg))
    body = "".join(p for p in parts if p)
    ids = [s.split('"')[1] for s in body.split('<section id=')[1:]]
    titles = {"data": "Data", "kpis": "KPIs", "clubs": "Clubs", "rfm": "RFM", "segments": "Segments",
              "clv": "Customer value", "uplift": "Uplift"}
    nav = " ".join(f'<a href="#{i}">{_esc(titles.get(i, i))}</a>' for i in ids)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            f"<title>centile report — as of {_esc(manifest.get('as_of') or '')}</title><style>{CSS}</style></head>"
            f"<body><main><h1>centile report</h1><p class=\"muted\">Output folder {_esc(name or results.name)} · "
            f"as of {_esc(manifest.get('as_of') or '—')}</p><nav>{nav}</nav>{body}</main></body></html>\n")


def write_report(results: str | Path, path: str | Path, cfg: Config | None = None, *,
                 name: str | None = None) -> Path:
    """Render the report over ``results`` and write it to ``path``."""
    path = Path(path)
    path.write_text(render_report(results, cfg, name=name), encoding="utf-8")
    return path
