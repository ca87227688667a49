"""Row validation on Arrow batches against a plain per-row Python reference."""

import math

import numpy as np
import pyarrow as pa
import pytest

from pairspark.core.validate import row_reasons


def reference_reason(item_id, rows, dims, duplicate):
    """Plain Python over one row: the first problem wins."""
    if item_id is None:
        return "null_item_id"
    for (name, vector), dim in zip(rows, dims):
        if vector is None:
            return f"{name}:null_vector"
        if len(vector) != dim:
            return f"{name}:wrong_length:{len(vector)}!={dim}"
        if any(v is None for v in vector):
            return f"{name}:null_element"
        if any(not math.isfinite(v) for v in vector):
            return f"{name}:non_finite"
        if all(v == 0 for v in vector):
            return f"{name}:zero_vector"
    return "duplicate_item_id" if duplicate else None


def random_vector(rng, dim):
    kind = rng.choice(["ok"] * 6 + ["null", "short", "long", "null_el", "nan", "inf", "zero"])
    v = rng.normal(size=dim).astype(np.float32).tolist()
    if kind == "null":
        return None
    if kind == "short":
        return v[: rng.integers(0, dim)]
    if kind == "long":
        return v + [0.5]
    if kind == "zero":
        return [0.0] * dim
    j = int(rng.integers(0, dim))
    v[j] = {"null_el": None, "nan": float("nan"), "inf": float(rng.choice([np.inf, -np.inf]))}.get(kind, v[j])
    return v


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("value_type", [pa.float32(), pa.float64()])
def test_reasons_equal_a_per_row_reference_on_random_bad_batches(seed, value_type):
    rng = np.random.default_rng(seed)
    n, dims = 300, [5, 3]
    ids = [None if rng.random() < 0.05 else f"id-{i}" for i in range(n)]
    image = [random_vector(rng, dims[0]) for _ in range(n)]
    text = [random_vector(rng, dims[1]) for _ in range(n)]
    dup = (rng.random(n) < 0.1).tolist()
    columns = [pa.array(image, pa.list_(value_type)), pa.array(text, pa.list_(value_type))]
    got = row_reasons(pa.array(ids), [("image", columns[0], 5), ("text", columns[1], 3)], pa.array(dup)).to_pylist()
    expected = [reference_reason(i, [("image", a), ("text", b)], dims, d) for i, a, b, d in zip(ids, image, text, dup)]
    assert got == expected
    assert len({r.split(":")[-1].split("!")[0] for r in got if r}) >= 5  # many kinds actually occurred


def test_a_clean_batch_has_no_reasons_and_sliced_arrays_keep_their_offsets():
    rng = np.random.default_rng(1)
    vectors = pa.array(list(rng.normal(size=(20, 4)).astype(np.float32)), pa.list_(pa.float32()))
    ids = pa.array([f"i{k}" for k in range(20)])
    assert row_reasons(ids, [("v", vectors, 4)]).null_count == 20
    bad = pa.array([[0.0] * 4] * 5 + [[1.0, 2.0, 3.0, 4.0]] * 5, pa.list_(pa.float32()))
    reasons = row_reasons(ids.slice(0, 5), [("v", bad.slice(5, 5), 4)])
    assert reasons.null_count == 5
    assert row_reasons(ids.slice(0, 5), [("v", bad.slice(0, 5), 4)]).to_pylist() == ["v:zero_vector"] * 5
