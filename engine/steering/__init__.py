"""Customer steering: medium affinity, a budget per customer and optimised contact plans."""

from centile.registry import lazy_exports

# the names below are imported from their modules when first used (see lazy_exports)
__getattr__, __dir__ = lazy_exports(__name__, {
    "centile.steering.affinity": ("Affinity", "BetaPrior", "affinity_table", "fit_affinity", "fit_beta_binomial", "posterior_mean",),
    "centile.steering.compute": ("SteeringResult", "budget_table", "compute_steering", "contact_values", "plan_contacts",),
    "centile.steering.settings": ("Medium", "SteeringSettings", "parse_steering", "steering_settings",),
    "centile.steering.solve": ("Solution", "solve_plan",),
    "centile.steering.values": ("Dense", "Factored",),
})

__all__ = ["Affinity", "BetaPrior", "Dense", "Factored", "Medium", "Solution", "SteeringResult", "SteeringSettings", "affinity_table", "budget_table", "compute_steering", "contact_values", "fit_affinity", "fit_beta_binomial", "parse_steering", "plan_contacts", "posterior_mean", "solve_plan", "steering_settings"]
