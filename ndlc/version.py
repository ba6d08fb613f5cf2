"""ndlc's version, written once: pyproject.toml reads it from here, caches and checkpoints record it."""
__version__ = "0.1.0"
