"""``centile run`` stage of attribution: touchpoint paths (or ``[attribution] paths``) → every model,
overall and per club / RFM segment, beside the uplift measured against control groups. With
``centile run --state DIR`` (the run option ``refresh_state``) the conversions come from the
refresh state's order totals (:mod:`centile.refresh.order_totals`)."""

from __future__ import annotations

import logging

from centile.attribution.settings import DEFAULT_SEGMENTS, attribution_settings
from centile.config import register_config_section
from centile.pipeline import Context, Stage, register_stage
from centile.pipeline.parts import config_part

log = logging.getLogger(__name__)


def _run(ctx: Context) -> dict[str, int]:
    from centile.attribution.compute import (
        attribution_from_session,
        segment_columns,
        summary_doc,
        write_attribution,
    )

    st = ctx.cfg.settings("attribution")
    want = st.segments if st.segments is not None else DEFAULT_SEGMENTS
    segs = segment_columns([ctx.frame_columns("segments", want), ctx.frame_columns("clubs", want)], st.segments,
                           available=[c for n in ("segments", "clubs") for c in ctx.frame_names(n)])
    orders = None
    state = None if st.paths else ctx.option("refresh_state")
    if state:  # centile run --state: the conversions from the refresh state
        from centile.refresh.run import NO_ORDER_TOTALS, state_order_totals

        orders = state_order_totals(state)
        if orders is None:
            log.warning(NO_ORDER_TOTALS)
            ctx.notes.append(f"attribution: {NO_ORDER_TOTALS}")
    with ctx.staging.timed("attribution"):
        res = attribution_from_session(ctx.open(), st, segs, ctx.frame_or_none("uplift"), progress=ctx.say,
                                       orders=orders)
    ctx.summaries["attribution"] = summary_doc(res)
    if state:
        ctx.summaries["attribution"]["orders"] = "batch files" if orders is None else "refresh state"
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
    config=config_part("as_of", "strict", "tables", "attribution"), skip=_skip,
    # a run over a refresh state: the ledger's fingerprints (a new ingest recomputes the attribution)
    options=lambda o: o.get("refresh_state"), from_state=lambda state: _from_state(state)))


def _from_state(state: dict) -> tuple[str, ...]:
    from centile.refresh.run import order_totals_served

    return order_totals_served(state)


register_config_section("attribution", attribution_settings)
