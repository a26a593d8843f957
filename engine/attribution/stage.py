"""``centile run`` stage of attribution: touchpoint paths (or ``[attribution] paths``) → every model,
overall and per club / RFM segment, beside the uplift measured against control groups."""

from __future__ import annotations

from centile.attribution.compute import (
    DEFAULT_SEGMENTS,
    attribution_from_session,
    attribution_settings,
    segment_columns,
    summary_doc,
    write_attribution,
)
from centile.config import register_config_section
from centile.pipeline import Context, Stage, register_stage
from centile.pipeline.parts import config_part


def _run(ctx: Context) -> dict[str, int]:
    st = ctx.cfg.settings("attribution")
    want = st.segments if st.segments is not None else DEFAULT_SEGMENTS
    segs = segment_columns([ctx.frame_columns("segments", want), ctx.frame_columns("clubs", want)], st.segments,
                           available=[c for n in ("segments", "clubs") for c in ctx.frame_names(n)])
    with ctx.staging.timed("attribution"):
        res = attribution_from_session(ctx.open(), st, segs, ctx.frame_or_none("uplift"), progress=ctx.say)
    ctx.summaries["attribution"] = summary_doc(res)
    ctx.notes.extend(res.notes)
    return write_attribution(res, ctx.staging)


def _skip(ctx: Context) -> str | None:
    if ctx.cfg.settings("attribution").paths:
        return None
    return None if ctx.open().has("touchpoints") else "no touchpoints table and no [attribution] paths"


STAGE = register_stage(Stage(
    "attribution", _run,
    writes=("attribution", "attribution_removal", "attribution_transitions", "attribution_incrementality"),
    uses=("segments", "clubs", "uplift"), tables=("orders", "touchpoints", "contacts"),
    config=config_part("as_of", "strict", "tables", "attribution"), skip=_skip))

register_config_section("attribution", attribution_settings)
