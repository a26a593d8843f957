"""``centile run`` stage of customer steering: runs when a ``[steering]`` section exists,
after CLV (its budgets and expected order values) and, when present, the segments. With
``centile run --state DIR`` (the run option ``refresh_state``) the order history it reads (spend,
category spend, order times) comes from the refresh state (:mod:`centile.refresh.steering`)."""

from __future__ import annotations

import logging

from centile.config import register_config_section
from centile.pipeline import Context, Stage, register_stage
from centile.pipeline.parts import config_part
from centile.steering.settings import steering_settings

log = logging.getLogger(__name__)


def _history(ctx: Context):
    """The refresh state's order history in ``centile run --state`` (None: the ``orders`` view)."""
    state = ctx.option("refresh_state")
    if not state:
        return None
    from centile.refresh.run import NO_STEERING, state_steering

    history = state_steering(ctx.cfg, state, ctx.open())
    if history is None:
        log.warning(NO_STEERING)
        ctx.notes.append(f"steering: {NO_STEERING}")
    return history


def _run(ctx: Context) -> dict[str, int]:
    from centile.steering.compute import write_steering
    from centile.steering.job import from_proposals, steer

    st = ctx.cfg.settings("steering")
    with ctx.staging.timed("steering"):
        if st.proposals is not None:
            res = from_proposals(ctx.cfg, st)
        else:
            # of the segments, the summary's rfm_segment and the prior_by column only
            seg = ctx.frame_columns("segments", ("rfm_segment", *((st.prior_by,) if st.prior_by else ())))
            # the budgets read three columns of the CLV table (not all fourteen)
            clv = ctx.frame_columns("clv", ("frequency", "expected_order_value", "clv"))
            history = _history(ctx)
            res = steer(ctx.open(), ctx.cfg, st, clv, seg, progress=ctx.say, history=history)
    ctx.publish(plan=res.plan, budgets=res.budgets)
    ctx.summaries["steering"] = res.summary
    if ctx.option("refresh_state") and st.proposals is None:
        # a copy: res.summary is also steering.json, the same file as a run over the batch files
        ctx.summaries["steering"] = {**res.summary,
                                     "order_history": "refresh state" if history is not None else "batch files"}
    ctx.notes.extend(f"steering: {n}" for n in res.notes)
    return write_steering(res, ctx.staging)


def _skip(ctx: Context) -> str | None:
    if "steering" not in ctx.cfg.as_dict().get("sections", {}):
        return "no [steering] section"
    if ctx.cfg.settings("steering").proposals is not None:
        return None
    s = ctx.open()
    if not s.has("contacts", "medium"):
        return "no contacts table with a medium column"
    return None


STAGE = register_stage(Stage(
    "steering", _run, writes=("affinity", "affinity_priors", "budgets", "plan", "plan_summary", "plan_contacts"),
    reads=("clv",), uses=("segments",), tables=("orders", "contacts", "customers"), config=config_part("seed", "as_of", "steering", "holdout", "clv"), skip=_skip,
    # a run over a refresh state: the ledger's fingerprints (a new ingest plans again)
    options=lambda o: o.get("refresh_state"), from_state=lambda state: _from_state(state)))


def _from_state(state: dict) -> tuple[str, ...]:
    from centile.refresh.run import steering_served

    return steering_served(state)


def _without_orders(raw) -> bool:
    """A plan from ``[steering] proposals`` reads no order data."""
    return bool(raw.get("proposals"))


register_config_section("steering", steering_settings, without_orders=_without_orders)
