"""Attribution over touchpoint paths: rule-based, Markov removal effects and Shapley, per segment."""

from centile.registry import lazy_exports

# the names below are imported from their modules when first used (see lazy_exports)
__getattr__, __dir__ = lazy_exports(__name__, {
    "centile.attribution.compute": ("AttributionResult", "AttributionSettings", "attribute", "attribution_settings", "incrementality", "parse_settings",),
    "centile.attribution.journeys": ("Journeys", "journeys_from_touches", "read_path_table",),
})

__all__ = ["AttributionResult", "AttributionSettings", "Journeys", "attribute", "attribution_settings", "incrementality", "journeys_from_touches", "parse_settings", "read_path_table"]
