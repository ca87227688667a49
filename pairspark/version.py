"""pairspark's version: recorded in every model's metadata and every stage's meta.json (pyproject.toml
holds the same number for packaging). A module of its own so that the layers read it without
importing the package root, which re-exports the estimator (ml.py) lazily."""

__version__ = "0.1.0"
