"""persist package."""
