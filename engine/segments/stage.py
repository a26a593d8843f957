"""``centile run`` stage of the segments: RFM, rules, clusters and profiles over this run's features
(with the clubs and the ``clv_*`` predictions when they ran) and the customers table."""

from __future__ import annotations

from centile.config import register_config_section
from centile.features.join import with_customer_columns
from centile.pipeline import Context, Stage, register_stage
from centile.pipeline.parts import config_part
from centile.segments.compute import (
    form_segments,
    segments_config,
    segments_summary_doc,
    write_segments,
)


def _run(ctx: Context) -> dict[str, int]:
    s = ctx.open()
    customers = s.frame("SELECT * FROM customers") if s.has("customers") else None
    ctx.say("segments: RFM, rules, clusters, profiles")
    table = with_customer_columns(ctx.frame("features"), ctx.frame_or_none("clv_features"))
    with ctx.staging.timed("segments"):
        res = form_segments(table, ctx.cfg, customers=customers, clubs=ctx.frame_columns("clubs", ("club", "tier")),
                            as_of=s.as_of, session=s, kept=s.kept.get("features"))
    ctx.publish(segments=res.segments, segment_profiles=res.profiles, rfm_grid=res.rfm_grid)
    ctx.summaries["segments"] = segments_summary_doc(res)
    ctx.notes.extend(res.notes)
    return write_segments(res, ctx.staging)


STAGE = register_stage(Stage(
    "segments", _run, writes=("segments", "segment_profiles", "rfm_grid", "cluster_centres"),
    reads=("features",), uses=("clubs", "clv_features"), tables=("customers",), config=config_part("seed", "segments")))

register_config_section("segments", segments_config)
