"""Attribution over touchpoint paths: rule-based, Markov removal effects and Shapley, per segment."""

from centile.attribution.compute import (
    AttributionResult,
    AttributionSettings,
    attribute,
    attribution_settings,
    incrementality,
    parse_settings,
)
from centile.attribution.journeys import Journeys, journeys_from_touches, read_path_table

__all__ = ["AttributionResult", "AttributionSettings", "Journeys", "attribute", "attribution_settings",
           "incrementality", "journeys_from_touches", "parse_settings", "read_path_table"]
