"""uadflows: a reproducible benchmark of normalizing-flow anomaly detectors."""

__version__ = "0.1.0"
