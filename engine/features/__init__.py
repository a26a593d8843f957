"""The customer feature table: one row per customer, computed by the SQL files in ``sql/``."""

from centile.features.compute import (
    FEATURE_NEEDS,
    FEATURE_TABLES,
    FeaturesResult,
    availability,
    compute_features,
    run_features,
    session_summary,
    write_features,
)

__all__ = ["FEATURE_NEEDS", "FEATURE_TABLES", "FeaturesResult", "availability", "compute_features",
           "run_features", "session_summary", "write_features"]
