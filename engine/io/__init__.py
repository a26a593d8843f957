"""Files in and out: atomic output folders, the manifest, SQL files, ad-hoc queries."""
