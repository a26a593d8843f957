"""Segments of existing customers: RFM scores and named segments, rule-based, k-means and
density clusters, and a readable profile per segment."""

from centile.segments.compute import (
    DEFAULT_RULES,
    RuleSet,
    SegmentsConfig,
    SegmentsResult,
    form_segments,
    rule_segments,
    segments_config,
    write_segments,
)
from centile.segments.job import run_segments

__all__ = ["DEFAULT_RULES", "RuleSet", "SegmentsConfig", "SegmentsResult", "form_segments", "rule_segments",
           "run_segments", "segments_config", "write_segments"]
