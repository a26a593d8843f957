"""``centile run`` stages of customer value: the models and predictions (clv), then the
per-club and per-segment table (clv_groups). With ``centile run --state DIR`` (the run option
``refresh_state``) the summary's purchase days come from the refresh state
(:mod:`centile.refresh.clv`). CLV publishes ``clv_features`` (the ``clv_*``
columns) so clubs and segments can rank and describe customers by them."""

from __future__ import annotations

import logging

from centile.clv import compute
from centile.clv.models import FitError
from centile.config import register_config_section
from centile.contract import register_customer_columns
from centile.pipeline import Context, Stage, StageSkipped, register_stage
from centile.pipeline.parts import config_part

log = logging.getLogger(__name__)


def _run(ctx: Context) -> dict[str, int]:
    s = ctx.open()
    days = None
    state = ctx.option("refresh_state")
    if state:  # centile run --state: the purchase days from the refresh state
        from centile.refresh.run import NO_PURCHASES, state_clv_days

        days = state_clv_days(ctx.cfg, state)
        if days is None:
            log.warning(NO_PURCHASES)
            ctx.notes.append(f"clv: {NO_PURCHASES}")
    try:
        res = compute.compute_clv(s, compute.clv_settings(ctx.cfg), progress=ctx.say, days=days)
    except FitError as exc:
        raise StageSkipped(f"the customer-value model did not fit: {exc}") from None
    ctx.publish(clv=res.customers)
    ctx.summaries["clv"] = compute.clv_summary_doc(res)
    if state:
        ctx.summaries["clv"]["purchase_days"] = "batch files" if days is None else "refresh state"
    ctx.notes.extend(f"clv: {n}" for n in res.notes)
    return compute.write_clv(res, ctx.staging)


def _from_state(state: dict) -> tuple[str, ...]:
    from centile.refresh.run import clv_served

    return clv_served(state)


#: the columns of ``clv`` the group table sums (the others are not read)
GROUP_COLUMNS = ("p_alive", "churn_risk", "p_repurchase", "expected_transactions", "expected_revenue", "clv")


def _run_groups(ctx: Context) -> dict[str, int]:
    groups = []
    clubs = ctx.frame_columns("clubs", ("club",))
    if clubs is not None:
        groups.append(clubs.select("customer_id", "club"))
    segments = ctx.frame_columns("segments", ("rfm_segment",))
    if segments is not None and "rfm_segment" in segments.columns:
        groups.append(segments.select("customer_id", "rfm_segment"))
    if not groups:
        raise StageSkipped("no clubs or segments to aggregate by")
    table = compute.group_table(ctx.frame_columns("clv", GROUP_COLUMNS), groups)
    table.write_parquet(ctx.staging.path("clv_groups.parquet"), compression="zstd")
    return {"clv_groups": table.height}


STAGE = register_stage(Stage(
    "clv", _run, writes=("clv", "clv_holdout"), tables=("orders",),
    config=config_part("as_of", "strict", "tables", "clv"),
    # a run over a refresh state: the ledger's fingerprints (a new ingest recomputes the CLV)
    options=lambda o: o.get("refresh_state"), from_state=lambda state: _from_state(state),
    derived={"clv_features": lambda ctx: compute.clv_features(ctx.frame("clv"))}))

GROUPS_STAGE = register_stage(Stage(
    "clv_groups", _run_groups, writes=("clv_groups",), reads=("clv",), uses=("clubs", "segments")))

register_config_section("clv", lambda cfg: compute.clv_settings(cfg))
register_customer_columns("clv", [f"clv_{c}" for c in compute.FEATURE_COLUMNS])
