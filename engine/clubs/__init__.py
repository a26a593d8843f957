"""1 % clubs: exact percentile ranks of every customer and overlap-free clubs with their tiers."""

from centile.clubs.compute import (
    ClubInputs,
    ClubsResult,
    club_inputs,
    clubs_summary_doc,
    compute_ranks,
    form_clubs,
    stability,
    tier_sizes,
    write_clubs,
)
from centile.clubs.job import ClubsJobResult, read_features, run_clubs

__all__ = ["ClubInputs", "ClubsJobResult", "ClubsResult", "club_inputs", "clubs_summary_doc", "compute_ranks",
           "form_clubs", "read_features", "run_clubs", "stability", "tier_sizes", "write_clubs"]
