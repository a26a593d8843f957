"""``centile run`` stages of basket analysis (``baskets``: rules per segment) and recommendations
(``recommend``: top-k per customer, plus the time-split evaluation when ``[recommend] cutoff`` is set).

Both run by default when the orders carry the item column of their level (``product_id``, or a
category for ``level = "category"``) and are skipped with a reason otherwise; ``enabled = false`` in
their section turns them off. With ``centile run --state DIR`` (the run option ``refresh_state``) the
lines come from the refresh state's basket lines (:mod:`centile.refresh.baskets`), the same
outputs; a state built before those were kept falls back to its batch files, with a note.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import polars as pl

from centile.baskets.settings import parse_baskets, parse_recommend
from centile.config import register_config_section
from centile.pipeline import Context, Stage, StageSkipped, register_stage
from centile.pipeline.parts import config_part
from centile.runtime import numba_threads

log = logging.getLogger(__name__)


def segment_frame(ctx: Context, columns: tuple[str, ...] | None = None) -> pl.DataFrame | None:
    """customer_id plus the segment columns of this run (``segments``) and ``club`` (``clubs``);
    with ``columns``, only those of them (the others would be copied for every customer for nothing)."""
    if columns is not None:  # only those columns are read (when the frame is not in memory)
        seg = ctx.frame_columns("segments", columns)
        clubs = ctx.frame_columns("clubs", ("club",)) if "club" in columns else None
    else:
        seg = ctx.frame_or_none("segments")
        clubs = ctx.frame_or_none("clubs")
    if columns is not None:
        if seg is not None:
            seg = seg.select("customer_id", *(c for c in columns if c in seg.columns and c != "customer_id"))
        if "club" not in columns:
            clubs = None
    if clubs is not None and "club" in clubs.columns:
        c = clubs.select("customer_id", "club").unique("customer_id", keep="first")
        if seg is None:
            return c
        if "club" not in seg.columns:
            return seg.join(c, on="customer_id", how="full", coalesce=True)
    return seg


def _state_lines(ctx: Context, stage: str | None = None) -> Any:
    """With ``centile run --state``: the state's basket lines (None without a state). A state built
    before those were kept gives None too, and ``stage`` (the running one) notes that it reads the
    batch files."""
    state = ctx.option("refresh_state")
    if not state:
        return None
    from centile.refresh.run import NO_BASKET_LINES, state_basket_lines

    lines = state_basket_lines(ctx.cfg, state)
    if stage is not None:
        ctx.summaries[stage] = {"lines": "batch files" if lines is None else "refresh state"}
        if lines is None:
            log.warning(NO_BASKET_LINES)
            ctx.notes.append(f"{stage}: {NO_BASKET_LINES}")
    return lines


def _item_skip(ctx: Context, level: str, enabled: bool, section: str) -> str | None:
    if not enabled:
        return f"[{section}] enabled = false"
    s = _state_lines(ctx) or ctx.open()  # the state's columns are its batches'
    if level == "product" and not s.has("orders", "product_id"):
        return "the orders have no product_id (map it in [tables.orders.columns], or set level = \"category\")"
    if level == "category" and not (s.has("orders", "category") or (s.has("orders", "product_id")
                                                                     and s.has("products", "category"))):
        return "the orders have no category (nor product_id with products.category)"
    return None


def _run_baskets(ctx: Context) -> dict[str, int]:
    from centile.baskets.compute import baskets_from, baskets_summary_doc, write_baskets
    from centile.baskets.lines import basket_items, basket_lines
    from centile.baskets.parts import SessionLines

    st = ctx.cfg.settings("baskets")
    state = _state_lines(ctx, "baskets")
    ctx.say(f"baskets: exact pair counts per segment ({st.level})")
    with ctx.staging.timed("baskets"), numba_threads(ctx.cfg.threads):
        if state is not None:  # centile run --state: the state's basket lines
            items = state.items(st.level, st.exclude_returned)
            source = state.source(st.level, st.exclude_returned, progress=ctx.say)
        else:
            s = ctx.open()
            items = basket_items(s, st.level, st.exclude_returned)
            parts = s.work_partitions() if s.distributed() else s.partitioning()
            source = SessionLines(s, parts, partial(basket_lines, level=st.level,
                                                    exclude_returned=st.exclude_returned), ctx.say)
        if items.len() == 0:
            raise StageSkipped("no order lines with an item before as_of")
        res = baskets_from(source, items, st, segment_frame(ctx, st.segment_by), progress=ctx.say,
                           scratch=ctx.staging.spill, sink=ctx.staging)
    ctx.summaries["baskets"] = {**ctx.summaries.get("baskets", {}), **baskets_summary_doc(res),
                                "partitions": source.count}
    ctx.notes.extend(res.notes)
    return write_baskets(res, ctx.staging)


def _run_recommend(ctx: Context) -> dict[str, int]:
    from centile.baskets.lines import basket_items
    from centile.baskets.parts import SessionLines
    from centile.baskets.recommend import (
        recommend_from,
        recommend_lines,
        recommend_summary_doc,
        write_recommendations,
    )

    st = ctx.cfg.settings("recommend")
    bst = ctx.cfg.settings("baskets")
    state = _state_lines(ctx, "recommend")
    ctx.say(f"recommend: top {st.k} {st.level}s per customer")
    with ctx.staging.timed("recommend"), numba_threads(ctx.cfg.threads):
        if state is not None:  # centile run --state: the state's basket lines
            items = state.items(st.level, exclude_returned=False)
            # recommend_lines: every line; returned-in-full ones unkept only with exclude_returned
            source = state.source(st.level, False, all_kept=not bst.exclude_returned, progress=ctx.say)
            as_of = state.as_of
        else:
            s = ctx.open()
            items = basket_items(s, st.level, exclude_returned=False, label="recommend: item dictionary")
            parts = s.work_partitions() if s.distributed() else s.partitioning()
            source = SessionLines(s, parts, partial(recommend_lines, level=st.level,
                                                    exclude_returned=bst.exclude_returned), ctx.say)
            as_of = s.as_of
        if items.len() == 0:
            raise StageSkipped("no order lines with an item before as_of")
        seg = segment_frame(ctx, (st.segment_by,) if st.segment_by else ())
        if source.remote and st.cutoff is None:  # the partitions on the cluster (the evaluation stays here)
            from centile.baskets.remote import recommend_remote

            res = recommend_remote(source, items, st, as_of, seg, progress=ctx.say, scratch=ctx.staging.spill)
        else:
            res = recommend_from(source, items, st, as_of, seg, cutoff=st.cutoff, progress=ctx.say,
                                 scratch=ctx.staging.spill)
    ctx.summaries["recommend"] = {**ctx.summaries.get("recommend", {}), **recommend_summary_doc(res),
                                  "partitions": source.count}
    ctx.notes.extend(res.notes)
    return write_recommendations(res, ctx.staging)


def _from_state(state: dict) -> tuple[str, ...]:
    from centile.refresh.run import basket_lines_served

    return basket_lines_served(state)


STAGE = register_stage(Stage(
    "baskets", _run_baskets, writes=("basket_itemsets", "basket_rules", "basket_summary"),
    uses=("segments", "clubs"), tables=("orders", "products"), config=config_part("as_of", "strict", "tables", "baskets"),
    # a run over a refresh state: the ledger's fingerprints (a new ingest recomputes the rules)
    options=lambda o: o.get("refresh_state"), from_state=lambda state: _from_state(state),
    skip=lambda ctx: _item_skip(ctx, ctx.cfg.settings("baskets").level, ctx.cfg.settings("baskets").enabled,
                                "baskets")))

RECOMMEND_STAGE = register_stage(Stage(
    "recommend", _run_recommend, writes=("recommendations", "recommendation_eval"),
    uses=("segments", "clubs"), tables=("orders", "products"), config=config_part("as_of", "strict", "tables", "recommend", "baskets"),
    options=lambda o: o.get("refresh_state"), from_state=lambda state: _from_state(state),
    skip=lambda ctx: _item_skip(ctx, ctx.cfg.settings("recommend").level, ctx.cfg.settings("recommend").enabled,
                                "recommend")))

register_config_section("baskets", lambda cfg: parse_baskets(cfg.section("baskets")))
register_config_section("recommend", lambda cfg: parse_recommend(cfg.section("recommend")))
