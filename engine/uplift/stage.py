"""``centile run`` stage of the uplift: contacts + orders (or ``[uplift] path``), broken down by
the pre-treatment customer attributes of this run's segments. With ``centile run --state DIR``
(the run option ``refresh_state``) the orders come from the refresh state's order totals
(:mod:`centile.refresh.order_totals`)."""

from __future__ import annotations

import logging

from centile.config import register_config_section
from centile.pipeline import Context, Stage, register_stage
from centile.pipeline.parts import config_part
from centile.uplift.holdout import parse_holdout_spec
from centile.uplift.inputs import parse_uplift_spec

#: breakdowns of ``centile run`` when ``[uplift] segments`` is not set: attributes of the
#: customers table (via the segments stage), which no campaign changes
PRE_TREATMENT_BREAKDOWNS = ("age_band", "gender", "region")

log = logging.getLogger(__name__)


def _run(ctx: Context) -> dict[str, int]:
    from centile.uplift.compute import uplift_from_session, uplift_summary_doc, write_uplift

    spec = ctx.cfg.settings("uplift")
    s = None if spec.path else ctx.open()
    # by default only the pre-treatment columns are read (not every column of every customer)
    seg = ctx.frame_or_none("segments") if spec.segments else ctx.frame_columns("segments", PRE_TREATMENT_BREAKDOWNS)
    if seg is not None and not spec.segments:
        # Segments and clubs are measured at as_of, after the campaigns: a campaign moves
        # customers between them, so breakdowns by them are biased (and fail the SRM check).
        # By default only the customer attributes, fixed before any campaign, break down.
        keep = [c for c in PRE_TREATMENT_BREAKDOWNS if c in seg.columns]
        seg = seg.select("customer_id", *keep) if keep else None
        ctx.notes.append(
            "uplift: broken down by customer attributes only (" + (", ".join(keep) or "none present") + "); "
            "clubs, RFM and behavioural segments are measured at as_of, after the campaigns, and would bias "
            "per-segment uplifts. Name pre-campaign segment columns in [uplift] segments to add breakdowns.")
    orders = None
    state = None if spec.path else ctx.option("refresh_state")
    if state:  # centile run --state: the orders' outcome rows from the refresh state
        from centile.refresh.run import NO_ORDER_TOTALS, state_order_totals

        orders = state_order_totals(state)
        if orders is None:
            log.warning(NO_ORDER_TOTALS)
            ctx.notes.append(f"uplift: {NO_ORDER_TOTALS}")
    ctx.say("uplift: intervals, CUPED, SRM, bootstrap")
    with ctx.staging.timed("uplift"):
        res = uplift_from_session(s, ctx.cfg, seg, progress=ctx.say, orders=orders)
    ctx.publish(uplift=res.uplift, uplift_srm=res.srm)
    ctx.summaries["uplift"] = uplift_summary_doc(res)
    if state:
        ctx.summaries["uplift"]["orders"] = "batch files" if orders is None else "refresh state"
    ctx.notes.extend(res.notes)
    return write_uplift(res, ctx.staging)


def _skip(ctx: Context) -> str | None:
    if ctx.cfg.settings("uplift").path:
        return None
    return None if ctx.open().has("contacts") else "no contacts table"


STAGE = register_stage(Stage(
    "uplift", _run, writes=("uplift", "uplift_srm", "uplift_qini", "uplift_qini_summary"),
    uses=("segments",), tables=("orders", "products", "contacts", "customers"), config=config_part("seed", "as_of", "uplift", "segments"), skip=_skip,
    # a run over a refresh state: the ledger's fingerprints (a new ingest recomputes the uplift)
    options=lambda o: o.get("refresh_state"), from_state=lambda state: _from_state(state)))


def _from_state(state: dict) -> tuple[str, ...]:
    from centile.refresh.run import order_totals_served

    return order_totals_served(state)


register_config_section("uplift", lambda cfg: parse_uplift_spec(cfg.section("uplift")))
register_config_section("holdout", lambda cfg: parse_holdout_spec(cfg.section("holdout")))
