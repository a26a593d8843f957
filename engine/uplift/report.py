"""report.html section of the uplift job: the preferred interval per outcome, SRM verdicts, forest plots."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from centile.config import Config
from centile.report import charts
from centile.report.html import chart, esc, fmt, read, table
from centile.report.sections import register_section


def uplift_section(results: Path, cfg: Config | None = None) -> str:
    from centile.uplift.compute import PREFERRED_METHODS, preferred_rows

    u = read(results, "uplift")
    if u is None or u.is_empty():
        return ""
    best = preferred_rows(u)
    overall = best.filter(pl.col("breakdown") == "overall").select(
        "campaign", "arm", "outcome", "method", "n_arm", "n_control", "mean_arm", "mean_control", "uplift",
        "uplift_ci_low", "uplift_ci_high", "rel_uplift", "p_holm", "incremental", "roi", "srm_flag")
    srm = read(results, "uplift_srm")
    flagged = (srm.filter(pl.col("flag")).unique(["campaign", "breakdown", "segment"], maintain_order=True)
               if srm is not None and "flag" in srm.columns else None)
    if flagged is not None and flagged.height:
        items = "".join(f"<li>campaign {esc(r['campaign'])}, {esc(r['breakdown'])} = {esc(r['segment'])}: "
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
        charts_html.append(chart(svg, f"Uplift by {bname}; diamonds: failed sample-ratio check{more}"))
    return (f'<section id="uplift"><h2>Uplift against control groups</h2>{srm_html}<p class="muted">Per campaign and '
            f"arm; intervals: {', '.join(PREFERRED_METHODS)} (first available per outcome); p_holm adjusted over "
            "segments and arms; ROI = (incremental margin − contact cost) / contact cost. Every method and "
            "breakdown is in uplift.parquet.</p>"
            + table(overall, left=("campaign", "arm", "outcome", "method"), table_id="uplift-overall",
                    pct=("rel_uplift",)) + "".join(charts_html) + "</section>")


register_section("uplift", "Uplift", uplift_section)
