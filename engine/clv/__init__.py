"""Customer value: BG/NBD, Pareto/NBD and Gamma-Gamma fits, per-customer predictions and CLV."""

from centile.clv.compute import (
    AUTO,
    MODELS,
    ClvResult,
    ClvSettings,
    choose_model,
    clv_features,
    clv_settings,
    compute_clv,
    group_table,
    holdout_table,
    summarize,
    write_clv,
)
from centile.clv.job import read_groups, run_clv
from centile.clv.models import (
    LABELS,
    MONTH_DAYS,
    PARAM_NAMES,
    TIME_UNITS,
    FitError,
    FitResult,
    discount_steps,
    fit_bgnbd,
    fit_gamma_gamma,
    fit_pareto_nbd,
    predict,
)

__all__ = ["AUTO", "choose_model", "LABELS", "MONTH_DAYS", "PARAM_NAMES", "TIME_UNITS", "discount_steps", "predict", "MODELS", "ClvResult", "read_groups", "ClvSettings", "FitError", "FitResult", "clv_features", "clv_settings",
           "compute_clv", "fit_bgnbd", "fit_gamma_gamma", "fit_pareto_nbd", "group_table", "holdout_table",
           "run_clv", "summarize", "write_clv"]
