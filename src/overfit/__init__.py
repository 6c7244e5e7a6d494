"""overfit: a declarative experiment pipeline for studying generalization."""

__version__ = "0.1.0"
