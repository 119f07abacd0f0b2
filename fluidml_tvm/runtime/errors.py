"""The one error the deploy side raises for a bad artifact."""


class ArtifactError(ValueError):
    """An artifact that cannot be loaded: missing, truncated, foreign or malformed files."""
