"""Measuring what worked: reproducible control groups, uplift with intervals, CUPED and SRM."""

from centile.uplift.compute import (
    PREFERRED_METHODS,
    UPLIFT_COLUMNS,
    UpliftResult,
    compute_uplift,
    preferred_rows,
    uplift_from_session,
    write_uplift,
)
from centile.uplift.holdout import (
    HoldoutResult,
    HoldoutSpec,
    assign,
    parse_holdout_spec,
)
from centile.uplift.holdout_job import run_holdout
from centile.uplift.inputs import (
    UpliftSpec,
    parse_uplift_spec,
    units_from_session,
    units_from_table,
)
from centile.uplift.job import run_uplift

__all__ = ["PREFERRED_METHODS", "UPLIFT_COLUMNS", "HoldoutResult", "HoldoutSpec", "UpliftResult", "UpliftSpec",
           "assign", "compute_uplift", "parse_holdout_spec", "parse_uplift_spec", "preferred_rows",
           "run_holdout", "run_uplift", "units_from_session", "units_from_table", "uplift_from_session",
           "write_uplift"]
