"""1 % clubs: exact percentile ranks of every customer and overlap-free clubs with their tiers."""

from centile.registry import lazy_exports

# the names below are imported from their modules when first used (see lazy_exports)
__getattr__, __dir__ = lazy_exports(__name__, {
    "centile.clubs.compute": ("ClubInputs", "ClubsResult", "club_inputs", "clubs_summary_doc", "compute_ranks", "form_clubs", "stability", "tier_sizes", "write_clubs",),
    "centile.clubs.job": ("ClubsJobResult", "read_features", "run_clubs",),
})

__all__ = ["ClubInputs", "ClubsJobResult", "ClubsResult", "club_inputs", "clubs_summary_doc", "compute_ranks", "form_clubs", "read_features", "run_clubs", "stability", "tier_sizes", "write_clubs"]
