"""The console script as a user runs it: a fresh JVM, real exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.synthetic import make_catalog, write_bad_catalog, write_catalog

PAIRSPARK = shutil.which("pairspark", path=str(Path(sys.executable).parent)) or "pairspark"


def _run(*args, cwd):
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    return subprocess.run([PAIRSPARK, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_console_script_runs_the_pipeline_and_reports_bad_paths(tmp_path):
    items, classes, _ = make_catalog(300, 8, 4, seed=3)
    items_path, classes_path = write_catalog(tmp_path / "data", items, classes)
    conf = tmp_path / "my.toml"
    conf.write_text('[pairspark]\nratio_threshold = 1.3\nseed = 4\n')
    done = _run(
        "run", "--items", items_path, "--classes", classes_path, "--views", "image=image_embedding,text=text_embedding",
        "--out", str(tmp_path / "out"), "--label-col", "label", "--config", str(conf), "--seed", "7",
        "--master", "local[2]", cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "agreement pairwise" in done.stdout
    metrics = json.loads((tmp_path / "out" / "report" / "metrics.json").read_text())
    assert metrics["counts"]["items"] == 300
    meta = json.loads((tmp_path / "out" / "model" / "meta.json").read_text())
    assert meta["settings"]["ratio_threshold"] == 1.3 and meta["settings"]["seed"] == 7  # file, then flag
    assert "fit done in" in done.stderr and "classify done in" in done.stderr

    # float settings typed on the command line (argparse hands them over as text)
    floats = _run("fit", "--items", items_path, "--classes", classes_path, "--views", "image=image_embedding,text=text_embedding",
                  "--out", str(tmp_path / "floats"), "--ratio-threshold", "1.25", "--min-cosine", "-0.5", "--min-margin", "0.01",
                  "--master", "local[2]", cwd=tmp_path)
    assert floats.returncode == 0, floats.stderr[-3000:]
    meta = json.loads((tmp_path / "floats" / "meta.json").read_text())
    assert (meta["settings"]["ratio_threshold"], meta["settings"]["min_cosine"]) == (1.25, -0.5)
    queue = _run("review", "--predictions", str(tmp_path / "out" / "predictions"), "--out", str(tmp_path / "queue"),
                 "--review-below", "0.8", "--master", "local[1]", cwd=tmp_path)
    assert queue.returncode == 0, queue.stderr[-3000:]
    assert json.loads((tmp_path / "queue" / "summary.json").read_text())["below"] == 0.8
    wrong = _run("review", "--predictions", str(tmp_path / "out" / "predictions"), "--out", str(tmp_path / "q2"),
                 "--review-below", "1.5", "--master", "local[1]", cwd=tmp_path)
    assert wrong.returncode == 2 and "--review-below: must be a probability in [0, 1], got 1.5" in wrong.stderr

    bad = _run("fit", "--items", str(tmp_path / "missing.parquet"), "--classes", classes_path, "--views", "image=image_embedding",
               "--out", str(tmp_path / "m"), "--master", "local[1]", cwd=tmp_path)
    assert bad.returncode == 2
    error_lines = [line for line in bad.stderr.splitlines() if line.startswith("pairspark fit: error:")]
    assert len(error_lines) == 1 and "missing.parquet" in error_lines[0]
    assert "Traceback" not in bad.stderr

    bad_items, bad_classes = write_bad_catalog(tmp_path / "bad")
    strict = _run("fit", "--items", bad_items, "--classes", bad_classes, "--views", "image=image_embedding,text=text_embedding",
                  "--out", str(tmp_path / "strict"), "--on-invalid", "error", "--master", "local[1]", cwd=tmp_path)
    assert strict.returncode == 3
    error_lines = [line for line in strict.stderr.splitlines() if line.startswith("pairspark fit: error:")]
    assert len(error_lines) == 1 and "item_id=" in error_lines[0] and "Traceback" not in strict.stderr
    assert not (tmp_path / "strict").exists()


@pytest.mark.slow
def test_a_driver_out_of_heap_exits_at_once_with_one_line_naming_what_to_raise(tmp_path):
    """A deliberately small driver heap (512 MB) against a model of 10,000 classes x 3,072 dims (its
    compact statistics alone 246 MB, made into a DataFrame on the driver to be written): the JVM exits
    on its OutOfMemoryError (-XX:+ExitOnOutOfMemoryError), and the run fails in seconds, exit code 4,
    with one line naming spark.driver.memory; it never hangs."""
    import time

    items, classes, _ = make_catalog(200, 3072, 10_000, seed=1, views=("image",))
    items_path, classes_path = write_catalog(tmp_path / "data", items, classes)
    started = time.monotonic()
    done = _run("fit", "--items", items_path, "--classes", classes_path, "--views", "image=image_embedding",
                "--out", str(tmp_path / "m"), "--methods", "base,pairwise", "--conf", "spark.driver.memory=512m",
                "--master", "local[2]", cwd=tmp_path)
    assert done.returncode == 4, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("pairspark fit: error: the Spark driver ran out of Java heap (spark.driver.memory 512m)"), last
    # no traceback of py4j's per lost call, nor of pairspark's (pyspark's accumulator thread still prints its EOF)
    assert "--conf spark.driver.memory=" in last and "Py4JNetworkError" not in done.stderr
    assert "/pairspark/" not in done.stderr
    assert time.monotonic() - started < 300
    assert not (tmp_path / "m").exists()


def test_memory_failures_are_told_apart_from_other_errors():
    from pairspark.spark.session import memory_failure

    assert "driver's Python process" in memory_failure(MemoryError(), {}, "local[2]")
    assert "spark.driver.memory 1g" in memory_failure(RuntimeError("java.lang.OutOfMemoryError: Java heap space"), {}, "local[2]")
    executor = RuntimeError("Job aborted: Lost task 0.3 (ExecutorLostFailure): java.lang.OutOfMemoryError: Java heap space")
    assert "spark.executor.memory 4g" in memory_failure(executor, {"spark.executor.memory": "4g"}, "yarn")
    worker = RuntimeError("PythonException: Traceback ... numpy._core._exceptions._ArrayMemoryError: MemoryError")
    assert "Python worker" in memory_failure(worker, {}, "yarn")
    assert memory_failure(RuntimeError("Table or view not found"), {}, "local[2]") is None


def test_a_lost_connection_waits_for_the_dying_driver_before_naming_its_heap(monkeypatch):
    """CI's race: a JVM exiting on OutOfMemoryError refuses connections before its process ends.
    A stand-in driver process that exits with the JVM's out-of-memory code (3) a moment after the
    connection is lost: read at once it is alive, so the run must wait for it."""
    import subprocess
    import sys
    import types

    from pyspark import SparkContext

    from pairspark.spark.session import driver_exit_code, lost_driver, memory_failure

    proc = subprocess.Popen([sys.executable, "-c", "import time, sys; time.sleep(1.5); sys.exit(3)"])
    monkeypatch.setattr(SparkContext, "_gateway", types.SimpleNamespace(proc=proc))
    try:
        lost = RuntimeError("cleanup failed")
        lost.__context__ = ConnectionRefusedError(111, "Connection refused")
        assert lost_driver(lost) and not lost_driver(RuntimeError("Table or view not found"))
        assert driver_exit_code() is None
        assert "spark.driver.memory 512m" in memory_failure(lost, {"spark.driver.memory": "512m"}, "local[2]")
        assert driver_exit_code() == 3
    finally:
        proc.kill()
        proc.wait()
