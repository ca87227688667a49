"""The embedding stages: the items' text columns as vectors (embed), and a classes table from
class names and prompt templates (embed_classes), both with pairspark/embed.py's encoders."""

from __future__ import annotations

import time

import pyarrow as pa
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema

from pairspark.errors import UsageError
from pairspark.pipeline.stage import stage
from pairspark.spark.compat import create_frame
from pairspark.spark.io import read_source, require_columns
from pairspark.spark.publish import atomic_output


def embed(spark: SparkSession, items_path: str, text_cols: list[str], out: str, model: str = "minilm",
          batch_size: int = 64, partitions: int | None = None, items_format: str | None = None) -> dict:
    """The items with one array<float> column `<col>_embedding` per text column (embed.py),
    written to `out` atomically; null/empty text gets a null vector (quarantined downstream)."""
    from pairspark.embed import ENCODERS, embed_series_udf

    if model not in ENCODERS:
        raise UsageError(f"unknown model {model!r}; available: {', '.join(ENCODERS)}")
    with stage("embed", spark) as facts:
        items = read_source(spark, items_path, "items", items_format)
        require_columns(items, text_cols, "items table")
        clash = [f"{c}_embedding" for c in text_cols if f"{c}_embedding" in items.columns]
        if clash:
            raise UsageError(f"the items already have {', '.join(clash)}; drop them or embed another column")
        if partitions:
            items = items.repartition(partitions)
        udf = embed_series_udf(model, batch_size)
        embedded = items.select("*", *[udf(F.col(c).cast("string")).alias(f"{c}_embedding") for c in text_cols])
        start = time.perf_counter()
        marker: dict = {}
        with atomic_output(spark, out, marker) as staging:
            embedded.write.parquet(staging)
            written = spark.read.parquet(staging)
            counts = written.select(F.count(F.lit(1)).alias("items"),
                                    *[F.sum(F.col(f"{c}_embedding").isNull().cast("int")).alias(c) for c in text_cols]).first()
            marker["counts"] = {"items": int(counts["items"]), "null_vectors": {c: int(counts[c] or 0) for c in text_cols}}
        seconds = time.perf_counter() - start
        info = {**marker["counts"], "model": model, "columns": [f"{c}_embedding" for c in text_cols],
                "seconds": round(seconds, 2), "texts_per_s": round(marker["counts"]["items"] * len(text_cols) / seconds, 1)}
        facts.update(items=info["items"], null_vectors=info["null_vectors"], texts_per_s=info["texts_per_s"], out=out)
    return info


def embed_classes(spark: SparkSession, names: list[str], views: list[str], out: str,
                  prompts: list[str] | tuple[str, ...] | None = None, model: str = "minilm", batch_size: int = 64) -> dict:
    """A classes table (class_id, one prompt-vector column per view) from class names: one row per
    class and prompt template, every view holding the same text embedding of template.format(name)
    (a text encoder has one space). Classes with several rows are ensembled by load_classes. No
    templates: embed.PROMPT_TEMPLATES (docs/METHOD.md, "Several prompts per class")."""
    from pairspark.embed import PROMPT_TEMPLATES, encoder

    templates = list(dict.fromkeys([prompts] if isinstance(prompts, str) else prompts or PROMPT_TEMPLATES))
    missing = [t for t in templates if "{}" not in t]
    if missing:
        raise UsageError(f"--prompt needs a {{}} where the class name goes, got {missing[0]!r}")
    if len(set(names)) != len(names) or not all(n.strip() for n in names):
        raise UsageError("class names must be distinct and non-empty")
    if len(names) < 2:
        raise UsageError("at least 2 class names are needed")
    with stage("embed-classes", spark) as facts:
        texts = [(name, template.format(name)) for name in names for template in templates]
        vectors = encoder(model).encode([text for _, text in texts], batch_size)
        columns = {"class_id": pa.array([name for name, _ in texts], pa.string())}
        for view in views:
            columns[view] = pa.array(list(vectors), pa.list_(pa.float32()))
        table = pa.table(columns)
        with atomic_output(spark, out, {"counts": {"classes": len(names), "rows": len(texts)}}) as staging:
            create_frame(spark, table, from_arrow_schema(table.schema)).coalesce(1).write.parquet(staging)
        facts.update(classes=len(names), rows=len(texts), out=out)
    return {"classes": len(names), "rows": len(texts), "views": views, "prompts": templates, "model": model,
            "dim": int(vectors.shape[1])}
