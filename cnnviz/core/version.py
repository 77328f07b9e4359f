"""The package version (read by ``pyproject.toml`` and shown in galleries)."""
__version__ = "0.1.0"
