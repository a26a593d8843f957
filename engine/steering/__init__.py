"""Customer steering: medium affinity, a budget per customer and optimised contact plans."""

from centile.steering.affinity import (
           Affinity,
           BetaPrior,
           affinity_table,
           fit_affinity,
           fit_beta_binomial,
           posterior_mean,
)
from centile.steering.compute import (
           SteeringResult,
           budget_table,
           compute_steering,
           contact_values,
           plan_contacts,
)
from centile.steering.settings import Medium, SteeringSettings, parse_steering, steering_settings
from centile.steering.solve import Solution, solve_plan
from centile.steering.values import Dense, Factored

__all__ = ["Affinity", "BetaPrior", "Dense", "Factored", "Medium", "Solution", "SteeringResult", "SteeringSettings", "affinity_table", "budget_table",
           "compute_steering", "contact_values", "fit_affinity", "fit_beta_binomial", "parse_steering", "plan_contacts",
           "posterior_mean", "solve_plan", "steering_settings"]
