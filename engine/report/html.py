"""HTML primitives of report.html: the style sheet, number formatting, tables, figures, reading outputs.

No scripts, no network: styles are inline and every chart is an inline SVG
(:mod:`centile.report.charts`). Tables carry raw values in ``data-col`` and
``data-value`` so tests can check the page against the Parquet outputs.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl

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



def esc(v: Any) -> str:
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
    head = "".join(f'<th class="{"l" if c in left else ""}" data-col="{esc(c)}">{esc(labels.get(c, c))}</th>'
                   for c in cols)
    body = []
    for row in df.head(max_rows).iter_rows(named=True):
        cells = []
        for c in cols:
            v = row[c]
            raw = "" if v is None else (json.dumps(v, default=str) if not isinstance(v, str) else v)
            cells.append(f'<td class="{"l" if c in left else ""}" data-col="{esc(c)}" data-value="{esc(raw)}">'
                         f"{esc(fmt(v, c in pct))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    more = (f'<p class="muted">{df.height - max_rows:,} more rows in the Parquet file.</p>'
            if df.height > max_rows else "")
    ident = f' id="{esc(table_id)}"' if table_id else ""
    return (f'<div class="scroll"><table{ident}><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody>'
            f"</table></div>{more}")


def chart(svg: str, caption: str) -> str:
    return f'<figure class="chart" role="img" aria-label="{esc(caption)}">{svg}<figcaption class="muted">{esc(caption)}</figcaption></figure>'


def read(results: Path, name: str, columns: list[str] | None = None) -> pl.DataFrame | None:
    """``<name>.parquet`` of a results folder (only ``columns`` when given: per-customer tables
    are large), None when absent."""
    p = results / f"{name}.parquet"
    if not p.exists():
        return None
    if columns is not None:
        have = pl.read_parquet_schema(p)
        columns = [c for c in columns if c in have]
    return pl.read_parquet(p, columns=columns)


def read_json(results: Path, name: str) -> dict[str, Any] | None:
    p = results / name
    try:
        return json.loads(p.read_text()) if p.exists() else None
    except ValueError:
        return None
