"""The version that emitted modules and reports name."""

__version__ = "0.1.0"
