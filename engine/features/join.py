"""The customer table the later stages rank and describe: features plus columns other stages publish."""

from __future__ import annotations

import polars as pl


def with_customer_columns(features: pl.DataFrame, *extra: pl.DataFrame | None) -> pl.DataFrame:
    """``features`` left-joined with each frame of per-customer columns (rows and order kept).

    Used for the ``clv_*`` predictions, which clubs can rank by and segments describe.
    """
    for frame in extra:
        if frame is None:
            continue
        frame = frame.with_columns(pl.col("customer_id").cast(features.schema["customer_id"]))
        features = features.join(frame, on="customer_id", how="left", maintain_order="left")
    return features
