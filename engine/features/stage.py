"""``centile run`` stage of the features: validated inputs → features.parquet, rejects.parquet.

With ``centile run --state DIR`` (the run option ``refresh_state``) the feature table comes from
the refresh state (:mod:`centile.refresh.run`), and so do the order lines' and e-mail events'
rows of ``rejects.parquet`` and of the validation summary (as each ingest recorded them,
:mod:`centile.refresh.rejects`); the other tables' come from the session.
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
    from centile.refresh.run import state_features, state_inputs

    ctx.say("features: from the refresh state")
    with ctx.staging.timed("features"):
        df, skipped, _as_of = state_features(ctx.cfg, state)
    s = ctx.open()
    # the batch tables' rejects and validation summary as the ingests recorded them (a state built
    # before they were kept: the session's, over the batch files)
    kept = state_inputs(ctx.cfg, state)
    summary = session_summary(s)
    rejects = "rejects"
    if kept is not None:
        rows, tables = kept
        s.con.register("__centile_state_rejects", rows)
        rejects = (f'SELECT * FROM rejects WHERE "table" NOT IN ({", ".join(map(repr, tables))}) '
                   "UNION ALL SELECT * FROM __centile_state_rejects")
        summary["tables"].update({t: v.as_dict() for t, v in tables.items()})
        summary["rows_rejected"] = sum(t["rows_rejected"] for t in summary["tables"].values())
    # where the order lines' and e-mail events' rejects and counts came from
    summary["batch_rejects"] = "batch files" if kept is None else "refresh state"
    with ctx.staging.timed("write_features"):
        df.write_parquet(ctx.staging.path("features.parquet"), compression="zstd")
        write_rejects(s, ctx.staging.path("rejects.parquet"), rejects)
    summary["customers"] = df.height
    summary["features_skipped"] = skipped
    summary["refresh_state"] = state
    ctx.publish(features=df)
    ctx.summaries["inputs"] = summary
    return {"features": df.height, "rejects": summary["rows_rejected"]}


STAGE = register_stage(Stage(
    "features", _run, writes=("features", "rejects"), tables=FEATURE_TABLES,
    config=config_part("as_of", "strict", "windows_days", "top_categories", "tables"),
    # a run over a refresh state: the ledger's fingerprints (a new ingest recomputes the features)
    options=lambda o: o.get("refresh_state"), from_state=lambda state: _from_state(state)))


def _from_state(state: dict) -> tuple[str, ...]:
    from centile.refresh.run import features_served

    return features_served(state)

register_customer_columns("features", FEATURE_COLUMNS, (CATEGORY_PATTERN,))
