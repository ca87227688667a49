"""Per-batch helpers over Arrow and numpy that run inside the Spark workers' UDFs (no Spark here):
the validity of each row of a batch (core/validate.py over a batch's columns), the valid rows
only, a view column as a zero-copy matrix, class indexes as names, the verified class of a row,
and the base answers of a view. The driver's reads are spark/io.py; what happens to invalid and
repeated item rows in Spark is spark/items.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pairspark.core.columns import DUPLICATE, ITEM_ID, VERIFIED
from pairspark.core.cosine import base_assign, unit_rows64
from pairspark.core.tree import Tree
from pairspark.core.validate import row_reasons
from pairspark.views import View


@dataclass(frozen=True)
class ClassTable:
    """The classes of one view, sorted by class_id: ids and unit prompt vectors (C, D). With a
    class tree, the classes are its leaves (core/tree.py).

    A class given several prompt rows has the unit mean of their unit vectors (prompt ensembling,
    docs/METHOD.md "Several prompts per class"); `prompts` counts the rows behind each class."""

    class_ids: list[str]
    vectors: np.ndarray
    prompts: tuple[int, ...] = ()
    tree: Tree | None = None  # the classes' taxonomy (parent_id); class_ids are then its leaves

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


def batch_reasons(batch: pa.RecordBatch, checks: list[tuple[str, str, int]]) -> pa.Array:
    """validate.row_reasons for a batch holding ITEM_ID, DUPLICATE and the view columns; checks: (view, column, dim)."""
    column = batch.schema.get_field_index
    return row_reasons(
        batch.column(column(ITEM_ID)),
        [(name, batch.column(column(col)), dim) for name, col, dim in checks],
        batch.column(column(DUPLICATE)),
    )


def view_checks(views: list[View], dims: dict[str, int]) -> list[tuple[str, str, int]]:
    return [(v.name, v.column, dims[v.name]) for v in views]


def batch_matrix(batch: pa.RecordBatch, column: str, dim: int) -> np.ndarray:
    """Zero-copy (n, dim) float32 view of a validated list<float> column."""
    array = batch.column(batch.schema.get_field_index(column))
    values = array.flatten()  # honours slice offsets, unlike .values
    if values.null_count or len(values) != len(array) * dim:
        raise ValueError(f"column {column} was not validated: {len(values)} values for {len(array)} rows of {dim}")
    return values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(len(array), dim)


def class_names(class_ids: list[str], index: np.ndarray) -> pa.Array:
    """Class index array -> Arrow string array (dictionary decode in C++, no Python loop)."""
    dictionary = pa.array(class_ids, type=pa.string())
    return pa.DictionaryArray.from_arrays(pa.array(index, type=pa.int32()), dictionary).dictionary_decode()


def valid_batches(batches, checks: list[tuple[str, str, int]]):
    """Only the rows core/validate.py accepts (checked here, in the same pass as the math)."""
    for batch in batches:
        reasons = batch_reasons(batch, checks)
        if reasons.null_count == batch.num_rows:
            yield batch  # the usual case: no copy
        elif reasons.null_count:
            yield batch.filter(pc.is_null(reasons))


# A batch is worked on in row chunks of at most this many (rows x classes) cells, by classify and
# by a fit's passes alike: every method holds a few (rows x C) float64 arrays (cosines, scores,
# probabilities) at once, 800 MB each for a 10,000-row batch at 10,000 classes; chunks keep them
# ~32 MB. No chunking up to 419 classes at the default 10,000-row batches. Every answer, target
# and statistic row is a function of its own row.
CHUNK_CELLS = 2**22


def chunk_rows(n_classes: int) -> int:
    """Rows per chunk at n_classes classes (CHUNK_CELLS)."""
    return max(1, CHUNK_CELLS // max(n_classes, 1))


def view_base(batch: pa.RecordBatch, column: str, table: ClassTable):
    """(unit rows, BaseAssignment) of one view of a batch; float64 as in ViewModel.classify, so fit
    and classify give every item the same base answer."""
    x_unit = unit_rows64(batch_matrix(batch, column, table.dim))
    return x_unit, base_assign(x_unit, table.vectors.astype(np.float64))


def verified_of(batch: pa.RecordBatch) -> np.ndarray:
    """Per row of a batch, the verified class index (-1 for none; all -1 without the column)."""
    i = batch.schema.get_field_index(VERIFIED)
    if i < 0:
        return np.full(batch.num_rows, -1, np.int64)
    return pc.fill_null(batch.column(i), -1).to_numpy(zero_copy_only=False).astype(np.int64)
