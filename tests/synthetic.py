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
