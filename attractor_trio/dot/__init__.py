"""dot package."""
