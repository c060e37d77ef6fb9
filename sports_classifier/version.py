"""The package version (read by pyproject.toml, written into every bundle's config.json)."""

__version__ = "0.2.0"
