"""The package version (read by ``pyproject.toml`` and shown in galleries)."""
__version__ = "0.2.0"
