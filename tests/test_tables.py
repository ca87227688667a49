"""Metastore tables in and out, against a real Derby-backed Hive metastore in local mode.

Embedded Derby admits one JVM at a time, so every step is a process of its own (the pytest
process keeps its own session, which has no metastore): a table written by one process is read
by the next, as in a nightly job."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import shared_set

PAIRSPARK = str(Path(sys.executable).parent / "pairspark")
VIEWS = "image=image_embedding,text=text_embedding"


def _hive_conf(root: Path) -> dict[str, str]:
    return {
        "spark.sql.catalogImplementation": "hive",
        "spark.sql.warehouse.dir": str(root / "warehouse"),
        "spark.hadoop.javax.jdo.option.ConnectionURL": f"jdbc:derby:;databaseName={root / 'metastore_db'};create=true",
        "spark.ui.enabled": "false",
    }


def _env(root: Path) -> dict[str, str]:
    # Derby writes derby.log into the working directory: keep it in the test's folder
    return {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
            "SPARK_LOCAL_IP": "127.0.0.1"}


def _spark_script(root: Path, body: str) -> subprocess.CompletedProcess:
    """Run `body` with `spark`, a Hive-enabled session, in a process of its own; returns its output."""
    conf = "".join(f"    .config({k!r}, {v!r})\n" for k, v in _hive_conf(root).items())
    script = ("from pyspark.sql import SparkSession\n"
              "spark = (SparkSession.builder.master('local[2]')\n" + conf + "    .getOrCreate())\n"
              "spark.sparkContext.setLogLevel('ERROR')\n" + textwrap.dedent(body) + "\nspark.stop()\n")
    return subprocess.run([sys.executable, "-c", script], cwd=root, env=_env(root), capture_output=True, text=True,
                          timeout=600, check=True)


def _cli(root: Path, *args: str) -> list[str]:
    conf = [arg for k, v in _hive_conf(root).items() for arg in ("--conf", f"{k}={v}")]
    return [PAIRSPARK, *args, "--master", "local[2]", *conf]


def _read_labels(root: Path) -> dict:
    done = _spark_script(root, """
        import json
        frame = spark.table("catalog_labels")
        print("RESULT " + json.dumps({"rows": frame.count(), "columns": frame.columns,
                                      "ids": frame.select("item_id").distinct().count()}))
    """)
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


@pytest.mark.slow
def test_a_run_reads_a_metastore_table_and_publishes_the_predictions_as_one(tmp_path):
    data = shared_set("fashion_clip")
    root = tmp_path
    _spark_script(root, f"""
        spark.read.parquet({str(data / 'items.parquet')!r}).write.saveAsTable("catalog_items")
    """)
    run = _cli(root, "run", "--items", "table:catalog_items", "--classes", str(data / "classes.parquet"), "--views", VIEWS,
               "--out", str(root / "out"), "--methods", "base,pairwise", "--predictions-table", "catalog_labels")
    first = subprocess.run(run, cwd=root, env=_env(root), capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    labels = _read_labels(root)
    assert labels["rows"] == labels["ids"] == 1575
    assert {"item_id", "image_class", "text_class", "image_pairwise"} <= set(labels["columns"])
    info = json.loads((root / "out" / "predictions" / "_pairspark.json").read_text())
    assert info["items"] == "table:catalog_items"

    # a rerun killed while it writes the new version: readers still see last night's rows
    proc = subprocess.Popen(run, cwd=root, env=_env(root), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 600
    warehouse = root / "warehouse"
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            versions = [p for p in warehouse.iterdir() if "__pairspark_v" in p.name]
            if len(versions) >= 2:  # the rerun started writing its version table
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the rerun ended before it could be killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert _read_labels(root)["rows"] == 1575

    # the next run cleans up after the killed one and publishes
    again = subprocess.run(run, cwd=root, env=_env(root), capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert _read_labels(root)["rows"] == 1575
    versions = sorted(p.name for p in warehouse.iterdir() if "__pairspark_v" in p.name)
    assert len(versions) == 2, versions  # tonight's and, for readers still scanning it, last night's


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["--items", "table:no_such_table"], "items table no_such_table cannot be read"),
    (["--items-format", "nosuchformat"], "unknown format 'nosuchformat'"),
    (["--conf", "spark.sql.shuffle.partitions"], "--conf takes KEY=VALUE"),
])
def test_bad_sources_and_settings_are_one_line_errors(tmp_path, args, message):
    data = shared_set("fashion_clip")
    base = {"--items": str(data / "items.parquet")}
    command = [PAIRSPARK, "fit", "--classes", str(data / "classes.parquet"), "--views", VIEWS, "--out", str(tmp_path / "m"),
               "--master", "local[1]"]
    if "--items" not in args:
        command += ["--items", base["--items"]]
    done = subprocess.run(command + args, cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in done.stderr
