"""report.html section of customer value: models ± SE, the CLV distribution, holdout accuracy, groups."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from centile.config import Config
from centile.report import charts
from centile.report.html import chart, esc, fmt, read, read_json, table
from centile.report.sections import register_section


def clv_section(results: Path, cfg: Config | None = None) -> str:
    model = read_json(results, "clv_model.json")
    clv = read(results, "clv", columns=["clv", "p_alive", "p_repurchase"])
    if model is None or clv is None:
        return ""
    st = model.get("settings", {})
    rows = [{"model": m["name"], "parameters": ", ".join(f"{k} = {fmt(v)} ± {fmt(m['se'].get(k))}"
                                                         for k, v in m["params"].items()),
             "log_likelihood": m["loglik"], "customers": m["n"], "converged": m["converged"]}
            for m in model.get("models", [])]
    head = (f'<p class="muted">Calibration to {esc(model.get("calibration_end"))}; horizon {fmt(st.get("horizon"))} '
            f'{esc(st.get("time_unit"))}s; monthly discount rate {fmt(st.get("discount_rate_monthly"), True)}; '
            f'margin {fmt(st.get("margin"), True)}. Parameters ± standard errors (from the Hessian).</p>')
    parts = [head, table(pl.DataFrame(rows), left=("model", "parameters"), table_id="clv-models")]
    sel = model.get("selection")
    if sel:
        cands = pl.DataFrame([{"model": c["name"], "chosen": bool(c.get("chosen")), "log_likelihood": c.get("loglik"),
                               "holdout_mae_per_customer": c.get("holdout_mae_per_customer"),
                               "note": c.get("error") or " ".join(c.get("notes") or []) or ""}
                              for c in sel.get("candidates", [])],
                             schema={"model": pl.String, "chosen": pl.Boolean, "log_likelihood": pl.Float64,
                                     "holdout_mae_per_customer": pl.Float64, "note": pl.String})
        parts += [f'<h3>Model choice</h3><p id="clv-selection" data-chosen="{esc(sel.get("chosen"))}" '
                  f'data-criterion="{esc(sel.get("criterion"))}">{esc(sel.get("reason"))}.</p>',
                  table(cands, left=("model", "note"), table_id="clv-candidates")]
    notes = model.get("notes") or []
    if notes:
        flag = '<span class="warn">check</span> '
        parts.append('<ul id="clv-notes">' + "".join(
            f"<li>{flag if 'edge of its parameter space' in n else ''}{esc(n)}</li>" for n in notes) + "</ul>")
    svg = charts.histogram(clv["clv"].to_numpy(), title="Customer lifetime value over the horizon",
                           xlabel="CLV (log scale)", log_x=True)
    q = clv.select(pl.col("clv").sum().alias("total"), pl.col("clv").mean().alias("mean"),
                   pl.col("clv").median().alias("median"), pl.col("p_alive").mean().alias("p_alive_mean"),
                   pl.col("p_repurchase").mean().alias("p_repurchase_mean"))
    parts += [table(q, table_id="clv-totals"), chart(svg, "CLV distribution (customers with CLV > 0)")]
    hold = read(results, "clv_holdout")
    if hold is not None:
        by = hold.filter(pl.col("frequency") != "all")
        svg = charts.paired_bars(by["frequency"].to_list(), by["actual_mean"].to_list(), by["predicted_mean"].to_list(),
                                 a_label="actual", b_label="predicted", title="Holdout transactions per customer",
                                 xlabel="repeat transactions in the calibration period", ylabel="mean per customer")
        parts += ["<h3>Holdout accuracy</h3>", table(hold, left=("frequency",), table_id="clv-holdout"),
                  chart(svg, "Predicted vs actual holdout transactions by calibration frequency")]
    groups = read(results, "clv_groups")
    if groups is not None:
        parts += ["<h3>Per club and RFM segment</h3>",
                  table(groups, left=("grouping", "group"), table_id="clv-groups",
                        pct=("p_alive_mean", "churn_risk_mean", "p_repurchase_mean"))]
    return f'<section id="clv"><h2>Customer value</h2>{"".join(parts)}</section>'


register_section("clv", "Customer value", clv_section)
