"""report.html section of attribution: channels × models, Markov removal effects, attribution beside
the incrementality measured against control groups."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from centile.config import Config
from centile.report import charts
from centile.report.html import chart, esc, read, table
from centile.report.sections import register_section


def attribution_section(results: Path, cfg: Config | None = None) -> str:
    att = read(results, "attribution")
    if att is None:
        return ""
    overall = att.filter(pl.col("breakdown") == "overall")
    models = overall["model"].unique(maintain_order=True).to_list()
    wide = overall.pivot(on="model", index="channel", values="share").sort("channel")
    channels = wide["channel"].to_list()
    m = wide.select(models).to_numpy()
    svg = charts.heatmap(m, channels, [x.replace("_", "\n") for x in models],
                         title="Share of attributed conversions", xlabel="model", ylabel="channel", fmt="{:.0%}")
    conv = overall.pivot(on="model", index="channel", values="conversions").sort("channel")
    parts = ['<p class="muted">Conversions are orders; a journey is a customer\'s touchpoints in the lookback '
             "window before an order (or before as_of: a null journey). Markov: exact removal effects of the "
             "absorbing chain, conversions shared by removal effect; value through the mean order value of "
             "each last state. Shapley: coalition value = conversion rate of the journeys whose channels lie "
             "within the coalition. Every segment is in attribution.parquet.</p>",
             chart(svg, "Channels × models: share of attributed conversions (overall)"),
             table(conv, left=("channel",), table_id="attribution-models")]
    rem = read(results, "attribution_removal")
    if rem is not None and rem.height:
        r = (rem.filter(pl.col("breakdown") == "overall")
             .select("order", "channel", "removal_effect", "removal_effect_value", "p_conversion",
                     "p_conversion_removed").sort("order", "channel"))
        parts += ["<h3>Markov removal effects</h3>",
                  table(r, left=("channel",), table_id="attribution-removal",
                        pct=("removal_effect", "removal_effect_value", "p_conversion", "p_conversion_removed"))]
    inc = read(results, "attribution_incrementality")
    if inc is not None and inc.height:
        pick = "markov_1" if "markov_1" in inc["model"].to_list() else inc["model"][0]
        one = inc.filter(pl.col("model") == pick).sort("channel")
        svg2 = charts.paired_bars(one["channel"].to_list(), one["attributed_conversions"].to_numpy(),
                                  np.nan_to_num(one["incremental_conversions"].to_numpy()),
                                  a_label=f"attributed ({pick})", b_label="incremental (uplift × treated)",
                                  title="Attribution vs measured incrementality", xlabel="channel = contact medium",
                                  ylabel="conversions")
        parts += ["<h3>Attribution beside incrementality</h3>",
                  '<p class="muted">Attribution models credit touches; only the control-group experiments measure '
                  "what a contact caused. Channels are matched to contact media by name. Incremental = uplift of "
                  "orders × treated customers over the campaigns' response windows; attributed = conversions in "
                  f"the lookback windows of all journeys, so compare models with each other per channel. "
                  f"Chart: {esc(pick)}.</p>",
                  chart(svg2, "Attributed vs incremental conversions per tested channel"),
                  table(inc, left=("channel", "medium", "model"), table_id="attribution-incrementality")]
    return f'<section id="attribution"><h2>Attribution</h2>{"".join(parts)}</section>'


register_section("attribution", "Attribution", attribution_section)
