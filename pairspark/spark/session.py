"""Building the SparkSession: local runs get a working Python and loopback networking.

Spark's console progress bars are off unless verbose (pairspark.progress logs its own line instead).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from pyspark.sql import SparkSession

CONSOLE_PROGRESS = "spark.ui.showConsoleProgress"
DRIVER_JAVA_OPTIONS = "spark.driver.extraJavaOptions"
# A JVM out of heap can limp on for many minutes (the scheduler's threads dying one by one: a
# 1,000-class run hung 12 minutes before it was killed); this makes it exit at once, with code 3,
# so the run fails within seconds and memory_failure can say what to raise.
EXIT_ON_OOM = "-XX:+ExitOnOutOfMemoryError"
_JVM_OOM_EXIT = 3


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
    chosen = session_conf(conf, verbose, user_set)
    if not under_spark_submit() and DRIVER_JAVA_OPTIONS not in chosen:
        chosen[DRIVER_JAVA_OPTIONS] = EXIT_ON_OOM  # launched by us: the driver JVM's command line
    for key, value in chosen.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def driver_exit_code(wait: float = 0.0) -> int | None:
    """The exit code of the driver JVM this process launched, None while it runs (or not ours).

    `wait`: seconds to wait for it to end. A JVM that exits on OutOfMemoryError closes its socket
    before its process ends (a large heap takes a while to unmap): a call that found the connection
    refused must wait, or it reads a dying JVM as a live one."""
    import subprocess

    from pyspark import SparkContext

    gateway = SparkContext._gateway
    proc = getattr(gateway, "proc", None) if gateway is not None else None
    if proc is None:
        return None
    if wait > 0:
        try:
            return proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            return None
    return proc.poll()


def lost_driver(error: BaseException | None) -> bool:
    """Whether `error`, or one it was raised while handling, is the Python side losing its
    connection to the driver JVM (py4j's network error, a refused or reset socket)."""
    from py4j.protocol import Py4JNetworkError

    seen = 0
    while error is not None and seen < 10:
        if isinstance(error, (Py4JNetworkError, ConnectionError)):
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False


# how long a run that lost its driver waits for the JVM's exit code before it reads it as alive
LOST_DRIVER_WAIT_S = 30.0


def memory_failure(error: BaseException, conf: dict[str, str], master: str) -> str | None:
    """The one line to print when `error` ended a run out of memory, naming what to raise; None
    when it did not. `conf`: the Spark settings the user gave (to quote the current value)."""
    text = f"{type(error).__name__}: {error}"
    if isinstance(error, MemoryError):
        return ("the driver's Python process ran out of memory: run it where it has more (the machine's or "
                "container's limit), or with fewer classes or items per --arrow-batch-size")
    driver_died = driver_exit_code(LOST_DRIVER_WAIT_S if lost_driver(error) else 0.0) == _JVM_OOM_EXIT
    if driver_died or ("java.lang.OutOfMemoryError" in text and (master.startswith("local") or "ExecutorLost" not in text
                                                                and "Lost task" not in text)):
        current = conf.get("spark.driver.memory", "1g (Spark's default)")
        return (f"the Spark driver ran out of Java heap (spark.driver.memory {current}): raise it, e.g. "
                f"--conf spark.driver.memory=8g (or spark-submit --driver-memory 8g)")
    if "java.lang.OutOfMemoryError" in text:
        current = conf.get("spark.executor.memory", "1g (Spark's default)")
        return (f"a Spark executor ran out of Java heap (spark.executor.memory {current}): raise it, e.g. "
                f"--conf spark.executor.memory=8g")
    if "MemoryError" in text:
        return ("a Spark Python worker ran out of memory: raise spark.executor.memoryOverhead (and "
                "spark.executor.pyspark.memory if set), or lower --arrow-batch-size")
    return None
