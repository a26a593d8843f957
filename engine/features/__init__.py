"""The customer feature table: one row per customer, computed by the SQL files in ``sql/``."""

from centile.registry import lazy_exports

# the names below are imported from their modules when first used (see lazy_exports)
__getattr__, __dir__ = lazy_exports(__name__, {
    "centile.features.compute": ("FEATURE_NEEDS", "FEATURE_TABLES", "FeaturesResult", "availability", "compute_features", "run_features", "session_summary", "write_features",),
})

__all__ = ["FEATURE_NEEDS", "FEATURE_TABLES", "FeaturesResult", "availability", "compute_features", "run_features", "session_summary", "write_features"]
