"""scopes package."""
