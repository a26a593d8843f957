"""``centile run`` stage of the features: validated inputs → features.parquet, rejects.parquet."""

from __future__ import annotations

from centile.contract import register_customer_columns
from centile.features.compute import (
    CATEGORY_PATTERN,
    FEATURE_COLUMNS,
    FEATURE_TABLES,
    write_features,
)
from centile.pipeline import Context, Stage, register_stage
from centile.pipeline.parts import config_part


def _run(ctx: Context) -> dict[str, int]:
    s = ctx.open()
    res = write_features(s, ctx.staging, ctx.say)
    ctx.publish(features=res.features)
    ctx.summaries["inputs"] = res.summary
    return {"features": res.features.height, "rejects": s.total_rejects}


STAGE = register_stage(Stage(
    "features", _run, writes=("features", "rejects"), tables=FEATURE_TABLES,
    config=config_part("as_of", "strict", "windows_days", "top_categories", "tables")))

register_customer_columns("features", FEATURE_COLUMNS, (CATEGORY_PATTERN,))
