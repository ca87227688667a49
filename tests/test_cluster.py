"""A real standalone cluster on 127.0.0.1: a master, two one-core workers, spark-submit.

The library reaches the executors only as a zip given with --py-files: the executors' Python runs
with -S (no site-packages .pth processing, so the editable install is invisible to it) and gets
numpy, pandas and pyarrow from an explicit PYTHONPATH.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pyspark
import pytest

from tests.synthetic import make_catalog, write_catalog

ROOT = Path(__file__).resolve().parents[1]
SPARK_HOME = Path(pyspark.__file__).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _zip_library(dest: Path) -> Path:
    archive = dest / "pairspark.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in (ROOT / "pairspark").rglob("*.py"):
            zf.write(path, path.relative_to(ROOT))
    return archive


def _executor_python(dest: Path) -> Path:
    site = sysconfig.get_paths()["purelib"]
    wrapper = dest / "executor-python"
    wrapper.write_text(f'#!/bin/sh\nexport PYTHONPATH="${{PYTHONPATH:+$PYTHONPATH:}}{site}"\nexec {sys.executable} -S "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def _content(folder: Path) -> list[tuple[str, bytes]]:
    """Every value of every file, file by file (float bits included).

    Not the raw bytes: parquet-mr writes each column's set of encodings in the JVM's HashSet
    order, which can differ between two JVM processes; the data pages are the same.
    """
    parts = sorted(folder.glob("part-*.parquet"), key=lambda p: p.name.split("-")[1])
    out = []
    for part in parts:
        table = pq.read_table(part)
        out.append((part.name.split("-")[1], hashlib.sha256(table.to_pandas().to_csv(float_format="%.9g").encode()).digest()))
    return out


class Cluster:
    """Processes started by the test, each in its own process group, all stopped by id."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.procs: dict[str, subprocess.Popen] = {}
        self.port = _free_port()
        self.url = f"spark://127.0.0.1:{self.port}"
        self.env = {**os.environ, "SPARK_HOME": str(SPARK_HOME), "SPARK_LOCAL_IP": "127.0.0.1",
                    "SPARK_MASTER_OPTS": "-Dspark.worker.timeout=10", "SPARK_NO_DAEMONIZE": "1"}

    def _spawn(self, name: str, *args: str) -> None:
        log = open(self.workdir / f"{name}.log", "w")
        self.procs[name] = subprocess.Popen([str(SPARK_HOME / "bin" / "spark-class"), *args], env=self.env,
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def start(self) -> None:
        self._spawn("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                    "--port", str(self.port), "--webui-port", str(_free_port()))
        self._wait_log("master", "Starting Spark master")
        for i in (1, 2):
            work = self.workdir / f"work{i}"
            work.mkdir()
            self._spawn(f"worker{i}", "org.apache.spark.deploy.worker.Worker", self.url, "--host", "127.0.0.1",
                        "--cores", "1", "--memory", "1536m", "--webui-port", str(_free_port()), "--work-dir", str(work))
        for i in (1, 2):
            self._wait_log(f"worker{i}", "Successfully registered with master")

    def _wait_log(self, name: str, text: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in (self.workdir / f"{name}.log").read_text(errors="replace"):
                return
            if self.procs[name].poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"{name} did not log {text!r}:\n" + (self.workdir / f"{name}.log").read_text()[-3000:])

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def stop(self) -> None:
        for name in reversed(list(self.procs)):
            try:
                os.killpg(self.procs[name].pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.procs[name].wait(timeout=30)


@pytest.fixture
def cluster(tmp_path):
    if shutil.which("java") is None:
        pytest.skip("no java on PATH")
    c = Cluster(tmp_path)
    try:
        c.start()
        yield c
    finally:
        c.stop()


def _submit(cluster: Cluster, tmp_path: Path, items: str, classes: str, out: Path) -> subprocess.Popen:
    cmd = [
        str(SPARK_HOME / "bin" / "spark-submit"), "--master", cluster.url,
        "--py-files", str(_zip_library(tmp_path)),
        "--conf", f"spark.pyspark.python={_executor_python(tmp_path)}",
        "--conf", f"spark.pyspark.driver.python={sys.executable}",
        "--conf", "spark.executor.memory=1g", "--conf", "spark.task.maxFailures=8",
        "--conf", "spark.ui.enabled=false",
        str(ROOT / "jobs" / "run.py"),
        "--items", items, "--classes", classes, "--views", "image=image_embedding,text=text_embedding",
        "--out", str(out), "--label-col", "label", "--partitions", "8",
    ]
    log = open(tmp_path / f"submit-{out.name}.log", "w")
    return subprocess.Popen(cmd, env={**cluster.env, "PYSPARK_PYTHON": str(_executor_python(tmp_path))},
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _local_reference(tmp_path: Path, items: str, classes: str) -> Path:
    out = tmp_path / "local"
    done = subprocess.run(
        [str(Path(sys.executable).parent / "pairspark"), "run", "--items", items, "--classes", classes,
         "--views", "image=image_embedding,text=text_embedding", "--out", str(out), "--label-col", "label",
         "--master", "local[2]"],
        env={**os.environ, "PYSPARK_PYTHON": sys.executable}, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.mark.slow
def test_spark_submit_on_a_standalone_cluster_survives_a_killed_worker(cluster, tmp_path):
    items, classes, _ = make_catalog(60_000, 64, 12, seed=8)
    items_path, classes_path = write_catalog(tmp_path / "data", items, classes)
    local = _local_reference(tmp_path, items_path, classes_path)

    # 1. a clean cluster run equals local mode, value for value
    job = _submit(cluster, tmp_path, items_path, classes_path, tmp_path / "cluster")
    assert job.wait(timeout=900) == 0, (tmp_path / "submit-cluster.log").read_text()[-4000:]
    assert _content(tmp_path / "cluster" / "predictions") == _content(local / "predictions")

    # 2. kill one worker (its executor and Python workers with it) while the job classifies
    job = _submit(cluster, tmp_path, items_path, classes_path, tmp_path / "killed")
    out = tmp_path / "killed"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and job.poll() is None:
        if out.exists() and any(p.name.startswith(("quarantine.staging-", "predictions.staging-")) for p in out.iterdir()):
            break
        time.sleep(0.05)
    assert job.poll() is None, "the job ended before the worker could be killed"
    cluster.kill("worker1")
    assert job.wait(timeout=900) == 0, (tmp_path / "submit-killed.log").read_text()[-4000:]
    assert _content(out / "predictions") == _content(local / "predictions")
    log = (tmp_path / "submit-killed.log").read_text()
    assert "Lost executor" in log or "lost" in log.lower()
