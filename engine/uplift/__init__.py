"""Measuring what worked: reproducible control groups, uplift with intervals, CUPED and SRM."""

from centile.registry import lazy_exports

# the names below are imported from their modules when first used (see lazy_exports)
__getattr__, __dir__ = lazy_exports(__name__, {
    "centile.uplift.compute": ("PREFERRED_METHODS", "UPLIFT_COLUMNS", "UpliftResult", "compute_uplift", "preferred_rows", "uplift_from_session", "write_uplift",),
    "centile.uplift.holdout": ("HoldoutResult", "HoldoutSpec", "assign", "parse_holdout_spec",),
    "centile.uplift.holdout_job": ("run_holdout",),
    "centile.uplift.inputs": ("UpliftSpec", "parse_uplift_spec", "units_from_session", "units_from_table",),
    "centile.uplift.job": ("run_uplift",),
})

__all__ = ["PREFERRED_METHODS", "UPLIFT_COLUMNS", "HoldoutResult", "HoldoutSpec", "UpliftResult", "UpliftSpec", "assign", "compute_uplift", "parse_holdout_spec", "parse_uplift_spec", "preferred_rows", "run_holdout", "run_uplift", "units_from_session", "units_from_table", "uplift_from_session", "write_uplift"]
