"""One session-scoped local SparkSession for every Spark test (local[2], UI off, 2 shuffle partitions)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

SHARED_DATA = Path(os.environ.get("PAIRSPARK_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
# the tests on the shared data fail when it is missing (CI must not pass without them); a user
# without the data may skip them instead by setting this to 1
SKIP_MISSING_DATA = "PAIRSPARK_SKIP_MISSING_DATA"


def shared_set(name: str) -> Path:
    path = SHARED_DATA / name
    if not ((path / "items.parquet").exists() and (path / "classes.parquet").exists()):
        message = (f"shared data set {name} not found at {path}: the tests need ../shared/data beside the repository "
                   f"(or PAIRSPARK_DATA=FOLDER); {SKIP_MISSING_DATA}=1 skips them instead")
        if os.environ.get(SKIP_MISSING_DATA) == "1":
            pytest.skip(message)
        pytest.fail(message, pytrace=False)
    return path


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
    from pyspark.sql import SparkSession

    warehouse = tmp_path_factory.mktemp("warehouse")
    session = (
        SparkSession.builder.master("local[2]")
        .appName("pairspark-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.default.parallelism", "2")
        .config("spark.sql.warehouse.dir", str(warehouse))
        .config("spark.driver.memory", "2g")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
