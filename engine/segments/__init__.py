"""Segments of existing customers: RFM scores and named segments, rule-based, k-means and
density clusters, and a readable profile per segment."""

from centile.registry import lazy_exports

# the names below are imported from their modules when first used (see lazy_exports)
__getattr__, __dir__ = lazy_exports(__name__, {
    "centile.segments.compute": ("DEFAULT_RULES", "RuleSet", "SegmentsConfig", "SegmentsResult", "form_segments", "rule_segments", "segments_config", "write_segments",),
    "centile.segments.job": ("run_segments",),
})

__all__ = ["DEFAULT_RULES", "RuleSet", "SegmentsConfig", "SegmentsResult", "form_segments", "rule_segments", "run_segments", "segments_config", "write_segments"]
