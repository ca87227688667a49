"""Building the SparkSession: local runs get a working Python and loopback networking."""

from __future__ import annotations

import os
import sys

from pyspark.sql import SparkSession


def under_spark_submit() -> bool:
    """spark-submit starts the JVM first and hands the driver its gateway port."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def build_session(master: str = "local[*]", app_name: str = "pairspark", conf: dict[str, str] | None = None) -> SparkSession:
    builder = SparkSession.builder.appName(app_name)
    if not under_spark_submit():
        # Workers must start this very interpreter (the one with numpy and pyarrow installed).
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        if master.startswith("local"):
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        builder = builder.master(master)
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark
