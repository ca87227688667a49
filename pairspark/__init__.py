"""pairspark: zero-shot classification of catalog embeddings with the pairwise cross-variance tournament."""

from pairspark.version import __version__  # noqa: F401


def __getattr__(name: str):
    # `from pairspark import PairwiseTournamentClassifier` without importing pyspark for the CLI's --help
    if name in ("PairwiseTournamentClassifier", "PairwiseTournamentModel"):
        from pairspark import ml

        return getattr(ml, name)
    raise AttributeError(f"module 'pairspark' has no attribute {name!r}")
