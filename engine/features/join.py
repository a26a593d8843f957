"""The customer table the later stages rank and describe: features plus columns other stages publish."""

from __future__ import annotations

import polars as pl


def with_customer_columns(features: pl.DataFrame, *extra: pl.DataFrame | None) -> pl.DataFrame:
    """``features`` left-joined with each frame of per-customer columns (rows and order kept).

    Used for the ``clv_*`` predictions, which clubs can rank by and segments describe. Only the
    new columns are gathered into the feature table's row order; its own columns are shared, not
    copied (the feature table is about 250 MB per million customers).
    """
    for frame in extra:
        if frame is None:
            continue
        features = add_columns(features, frame)
    return features


def add_columns(left: pl.DataFrame, right: pl.DataFrame, on: str = "customer_id") -> pl.DataFrame:
    """``left`` left-joined with ``right`` on ``on`` (rows and order of ``left`` kept), without
    copying ``left``'s columns: ``right``'s columns are gathered into ``left``'s row order and put
    beside them. ``right`` holds at most one row per key; ``right``'s columns that ``left`` also
    has are renamed with the suffix ``_right``, as a Polars join would."""
    right = right.with_columns(pl.col(on).cast(left.schema[on]))
    if right.get_column(on).is_duplicated().any():
        return left.join(right, on=on, how="left", maintain_order="left")
    # the key column alone: a select on ``left`` copies every column of it when they are chunked unevenly
    new = left.get_column(on).to_frame().join(right, on=on, how="left", maintain_order="left").drop(on)
    return left.hstack(new.rename({c: f"{c}_right" for c in new.columns if c in left.columns}).get_columns())
