"""``centile run`` stage of the features: validated inputs → features.parquet, rejects.parquet.

With ``centile run --state DIR`` (the run option ``refresh_state``) the feature table comes from
the refresh state (:mod:`centile.refresh.run`); ``rejects.parquet`` and the validation summary
still come from the session over the state's batch files.
"""

from __future__ import annotations

from centile.contract import register_customer_columns
from centile.features.compute import (
    CATEGORY_PATTERN,
    FEATURE_COLUMNS,
    FEATURE_TABLES,
    session_summary,
    write_features,
    write_rejects,
)
from centile.pipeline import Context, Stage, register_stage
from centile.pipeline.parts import config_part


def _run(ctx: Context) -> dict[str, int]:
    state = ctx.option("refresh_state")
    if state:
        return _run_from_state(ctx, state)
    s = ctx.open()
    res = write_features(s, ctx.staging, ctx.say)
    ctx.publish(features=res.features)
    ctx.summaries["inputs"] = res.summary
    return {"features": res.features.height, "rejects": s.total_rejects}


def _run_from_state(ctx: Context, state: dict) -> dict[str, int]:
    from centile.refresh.run import state_features

    ctx.say("features: from the refresh state")
    with ctx.staging.timed("features"):
        df, skipped, _as_of = state_features(ctx.cfg, state)
    s = ctx.open()
    with ctx.staging.timed("write_features"):
        df.write_parquet(ctx.staging.path("features.parquet"), compression="zstd")
        write_rejects(s, ctx.staging.path("rejects.parquet"))
    summary = session_summary(s)
    summary["customers"] = df.height
    summary["features_skipped"] = skipped
    summary["refresh_state"] = state
    ctx.publish(features=df)
    ctx.summaries["inputs"] = summary
    return {"features": df.height, "rejects": s.total_rejects}


STAGE = register_stage(Stage(
    "features", _run, writes=("features", "rejects"), tables=FEATURE_TABLES,
    config=config_part("as_of", "strict", "windows_days", "top_categories", "tables"),
    # a run over a refresh state: the ledger's fingerprints (a new ingest recomputes the features)
    options=lambda o: o.get("refresh_state")))

register_customer_columns("features", FEATURE_COLUMNS, (CATEGORY_PATTERN,))
