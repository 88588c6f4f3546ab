"""The package version, in one place (``__init__`` and the compiled-program cache read it)."""

__version__ = "0.1.0"
