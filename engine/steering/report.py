"""report.html section of customer steering: the budget distribution, the plan by medium
and period, value against cost, and the certified optimality gap."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from centile.config import Config
from centile.report import charts
from centile.report.html import chart, esc, fmt, read, read_json, table
from centile.report.sections import register_section


def steering_section(results: Path, cfg: Config | None = None) -> str:
    doc = read_json(results, "steering.json")
    summ = read(results, "plan_summary")
    budgets = read(results, "budgets", columns=["budget"])
    if doc is None or summ is None or budgets is None:
        return ""
    gb = "unlimited" if doc.get("global_budget") is None else fmt(doc["global_budget"])
    head = (f'<p class="muted">{fmt(doc["contacts"])} contacts to {fmt(doc["customers_contacted"])} of '
            f'{fmt(doc["customers"])} customers over {doc["periods"]} periods'
            f'{" of " + fmt(doc["period_days"]) + " days" if doc.get("period_days") else ""} '
            f'(cap {doc["settings"]["cap"]}, gap {doc["settings"]["gap"]}). Global budget {gb}, spent '
            f'{fmt(doc["spend"])}.</p>'
            f'<p id="steering-gap">Plan value <b>{fmt(doc["value"])}</b>; upper bound {fmt(doc["bound"])} '
            f'(Lagrangian, &lambda; = {fmt(doc["lambda"])}); certified optimality gap '
            f'<b>{doc["gap"]:.2e}</b>: no plan under these constraints is worth more than the bound.</p>')
    parts = [head]
    b = budgets["budget"].to_numpy()
    if (b > 0).any():
        parts.append(chart(charts.histogram(b[b > 0], title="Advertising budget per customer over the horizon",
                                            xlabel="budget (log scale)", log_x=True),
                           f"Budget distribution ({int((b > 0).sum()):,} customers with a positive budget, total "
                           f"{fmt(float(b.sum()))})"))
    med = summ.filter(pl.col("level") == "medium")
    parts += ["<h3>By medium</h3>",
              table(med.select("key", "contacts", "capacity", "cost", "value", "mu").rename(
                  {"key": "medium", "value": "expected_margin"}), left=("medium",), table_id="steering-media")]
    if med.height:
        parts.append(chart(charts.paired_bars(med["key"].to_list(), med["cost"].to_list(), med["value"].to_list(),
                                              a_label="cost", b_label="expected incremental margin",
                                              title="Value vs cost by medium", xlabel="medium", ylabel="currency"),
                           "Cost of the planned contacts and their expected incremental margin"))
    per = summ.filter(pl.col("level") == "period")
    if per.height:
        parts.append(chart(charts.bar_chart(per["key"].to_list(), per["contacts"].cast(pl.Float64).to_list(),
                                            title="Planned contacts per period",
                                            xlabel="contacts"), "Contacts per period"))
    mp = summ.filter(pl.col("level") == "medium_period")
    if mp.height:
        parts += ["<h3>Capacity per period</h3>", table(
            mp.select("key", "contacts", "capacity", "cost", "value", "mu").rename(
                {"key": "medium@period", "value": "expected_margin", "mu": "nu"}),
            left=("medium@period",), table_id="steering-period-capacity")]
    seg = summ.filter(pl.col("level") == "segment")
    if seg.height:
        parts += ["<h3>By RFM segment</h3>", table(seg.select("key", "contacts", "cost", "value").rename(
            {"key": "segment", "value": "expected_margin"}), left=("segment",), table_id="steering-segments")]
    notes = doc.get("notes") or []
    if notes:
        parts.append('<ul id="steering-notes">' + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")
    return f'<section id="steering"><h2>Customer steering</h2>{"".join(parts)}</section>'


register_section("steering", "Customer steering", steering_section)
