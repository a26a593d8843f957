"""``report.html``: one self-contained page over a run's output folder.

No scripts, no network: styles are inline and every chart is an inline SVG
(:mod:`centile.report.charts`). The page is the data-and-run header, then every
registered section in order (:mod:`centile.report.sections`): KPI tiles, then
one section per capability (clubs, RFM, segments, customer value, uplift, ...),
each present when its outputs exist. Each section is a ``<section id=...>``
whose tables carry the numbers of the Parquet outputs, so tests can check the
page against them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from centile.config import Config
from centile.report.html import CSS, esc, fmt, read_json, table
from centile.report.kpis import KPIS, kpi_table  # noqa: F401  (part of the report API)
from centile.report.sections import sections


def _header(results: Path, manifest: dict[str, Any]) -> str:
    inputs = (manifest.get("summary") or {}).get("inputs") or {}
    tables = inputs.get("tables") or {}
    orders = tables.get("orders") or {}
    rows = [{"table": n, "rows_read": t.get("rows_read"), "rows_valid": t.get("rows_valid"),
             "rows_rejected": t.get("rows_rejected"), "from": (t.get("date_min") or "")[:10] or None,
             "to": (t.get("date_max") or "")[:10] or None, "customers": t.get("customers")}
            for n, t in tables.items()]
    freshness = (f'<p id="freshness">Newest order: <b data-k="newest_order">{esc((orders.get("date_max") or "—")[:19])}</b>'
                 f' · as_of: <b data-k="as_of">{esc(manifest.get("as_of") or "—")}</b>'
                 f' · rejected rows: <b data-k="rejects">{fmt(inputs.get("rows_rejected"))}</b>'
                 f' (set aside in rejects.parquet)</p>')
    counts = table(pl.DataFrame(rows), left=("table", "from", "to"), table_id="input-rows") if rows else ""
    stages = manifest.get("stages") or {}
    st = pl.DataFrame([{"stage": k, "status": v.get("status"), "seconds": v.get("seconds"),
                        "files": ", ".join(v.get("files") or []) or None, "note": v.get("reason")}
                       for k, v in stages.items()]) if stages else None
    cfg = manifest.get("config") or {}
    ver = manifest.get("versions") or {}
    conf = (f'<p class="muted">Config: {esc(cfg.get("source") or "--data folder")}; windows (days) '
            f'{esc(cfg.get("windows_days"))}; club strategy {esc(cfg.get("strategy"))}; seed {esc(cfg.get("seed"))}. '
            f'Versions: {esc(", ".join(f"{k} {v}" for k, v in ver.items()))}. Run created {esc(manifest.get("created"))}.</p>')
    unread = [f"{t}: present, not read by any stage yet (not validated)" for t in inputs.get("not_read_by_this_job") or []]
    notes = "".join(f"<li>{esc(n)}</li>" for n in (manifest.get("notes") or []) + (inputs.get("notes") or []) + unread)
    return (f'<section id="data"><h2>Data and run</h2>{freshness}{counts}'
            + (table(st, left=("stage", "status", "files", "note"), table_id="stages") if st is not None else "")
            + (f'<ul class="muted">{notes}</ul>' if notes else "") + conf + "</section>")



def render_report(results: str | Path, cfg: Config | None = None, *, name: str | None = None) -> str:
    """The report over an output folder, as an HTML string (``name``: the folder shown in the title)."""
    results = Path(results)
    manifest = read_json(results, "manifest.json") or {}
    titles = {"data": "Data"}
    parts = [_header(results, manifest)]
    for sec in sections():
        titles[sec.id] = sec.title
        parts.append(sec.render(results, cfg))
    body = "".join(p for p in parts if p)
    ids = [s.split('"')[1] for s in body.split('<section id=')[1:]]
    nav = " ".join(f'<a href="#{i}">{esc(titles.get(i, i))}</a>' for i in ids)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            f"<title>centile report — as of {esc(manifest.get('as_of') or '')}</title><style>{CSS}</style></head>"
            f"<body><main><h1>centile report</h1><p class=\"muted\">Output folder {esc(name or results.name)} · "
            f"as of {esc(manifest.get('as_of') or '—')}</p><nav>{nav}</nav>{body}</main></body></html>\n")


def write_report(results: str | Path, path: str | Path, cfg: Config | None = None, *,
                 name: str | None = None) -> Path:
    """Render the report over ``results`` and write it to ``path``."""
    path = Path(path)
    path.write_text(render_report(results, cfg, name=name), encoding="utf-8")
    return path
