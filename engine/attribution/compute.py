"""Attribution: settings, every model overall and per segment, attribution beside incrementality.

Outputs (see :func:`write_attribution`):

* ``attribution.parquet`` -- model, breakdown, segment, channel, conversions, value, share
  (share of the segment's attributed conversions);
* ``attribution_removal.parquet`` -- Markov order, breakdown, segment, channel, removal effects,
  ``p_conversion`` and ``p_conversion_removed``;
* ``attribution_transitions.parquet`` -- the named transition matrix of each order (overall);
* ``attribution_incrementality.parquet`` -- per channel whose name equals a contact ``medium``
  (case-insensitive, or mapped in ``[attribution] channel_media``): attributed conversions per
  model beside the incremental orders measured by the uplift stage (``incremental`` of the
  ``orders`` outcome, overall breakdown, summed over the campaigns of that medium and their
  arms), and their ratio. ``incremental_ci_low``/``_high`` add up the per-campaign interval bounds:
  wider than the interval of the sum, never narrower.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from centile.attribution import models as md
from centile.attribution.journeys import Journeys
from centile.attribution.settings import (  # noqa: F401  (re-exported: the settings live in a light module)
    DEFAULT_SEGMENTS,
    KEYS,
    AttributionSettings,
    attribution_settings,
    parse_settings,
)
from centile.errors import ConfigError

log = logging.getLogger(__name__)

ATTRIBUTION_COLUMNS = ("model", "breakdown", "segment", "channel", "conversions", "value", "share")


@dataclass(frozen=True)
class AttributionResult:
    attribution: pl.DataFrame
    removal: pl.DataFrame
    transitions: pl.DataFrame
    incrementality: pl.DataFrame | None
    summary: dict[str, Any]
    notes: tuple[str, ...]
    out: Path | None = None


def _models(j: Journeys, st: AttributionSettings) -> tuple[pl.DataFrame, list[md.MarkovResult]]:
    parts = [md.rule_based(j, st.half_life_days)]
    if st.shapley or (st.shapley is None and len(j.channels) <= md.kp.MAX_SHAPLEY_CHANNELS):
        parts.append(md.shapley(j))
    mk = [md.markov(j, k) for k in st.markov_orders]
    parts += [md.markov_rows(r, j) for r in mk]
    return pl.concat(parts), mk


def _segment_frame(j: Journeys, segments: pl.DataFrame | None, names: tuple[str, ...] | None,
                   notes: list[str]) -> list[tuple[str, pl.Series]]:
    """Per breakdown, the segment label of every journey (null: not in any segment)."""
    if segments is None or j.customer_id is None:
        if names:
            notes.append("attribution: per-segment models need touchpoint journeys and segments; none computed")
        return []
    cols = names if names is not None else tuple(c for c in DEFAULT_SEGMENTS if c in segments.columns)
    missing = [c for c in cols if c not in segments.columns]
    if missing:
        raise ConfigError(f"[attribution] segments: no column {missing[0]!r} in the segments "
                          f"(available: {', '.join(c for c in segments.columns if c != 'customer_id')})")
    if not cols:
        return []
    seg = segments.select("customer_id", *cols).unique("customer_id", keep="first")
    joined = j.customer_id.to_frame("customer_id").join(seg, on="customer_id", how="left", maintain_order="left")
    return [(c, joined[c].cast(pl.String)) for c in cols]


def attribute(j: Journeys, st: AttributionSettings, segments: pl.DataFrame | None = None,
              progress: Any = None) -> AttributionResult:
    """Every configured model on ``j`` overall and per segment of ``segments`` (customer_id + columns)."""
    notes: list[str] = []
    say = progress or (lambda _m: None)
    say(f"attribution: {j.n:,} journeys over {len(j.channels)} channels")
    rows, removals, transitions = [], [], []

    def run(sub: Journeys, breakdown: str, segment: str) -> None:
        frame, mk = _models(sub, st)
        rows.append(frame.with_columns(breakdown=pl.lit(breakdown), segment=pl.lit(segment)))
        for r in mk:
            removals.append(r.removal.with_columns(
                order=pl.lit(r.order, pl.Int32), breakdown=pl.lit(breakdown), segment=pl.lit(segment),
                p_conversion=pl.lit(r.p_conversion)))
            if breakdown == "overall":
                transitions.append(r.transitions.with_columns(order=pl.lit(r.order, pl.Int32)))

    run(j, "overall", "all")
    for name, labels in _segment_frame(j, segments, st.segments, notes):
        say(f"attribution: per {name}")
        present = labels.drop_nulls().unique().sort().to_list()
        for value in present:
            # a boolean mask per label, not an object array of every journey's label string
            idx = np.flatnonzero((labels == value).fill_null(False).to_numpy())
            sub = j.take(idx)
            if sub.conv.sum() <= 0:
                continue
            run(sub, name, value)
    if st.shapley is None and len(j.channels) > md.kp.MAX_SHAPLEY_CHANNELS:
        notes.append(f"attribution: the full Shapley value is limited to {md.kp.MAX_SHAPLEY_CHANNELS} channels "
                     f"(2**C coalitions); {len(j.channels)} channels, so only the simplified Shapley value is given")
    if not j.has_time:
        notes.append("attribution: time decay needs touch timestamps; a path table has none, so it is left out")
    att = pl.concat(rows)
    att = att.with_columns(share=pl.when(pl.col("conversions").sum().over("model", "breakdown", "segment") != 0)
                           .then(pl.col("conversions") / pl.col("conversions").sum().over("model", "breakdown",
                                                                                             "segment"))
                           .otherwise(0.0)).select(ATTRIBUTION_COLUMNS)
    rem = (pl.concat(removals).select("order", "breakdown", "segment", "channel", "removal_effect",
                                      "removal_effect_value", "p_conversion", "p_conversion_removed")
           if removals else pl.DataFrame(schema={"order": pl.Int32, "breakdown": pl.String, "segment": pl.String,
                                                 "channel": pl.String, "removal_effect": pl.Float64,
                                                 "removal_effect_value": pl.Float64, "p_conversion": pl.Float64,
                                                 "p_conversion_removed": pl.Float64}))
    tr = (pl.concat(transitions).select("order", "from_state", "to_state", "weight", "probability")
          if transitions else pl.DataFrame(schema={"order": pl.Int32, "from_state": pl.String, "to_state": pl.String,
                                                   "weight": pl.Float64, "probability": pl.Float64}))
    if j.unattributed_conversions:
        notes.append(f"attribution: {j.unattributed_conversions:,.0f} conversions had no touchpoint in their "
                     f"{st.lookback_days}-day lookback and are not attributed")
    summary = {"journeys": j.n, "channels": list(j.channels), "conversions": float(j.conv.sum()),
               "nulls": float(j.null.sum()), "value": float(j.value.sum()),
               "unattributed_conversions": j.unattributed_conversions,
               "models": att["model"].unique(maintain_order=True).to_list(),
               "breakdowns": att["breakdown"].unique(maintain_order=True).to_list(),
               "settings": {"lookback_days": st.lookback_days, "collapse_repeats": st.collapse_repeats,
                            "max_path_length": st.max_path_length, "half_life_days": st.half_life_days,
                            "markov_orders": list(st.markov_orders), "shapley": st.shapley,
                            "paths": st.paths}}
    return AttributionResult(att, rem, tr, None, summary, tuple(notes))


def incrementality(att: pl.DataFrame, uplift: pl.DataFrame, media: pl.DataFrame,
                   channel_media: Mapping[str, str] | None = None) -> tuple[pl.DataFrame | None, list[str]]:
    """Attributed conversions (overall, per model) beside the incremental orders measured by uplift.

    ``uplift``: the uplift table (UPLIFT_COLUMNS); ``media``: campaign (string) → medium.
    A channel maps to the medium of the same name (case-insensitive) unless ``channel_media`` says
    otherwise. Returns ``None`` and a note when no channel matches a tested medium.
    """
    from centile.uplift.compute import preferred_rows

    notes: list[str] = []
    inc = (preferred_rows(uplift.filter((pl.col("breakdown") == "overall") & (pl.col("outcome") == "orders")))
           .join(media.with_columns(pl.col("campaign").cast(pl.String)), on="campaign", how="inner")
           .with_columns(medium=pl.col("medium").str.to_lowercase())
           .group_by("medium").agg(pl.col("incremental").sum().alias("incremental_conversions"),
                                   pl.col("uplift_ci_low").mul(pl.col("n_arm")).sum().alias("incremental_ci_low"),
                                   pl.col("uplift_ci_high").mul(pl.col("n_arm")).sum().alias("incremental_ci_high"),
                                   pl.col("campaign").n_unique().alias("campaigns")))
    cm = {k.lower(): v.lower() for k, v in (channel_media or {}).items()}
    overall = att.filter(pl.col("breakdown") == "overall").with_columns(
        medium=pl.col("channel").str.to_lowercase().replace(cm))
    out = overall.join(inc, on="medium", how="inner").with_columns(
        ratio=pl.when(pl.col("incremental_conversions") != 0)
        .then(pl.col("conversions") / pl.col("incremental_conversions")).otherwise(None)
    ).select("channel", "medium", "model", pl.col("conversions").alias("attributed_conversions"),
             "incremental_conversions", "incremental_ci_low", "incremental_ci_high", "campaigns", "ratio"
             ).sort("channel", "model")
    if out.height == 0:
        tested = ", ".join(sorted(inc["medium"].to_list())) or "none"
        notes.append(f"attribution: no channel matches a tested contact medium (tested: {tested}); map them in "
                     "[attribution] channel_media to compare attribution with incrementality")
        return None, notes
    notes.append("attribution vs incrementality: channels matched to contact media by name "
                 f"({', '.join(sorted(set(out['channel'].to_list())))}); incremental = uplift of orders per "
                 "customer x treated customers in the uplift response window, attributed = all conversions "
                 "in the lookback, so the ratio also reflects the different windows")
    return out, notes


def write_attribution(res: AttributionResult, staging: Any) -> dict[str, int]:
    """Write the result files into ``staging`` (a :class:`~centile.io.outputs.Staging`)."""
    rows = {}
    for name, df in (("attribution", res.attribution), ("attribution_removal", res.removal),
                     ("attribution_transitions", res.transitions),
                     ("attribution_incrementality", res.incrementality)):
        if df is None:
            continue
        df.write_parquet(staging.path(f"{name}.parquet"), compression="zstd")
        rows[name] = df.height
    return rows


def summary_doc(res: AttributionResult) -> dict[str, Any]:
    return dict(res.summary) | {"notes": list(res.notes)}


def segment_columns(frames: Sequence[pl.DataFrame | None], names: tuple[str, ...] | None = None,
                    available: Sequence[str] | None = None) -> pl.DataFrame | None:
    """customer_id + the segment columns of the given frames (segments, clubs), joined; a column
    comes from the first frame that has it. With ``names`` (``[attribution] segments``; None: the
    :data:`DEFAULT_SEGMENTS`), only those columns are taken: the others would be copied for every
    customer for nothing. A named column no frame has raises :class:`ConfigError` listing
    ``available`` (default: the frames' columns; a stage that read only the named columns passes
    every column of their files)."""
    frames = [f for f in frames if f is not None and "customer_id" in f.columns]
    if not frames:
        return None
    available = list(dict.fromkeys(c for c in (available if available is not None else
                                               (c for f in frames for c in f.columns)) if c != "customer_id"))
    want = names if names is not None else DEFAULT_SEGMENTS
    if names is not None:
        missing = [c for c in names if c not in available]
        if missing:
            raise ConfigError(f"[attribution] segments: no column {missing[0]!r} in the segments "
                              f"(available: {', '.join(available)})")
    out = None
    for f in frames:
        cols = [c for c in f.columns if c != "customer_id" and c in want and (out is None or c not in out.columns)]
        if out is not None and not cols:
            continue
        f = f.select("customer_id", *cols)
        out = f if out is None else out.join(f, on="customer_id", how="full", coalesce=True)
    return out


def journeys_for(session: Any, st: AttributionSettings, progress: Any = None, orders: Any = None) -> Journeys:
    """The journeys of the run: the path table of ``[attribution] paths`` or the session's touchpoints
    (the conversions from ``orders``, a refresh state's order totals, when given)."""
    from centile.attribution.journeys import journeys_from_session, read_path_table

    if st.paths:
        return read_path_table(st.paths, st.separator, collapse_repeats=st.collapse_repeats,
                               max_path_length=st.max_path_length)
    if session is None or not session.has("touchpoints"):
        raise ConfigError("attribution needs the touchpoints table (customer_id, ts, channel) or a path table "
                          "in [attribution] paths")
    return journeys_from_session(session, lookback_days=st.lookback_days, collapse_repeats=st.collapse_repeats,
                                 max_path_length=st.max_path_length, progress=progress, orders=orders)


def contact_media(session: Any) -> pl.DataFrame | None:
    """campaign (string) → medium of the contacts table, or None without a medium column."""
    if session is None or not session.has("contacts", "medium"):
        return None
    from centile.backend.session import sorted_union

    # on a cluster each partition's pairs come from its worker, merged there
    return session.everywhere("attribution: media", _media_of, sorted_union, tables=("contacts",))


def _media_of(session: Any) -> pl.DataFrame:
    return session.frame("SELECT DISTINCT CAST(campaign_id AS VARCHAR) AS campaign, CAST(medium AS VARCHAR) AS medium "
                         "FROM contacts WHERE medium IS NOT NULL ORDER BY 1, 2")


def attribution_from_session(session: Any, st: AttributionSettings, segments: pl.DataFrame | None = None,
                             uplift: pl.DataFrame | None = None, progress: Any = None,
                             orders: Any = None) -> AttributionResult:
    """Journeys → every model overall and per segment → beside the uplift table when given
    (``orders``: a refresh state's order totals for the conversions, :func:`journeys_for`)."""
    from dataclasses import replace

    j = journeys_for(session, st, progress, orders)
    res = attribute(j, st, segments, progress)
    notes = list(res.notes)
    inc = None
    if uplift is not None and uplift.height:
        media = contact_media(session)
        if media is None:
            notes.append("attribution: the contacts table has no medium column; no comparison with incrementality")
        else:
            inc, more = incrementality(res.attribution, uplift, media, st.channel_media)
            notes += more
    elif uplift is None:
        notes.append("attribution: no uplift table (run with contacts that have a control group); attribution "
                     "is not compared with measured incrementality")
    return replace(res, incrementality=inc, notes=tuple(notes))
