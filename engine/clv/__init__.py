"""Customer value: BG/NBD, Pareto/NBD and Gamma-Gamma fits, per-customer predictions and CLV."""

from centile.registry import lazy_exports

# the names below are imported from their modules when first used (see lazy_exports)
__getattr__, __dir__ = lazy_exports(__name__, {
    "centile.clv.compute": ("AUTO", "MODELS", "ClvResult", "ClvSettings", "choose_model", "clv_features", "clv_settings", "compute_clv", "group_table", "holdout_table", "summarize", "write_clv",),
    "centile.clv.job": ("read_groups", "run_clv",),
    "centile.clv.models": ("LABELS", "MONTH_DAYS", "PARAM_NAMES", "TIME_UNITS", "FitError", "FitResult", "discount_steps", "fit_bgnbd", "fit_gamma_gamma", "fit_pareto_nbd", "predict",),
})

__all__ = ["AUTO", "choose_model", "LABELS", "MONTH_DAYS", "PARAM_NAMES", "TIME_UNITS", "discount_steps", "predict", "MODELS", "ClvResult", "read_groups", "ClvSettings", "FitError", "FitResult", "clv_features", "clv_settings", "compute_clv", "fit_bgnbd", "fit_gamma_gamma", "fit_pareto_nbd", "group_table", "holdout_table", "run_clv", "summarize", "write_clv"]
