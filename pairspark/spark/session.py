"""Building the SparkSession: local runs get a working Python and loopback networking.

Spark's console progress bars are off unless verbose (pairspark.progress logs its own line instead).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from pyspark.sql import SparkSession

CONSOLE_PROGRESS = "spark.ui.showConsoleProgress"


def under_spark_submit() -> bool:
    """spark-submit starts the JVM first and hands the driver its gateway port."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def session_conf(
    conf: dict[str, str] | None,
    verbose: bool,
    user_set: Callable[[str], bool] = lambda key: False,
) -> dict[str, str]:
    """The builder's config: the caller's conf, plus Spark's progress bars off unless verbose.

    A setting of the caller's, or one the user gave spark-submit (user_set), wins.
    """
    chosen = dict(conf or {})
    if not verbose and CONSOLE_PROGRESS not in chosen and not user_set(CONSOLE_PROGRESS):
        chosen[CONSOLE_PROGRESS] = "false"
    return chosen


def _submitted(key: str) -> bool:
    """Whether spark-submit's --conf or spark-defaults.conf set key (asks its running JVM)."""
    from pyspark import SparkConf, SparkContext

    SparkContext._ensure_initialized()
    return SparkConf().contains(key)


def build_session(
    master: str = "local[*]",
    app_name: str = "pairspark",
    conf: dict[str, str] | None = None,
    verbose: bool = False,
) -> SparkSession:
    builder = SparkSession.builder.appName(app_name)
    user_set: Callable[[str], bool] = lambda key: False
    if under_spark_submit():
        # Only here: its JVM already runs. Launching ours early would drop the builder's conf
        # (spark.driver.memory, ...) from the JVM's command line.
        user_set = _submitted
    else:
        # Workers must start this very interpreter (the one with numpy and pyarrow installed).
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        if master.startswith("local"):
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        builder = builder.master(master)
    for key, value in session_conf(conf, verbose, user_set).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark
