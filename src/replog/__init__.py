"""replog: a replicated append-only message log with per-write write concerns."""

__version__ = "0.1.0"
