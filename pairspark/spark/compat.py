"""The one place where pyspark versions and session kinds differ (3.5 / 4.x, classic / Connect).

Every API newer than pyspark 3.5 is used here only, each with its fallback, so the rest of the
library runs unchanged on 3.5 and 4.x classic and on 4.x Connect:

* `DataFrame.toArrow` (4.0+): else the classic 3.5 session's `_collect_as_arrow`.
* `createDataFrame(pyarrow.Table)` (4.0+): else through pandas.
* `arrow_udf` (4.1+): a scalar UDF handed Arrow arrays (no pandas conversion of the vectors);
  else `pandas_udf`, whose Series are turned back into Arrow at the boundary.
* shipping a file to every Python worker (ship_bytes): `SparkContext.addFile` on a classic
  session, `addArtifacts(file=True)` on a Connect one (no SparkContext there); either way a worker
  finds it with `SparkFiles.get` (shipped_path).
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import tempfile
import threading
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyspark
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import types as T

PYSPARK_VERSION = tuple(int(p) for p in pyspark.__version__.split(".")[:2])


def to_arrow(df: DataFrame) -> pa.Table:
    """Collect a (small) DataFrame to the driver as a pyarrow Table."""
    if hasattr(df, "toArrow"):
        return df.toArrow()
    batches = df._collect_as_arrow()  # pyspark 3.5 classic
    if batches:
        return pa.Table.from_batches(batches)
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(df.schema).empty_table()


def create_frame(spark: SparkSession, table: pa.Table, schema: T.StructType) -> DataFrame:
    """A DataFrame from a driver-side pyarrow Table (written once, e.g. the model's tables)."""
    if PYSPARK_VERSION >= (4, 0):
        return spark.createDataFrame(table, schema=schema)
    frame = table.to_pandas()
    for f in schema.fields:  # pandas gives numpy arrays for list columns; Spark 3.5 wants lists
        if isinstance(f.dataType, T.ArrayType):
            frame[f.name] = [None if v is None else v.tolist() for v in frame[f.name]]
    return spark.createDataFrame(frame, schema=schema)


def arrow_scalar_udf(fn: Callable[..., pa.Array], return_type: T.DataType, array_args: Sequence[int] = ()):
    """A scalar UDF over Arrow: fn(*pa.Array) -> pa.Array (a StructArray for a struct type).

    `array_args`: the positions of the array arguments. Before 4.1 the UDF is a pandas_udf, whose
    Arrow -> pandas conversion turns a null array element into NaN; so for those arguments the call
    also ships each row's "holds a null element" flag, computed in the JVM, and the NaNs of the
    flagged rows are nulls again (such a row is invalid either way, and null_element comes before
    non_finite in core/validate.py, so every row gets the reason it gets on 4.x)."""
    if PYSPARK_VERSION >= (4, 1):
        from pyspark.sql.functions import ArrowUDFType, arrow_udf

        def on_arrow(*arrays):
            return fn(*[a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a for a in arrays])

        with warnings.catch_warnings():  # "prefer type hints": a varargs wrapper has none to give
            warnings.simplefilter("ignore", UserWarning)
            return arrow_udf(on_arrow, return_type, ArrowUDFType.SCALAR)
    from pyspark.sql import functions as F
    from pyspark.sql.functions import PandasUDFType, pandas_udf

    positions = tuple(array_args)

    def on_pandas(*series: pd.Series):
        k = len(series) - len(positions)
        arrays = [pa.array(s, from_pandas=False) for s in series[:k]]  # NaN stays NaN
        for i, flags in zip(positions, series[k:]):
            arrays[i] = _as_list_array(arrays[i], flags.to_numpy(dtype=bool))
        result = fn(*arrays)
        if isinstance(return_type, T.StructType):
            return pa.Table.from_struct_array(result).to_pandas()
        return result.to_pandas()

    with warnings.catch_warnings():  # "prefer type hints": a varargs wrapper has none to give
        warnings.simplefilter("ignore", UserWarning)
        udf = pandas_udf(on_pandas, return_type, PandasUDFType.SCALAR)

    def call(*columns: Column) -> Column:
        flags = [F.coalesce(F.exists(columns[i], lambda x: x.isNull()), F.lit(False)) for i in positions]
        return udf(*columns, *flags)

    return call


def _as_list_array(column: pa.Array, flagged: np.ndarray) -> pa.Array:
    """The array argument as a list array, with the NaN elements of the flagged rows made null.
    A batch whose rows are all null comes from pandas without an element type: list<double>."""
    if pa.types.is_null(column.type):
        return pa.nulls(len(column), pa.list_(pa.float64()))
    if not flagged.any():
        return column
    values = column.values.to_numpy(zero_copy_only=False)
    parents = np.repeat(np.arange(len(column)), np.diff(column.offsets.to_numpy()))
    mask = np.isnan(values) & flagged[parents]
    return pa.ListArray.from_arrays(column.offsets, pa.array(values, type=column.type.value_type, mask=mask),
                                    mask=column.is_null())


_SHIP_DIR: str | None = None
_SHIPPED: set[tuple[int, str]] = set()
_SHIP_LOCK = threading.Lock()


def ship_bytes(spark: SparkSession, data: bytes, suffix: str = "") -> str:
    """Make `data` a file every Python worker of this session can read (shipped_path), by
    reference: it never rides in a task or a Connect request (capped at 128 MiB), a worker fetches
    it once. Named by its content, so shipping the same bytes again is free. The driver keeps the
    file until the process ends (a classic session serves it from there)."""
    global _SHIP_DIR
    name = f"pairspark-{hashlib.sha256(data).hexdigest()[:32]}{suffix}"
    with _SHIP_LOCK:
        if _SHIP_DIR is None:
            _SHIP_DIR = tempfile.mkdtemp(prefix="pairspark-ship-")
            atexit.register(shutil.rmtree, _SHIP_DIR, True)
        path = os.path.join(_SHIP_DIR, name)
        if not os.path.exists(path):
            with open(path + ".part", "wb") as out:
                out.write(data)
            os.replace(path + ".part", path)
        if (id(spark), name) not in _SHIPPED:
            try:
                context = spark.sparkContext
            except Exception:  # noqa: BLE001 - Spark Connect has none (PySparkNotImplementedError)
                context = None
            if context is not None:
                context.addFile(path)
            else:
                spark.addArtifacts(path, file=True)
            _SHIPPED.add((id(spark), name))
    return name


def shipped_path(name: str) -> str:
    """On a worker (or the driver): the local path of a file ship_bytes shipped."""
    from pyspark import SparkFiles

    return SparkFiles.get(name)
