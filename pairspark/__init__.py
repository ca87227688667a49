"""pairspark: zero-shot classification of catalog embeddings with the pairwise cross-variance tournament."""

__version__ = "0.1.0"
