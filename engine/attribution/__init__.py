"""Attribution over touchpoint paths: rule-based, Markov removal effects and Shapley, per segment."""
