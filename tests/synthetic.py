"""Synthetic catalogs with class structure, written as Parquet in the shared data format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def make_catalog(n_items: int, dim: int, n_classes: int, seed: int = 0, views: tuple[str, ...] = ("image", "text"), noise: float = 1.0):
    """Items whose vectors are a class prototype plus noise, and class prompt vectors near the prototypes.

    Returns (items: dict of columns, classes: dict of columns, true class index per item).
    """
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, n_classes, n_items)
    items = {"item_id": [f"item-{i:06d}" for i in range(n_items)], "label": [f"c{t:02d}" for t in truth]}
    classes = {"class_id": [f"c{c:02d}" for c in range(n_classes)]}
    for view in views:
        prototypes = rng.normal(size=(n_classes, dim))
        spread = rng.uniform(0.3, 1.5, size=(n_classes, dim))  # per-class, per-dim spread: pairs differ by dims
        x = prototypes[truth] + noise * spread[truth] * rng.normal(size=(n_items, dim))
        items[f"{view}_embedding"] = x.astype(np.float32)
        classes[f"{view}_embedding"] = (prototypes + 0.5 * rng.normal(size=(n_classes, dim))).astype(np.float32)
    return items, classes, truth


def _table(columns: dict) -> pa.Table:
    arrays = {}
    for name, values in columns.items():
        if isinstance(values, np.ndarray) and values.ndim == 2:
            arrays[name] = pa.array(list(values), type=pa.list_(pa.float32()))
        else:
            arrays[name] = pa.array(values)
    return pa.table(arrays)


def write_catalog(folder: Path, items: dict, classes: dict) -> tuple[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(_table(items), folder / "items.parquet")
    pq.write_table(_table(classes), folder / "classes.parquet")
    return str(folder / "items.parquet"), str(folder / "classes.parquet")


def write_bad_catalog(folder):
    """Two good rows and one of each kind of bad row (reasons in test_spark_pipeline), classes a, b, c in 4-d."""
    good = [0.1, 0.2, 0.3, 0.4]
    rows = [
        ("ok-1", good, good),
        ("ok-2", [0.4, 0.3, 0.2, 0.1], [0.1, 0.1, 0.9, 0.1]),
        ("null-vec", None, good),
        ("short", [0.1, 0.2, 0.3], good),
        ("nan", [0.1, float("nan"), 0.3, 0.4], good),
        ("inf", good, [0.1, float("inf"), 0.3, 0.4]),
        ("null-elem", [0.1, None, 0.3, 0.4], good),
        ("zero", good, [0.0, 0.0, 0.0, 0.0]),
        (None, good, good),
        ("twice", good, good),
        ("twice", [0.4, 0.3, 0.2, 0.1], good),
    ]
    vec = pa.list_(pa.float32())
    items = pa.table(
        {
            "item_id": pa.array([r[0] for r in rows]),
            "image_embedding": pa.array([r[1] for r in rows], vec),
            "text_embedding": pa.array([r[2] for r in rows], vec),
        }
    )
    classes = pa.table(
        {
            "class_id": ["a", "b", "c"],
            "image_embedding": pa.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1]], vec),
            "text_embedding": pa.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1]], vec),
        }
    )
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(items, folder / "items.parquet")
    pq.write_table(classes, folder / "classes.parquet")
    return str(folder / "items.parquet"), str(folder / "classes.parquet")


def tiny_view_model(name: str, column: str, dim: int, n_classes: int = 2):
    """A fitted view of unit-axis class prompts and no items (enough for base and pairwise)."""
    import numpy as np

    from pairspark.core.masks import MaskSettings
    from pairspark.core.model import fit_view
    from pairspark.core.stats import ClassMoments

    vectors = np.eye(n_classes, dim, dtype=np.float32)
    return fit_view(name, column, [f"c{i}" for i in range(n_classes)], vectors, ClassMoments.empty(n_classes, dim),
                    MaskSettings(min_dims=dim))
