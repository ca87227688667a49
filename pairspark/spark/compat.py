"""The one place where pyspark versions and session kinds differ (3.5 / 4.x, classic / Connect).

Every API newer than pyspark 3.5 is used here only, each with its fallback, so the rest of the
library runs unchanged on 3.5 and 4.x classic and on 4.x Connect:

* `DataFrame.toArrow` (4.0+): else the classic 3.5 session's `_collect_as_arrow`.
* `createDataFrame(pyarrow.Table)` (4.0+): else through pandas.
* `arrow_udf` (4.1+): a scalar UDF handed Arrow arrays (no pandas conversion of the vectors);
  else `pandas_udf`, whose Series are turned back into Arrow at the boundary.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pandas as pd
import pyarrow as pa
import pyspark
from pyspark.sql import DataFrame, SparkSession
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
            frame[f.name] = [None if v is None else list(v) for v in frame[f.name]]
    return spark.createDataFrame(frame, schema=schema)


def arrow_scalar_udf(fn: Callable[..., pa.Array], return_type: T.DataType):
    """A scalar UDF over Arrow: fn(*pa.Array) -> pa.Array (a StructArray for a struct type)."""
    if PYSPARK_VERSION >= (4, 1):
        from pyspark.sql.functions import ArrowUDFType, arrow_udf

        def on_arrow(*arrays):
            return fn(*[a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a for a in arrays])

        with warnings.catch_warnings():  # "prefer type hints": a varargs wrapper has none to give
            warnings.simplefilter("ignore", UserWarning)
            return arrow_udf(on_arrow, return_type, ArrowUDFType.SCALAR)
    from pyspark.sql.functions import PandasUDFType, pandas_udf

    def on_pandas(*series: pd.Series):
        result = fn(*[pa.array(s, from_pandas=True) for s in series])
        if isinstance(return_type, T.StructType):
            return pa.Table.from_struct_array(result).to_pandas()
        return result.to_pandas()

    with warnings.catch_warnings():  # "prefer type hints": a varargs wrapper has none to give
        warnings.simplefilter("ignore", UserWarning)
        return pandas_udf(on_pandas, return_type, PandasUDFType.SCALAR)
