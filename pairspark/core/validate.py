"""Why an item row cannot be classified, decided per Arrow batch with numpy (no Spark).

The one place where row validity is defined. It runs inside the same Arrow pass that classifies
or fits, so checking costs no extra pass over the data (Spark SQL higher-order functions over
each vector cost about as much as reading it). Reasons, the first problem of a row wins:

  null_item_id, then per view in order: VIEW:null_vector, VIEW:wrong_length:GOT!=WANT,
  VIEW:null_element, VIEW:non_finite (NaN or +-inf), VIEW:zero_vector; last duplicate_item_id.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

NULL_ITEM_ID = "null_item_id"
DUPLICATE_ITEM_ID = "duplicate_item_id"


def _per_row_any(flags: np.ndarray, parents: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(parents[flags], minlength=n)[:n] > 0


def _vector_problems(column: pa.Array, dim: int, name: str) -> list[tuple[np.ndarray, np.ndarray | str]]:
    """(mask, reason) checks for one view column, in order of precedence."""
    n = len(column)
    is_null = column.is_null().to_numpy(zero_copy_only=False)
    lengths = pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    wrong = ~is_null & (lengths != dim)
    values = column.flatten()  # values of the non-null rows, honouring offsets
    value_nulls = values.is_null().to_numpy(zero_copy_only=False) if values.null_count else None
    numbers = values.to_numpy(zero_copy_only=False)  # float32 or float64; nulls read as NaN
    if not is_null.any() and not wrong.any() and value_nulls is None:
        # the common case: a regular (n, dim) block, checked row-wise without index arrays
        block = numbers.reshape(n, dim)
        has_null = np.zeros(n, dtype=bool)
        non_finite = ~np.isfinite(block).all(axis=1)
        zero = ~np.any(block != 0, axis=1)
    else:
        parents = pc.list_parent_indices(column).to_numpy(zero_copy_only=False)  # null rows emit none
        has_null = _per_row_any(value_nulls, parents, n) if value_nulls is not None else np.zeros(n, dtype=bool)
        finite = np.isfinite(numbers) | (value_nulls if value_nulls is not None else False)
        non_finite = _per_row_any(~finite, parents, n)
        zero = ~_per_row_any(numbers != 0, parents, n)
    wrong_reason = np.full(n, None, dtype=object)
    wrong_reason[wrong] = [f"{name}:wrong_length:{got}!={dim}" for got in lengths[wrong]]
    return [
        (is_null, f"{name}:null_vector"),
        (wrong, wrong_reason),
        (has_null, f"{name}:null_element"),
        (non_finite, f"{name}:non_finite"),
        (zero, f"{name}:zero_vector"),
    ]


def row_reasons(
    item_ids: pa.Array, vectors: list[tuple[str, pa.Array, int]], duplicate: pa.Array | None = None
) -> pa.Array:
    """String array: each row's first problem, null for a valid row.

    `vectors`: (view name, list<float|double> column, expected dim) per view, in view order;
    `duplicate`: bool column, true where the row's item_id occurs more than once in the input.
    """
    n = len(item_ids)
    reasons = np.full(n, None, dtype=object)
    open_rows = np.ones(n, dtype=bool)

    def assign(mask: np.ndarray, reason) -> None:
        hit = open_rows & mask
        if hit.any():
            reasons[hit] = reason[hit] if isinstance(reason, np.ndarray) else reason
            open_rows[hit] = False

    assign(item_ids.is_null().to_numpy(zero_copy_only=False), NULL_ITEM_ID)
    for name, column, dim in vectors:
        for mask, reason in _vector_problems(column, dim, name):
            assign(mask, reason)
    if duplicate is not None:
        assign(pc.fill_null(duplicate, False).to_numpy(zero_copy_only=False), DUPLICATE_ITEM_ID)
    return pa.array(reasons, type=pa.string())
