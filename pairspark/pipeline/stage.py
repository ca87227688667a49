"""What every stage shares: its "done" line and progress, its MLflow run, the versions and the
time it records, and how its outputs name an input."""

from __future__ import annotations

import logging
import platform
import time
from contextlib import contextmanager
from datetime import datetime, timezone

import numba
import numpy as np
import pandas as pd
import pyarrow as pa
import pyspark
from pyspark.sql import SparkSession

from pairspark import tracking
from pairspark.version import __version__
from pairspark.progress import progress
from pairspark.spark.io import TABLE_PREFIX
from pairspark.spark.fs import FileSystem

log = logging.getLogger("pairspark")


@contextmanager
def stage(name: str, spark: SparkSession | None = None, total_items: int | None = None):
    """Times the stage and logs one "done" line; given spark, logs progress on long Spark stages."""
    start = time.perf_counter()
    facts: dict = {}
    with progress(spark, name, total_items):
        yield facts
    seconds = time.perf_counter() - start
    details = " ".join(f"{k}={v}" for k, v in facts.items())
    log.info("%s done in %.1fs %s", name, seconds, details)
    if (tracker := tracking.active()) is not None:
        tracker.stage_seconds(name, seconds)


@contextmanager
def tracked(command: str, experiment: str | None, params: dict):
    """An MLflow run around a command when tracking is on (MLFLOW_TRACKING_URI or an experiment;
    pairspark/tracking.py), else nothing; a command inside another (run's fit) logs to the outer run."""
    if not tracking.tracking_enabled(experiment):
        yield None
        return
    with tracking.tracked(command, experiment, params) as tracker:
        yield tracker


def versions() -> dict[str, str]:
    return {
        "pairspark": __version__,
        "python": platform.python_version(),
        "pyspark": pyspark.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "pyarrow": pa.__version__,
        "numba": numba.__version__,
    }


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def source_ref(fs: FileSystem, source: str) -> str:
    """How outputs record an input: a table as table:NAME, a path fully qualified."""
    return source if source.startswith(TABLE_PREFIX) else fs.qualify(source)
