"""Where the stages read the items, and the one place that chooses the reader.

Two readers, the same answers: Spark's, and pyarrow's in the Python workers for a Parquet path of
`file:` URIs (spark/arrow_scan.py, faster: no conversion of every vector element by Spark).
`arrow_scan` decides for fit and classify alike (--items-reader auto|spark|arrow). Fit hands the
scan to the estimator (`fit_items`, whose passes read `spark/passes.ItemRows`); classify reads
through a `ClassifyReader`, so the classify stage is written once, whichever reader:

    reader.answered(model, label_col)  per item row: ID, LABEL, the model's answers and REASON
    reader.set_aside(answered)         the rows with a REASON, as the items hold them

`SparkReader` is the model's `transform`; `ArrowReader` is the model's `transform_scan`. Both
call transform's per-batch function (spark/transform.batch_answers).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pairspark.config import Settings
from pairspark.core.columns import ITEM_ID
from pairspark.errors import UsageError
from pairspark.ml import PairwiseTournamentModel
from pairspark.spark.arrow_scan import ArrowScan, eligibility
from pairspark.spark.transform import model_answer_names
from pairspark.spark.io import TABLE_PREFIX, by_name, read_source
from pairspark.spark.items import is_set_aside, set_aside_rows
from pairspark.views import View

log = logging.getLogger("pairspark")

# the answered rows' id and label, as strings  # '_' prefix: ignored by Spark, pandas and pyarrow readers
ID, LABEL = "_pairspark_item_id", "_pairspark_label"


def read_items(spark: SparkSession, items_path: str, settings: Settings) -> DataFrame:
    """The items as Spark reads them (--items-format), repartitioned when --partitions is given."""
    items = read_source(spark, items_path, "items", settings.items_format)
    return items.repartition(settings.partitions) if settings.partitions else items


def arrow_scan(items: DataFrame, items_path: str, views: list[View], label_col: str | None,
               settings: Settings) -> ArrowScan | None:
    """The pyarrow reader for these items (spark/arrow_scan.py) when --items-reader allows it and
    the source is eligible; None: Spark's reader. --items-reader arrow on an ineligible source: exit 2."""
    if settings.items_reader == "spark":
        return None
    reason = None
    if items_path.startswith(TABLE_PREFIX) or (settings.items_format or "parquet") != "parquet":
        reason = "the items are not a Parquet path"
    elif settings.partitions:
        reason = "--partitions is given (the arrow reader runs one task per row group)"
    else:
        scan = eligibility(items, list(dict.fromkeys(v.column for v in views)), [ITEM_ID] + ([label_col] if label_col else []))
        if isinstance(scan, ArrowScan):
            return scan
        reason = scan
    if settings.items_reader == "arrow":
        raise UsageError(f"--items-reader arrow cannot read these items: {reason}")
    log.info("items read by Spark's reader: %s", reason)
    return None


class ClassifyReader(Protocol):
    """Where classify reads its items (as spark/passes.ItemRows is where a fit reads them)."""

    name: str  # "spark" or "arrow", for the stage's facts

    def answered(self, model: PairwiseTournamentModel, label_col: str | None) -> DataFrame:
        """Lazily, per item row: ID (item_id as a string), with label_col LABEL (the label as a
        string), the model's answer_fields (spark/transform.py; REASON last, null for a valid row)
        and whatever set_aside needs to find an invalid row again."""

    def set_aside(self, answered: DataFrame) -> DataFrame:
        """The rows of `answered` with a REASON as the items hold them (every column), plus REASON."""


@dataclass(frozen=True)
class SparkReader:
    """Spark's reader: the model's transform over the items DataFrame."""

    items: DataFrame
    name: str = "spark"

    def answered(self, model: PairwiseTournamentModel, label_col: str | None) -> DataFrame:
        # the input row is kept only where it is set aside (a valid row's input columns are nulled:
        # persisting every vector would hold the whole catalog in memory and on disk again)
        invalid = is_set_aside()
        label = [F.col(label_col).cast("string").alias(LABEL)] if label_col else []
        answers = model_answer_names(model.view_models, model.run_methods)
        return model.transform(self.items).select(
            F.col(ITEM_ID).cast("string").alias(ID), *label,
            *[F.when(invalid, by_name(c)).alias(c) for c in self.items.columns], *answers)

    def set_aside(self, answered: DataFrame) -> DataFrame:
        return set_aside_rows(answered, self.items.columns)


@dataclass(frozen=True)
class ArrowReader:
    """pyarrow's reader: the model's transform_scan over the Parquet row groups; an invalid row is
    found again by (file, row index)."""

    scan: ArrowScan
    name: str = "arrow"

    def answered(self, model: PairwiseTournamentModel, label_col: str | None) -> DataFrame:
        return model.transform_scan(self.scan, ID, (label_col, LABEL) if label_col else None)

    def set_aside(self, answered: DataFrame) -> DataFrame:
        return self.scan.set_aside(answered)


def classify_reader(items: DataFrame, items_path: str, views: list[View], label_col: str | None,
                    settings: Settings) -> ClassifyReader:
    """classify's reader of these items: pyarrow's where `arrow_scan` allows it, else Spark's."""
    scan = arrow_scan(items, items_path, views, label_col, settings)
    return SparkReader(items) if scan is None else ArrowReader(scan)
