"""A real standalone cluster on 127.0.0.1: a master, two one-core workers, spark-submit.

The library and its dependencies reach the executors only as the environment archive that
scripts/package builds (docs/DEPLOY.md): `--archives pairspark-env.tar.gz#env` with
`spark.pyspark.python=./env/bin/python`. The test watches /proc during the run: the executors'
Python processes were started as ./env/bin/python inside their executor directories, and every
extension module they loaded from a site-packages (numpy, pandas, pyarrow, llvmlite for numba) is
the unpacked archive's, none the driver's .venv; pairspark's numba kernels were compiled (and
cached) beside the archive's copy of their source.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
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


def _package_key() -> str:
    """What the archive is built from: the package's sources, its pins and the build script."""
    digest = hashlib.sha256()
    files = [ROOT / "pyproject.toml", ROOT / "constraints.txt", ROOT / "README.md",
             ROOT / "scripts" / "package", ROOT / "scripts" / "_bootstrap.sh",
             *sorted((ROOT / "pairspark").rglob("*.py")), *sorted((ROOT / "pairspark").rglob("py.typed"))]
    for path in files:
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:20]


@pytest.fixture(scope="session")
def env_archive(request, tmp_path_factory) -> Path:
    """dist/pairspark-env.tar.gz as scripts/package builds it, cached in .pytest_cache by _package_key()."""
    if shutil.which("java") is None:
        pytest.skip("no java on PATH")
    if getattr(request.config, "cache", None) is None:  # -p no:cacheprovider: build for this session
        cache = tmp_path_factory.mktemp("pairspark-env")
    else:
        cache = Path(request.config.cache.mkdir("pairspark-env"))
    key = _package_key()
    archive = cache / key / "pairspark-env.tar.gz"
    if not archive.exists():
        dist = tmp_path_factory.mktemp("dist")
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        done = subprocess.run([str(ROOT / "scripts" / "package"), "--dist", str(dist)], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=1200)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
        assert (dist / "pairspark-env.tar.gz").is_file(), done.stdout
        assert [p.name for p in dist.glob("pairspark-*.whl")], done.stdout
        for old in cache.iterdir():  # one archive (~200 MB) at a time
            if old.name != key and not old.name.startswith("."):
                shutil.rmtree(old, ignore_errors=True)
        staging = cache / f".{key}.{os.getpid()}"
        shutil.move(str(dist), str(staging))
        try:
            staging.rename(cache / key)
        except OSError:  # another session published the same key first
            shutil.rmtree(staging, ignore_errors=True)
    return archive


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
        # Nothing of the test's Python set-up may leak to the executors through the environment.
        base = {k: v for k, v in os.environ.items()
                if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON")}
        self.env = {**base, "SPARK_HOME": str(SPARK_HOME), "SPARK_LOCAL_IP": "127.0.0.1",
                    "SPARK_NO_DAEMONIZE": "1",
                    # a lost worker is noticed after 10 s; the workers must know it too, since they
                    # heartbeat every timeout / 4 (15 s by default, which the master would take for dead)
                    "SPARK_MASTER_OPTS": "-Dspark.worker.timeout=10", "SPARK_WORKER_OPTS": "-Dspark.worker.timeout=10"}

    def _spawn(self, name: str, *args: str) -> None:
        log = open(self.workdir / f"{name}.log", "w")
        self.procs[name] = subprocess.Popen([str(SPARK_HOME / "bin" / "spark-class"), *args], env=self.env,
                                            cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)

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
        # the unpacked archives (~630 MB per executor, and the driver's); the logs stay
        envs = [str(p) for p in [*self.workdir.glob("work*/app-*/*/env"), self.workdir / "driver-env"] if p.exists()]
        if envs:
            subprocess.run(["rm", "-rf", "--", *envs], check=False, timeout=600)


class PythonWatcher(threading.Thread):
    """Samples /proc while a job runs. For every process whose working directory lies in a worker's
    work dir and runs pyspark (the executors' Python daemon and its forked workers): its command
    line, its directory, and every file it has mapped (the extension modules it imported)."""

    def __init__(self, workdir: Path):
        super().__init__(daemon=True)
        self.workdir = str(workdir.resolve()) + os.sep + "work"
        self.seen: dict[int, tuple[list[str], str, set[str]]] = {}
        self.done = threading.Event()

    def _sample(self) -> None:
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            pid = int(proc.name)
            try:
                if pid not in self.seen:
                    cwd = os.readlink(proc / "cwd")
                    if not cwd.startswith(self.workdir):
                        continue
                    argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
                    if argv[1:2] != ["-m"] or not argv[2].startswith("pyspark."):  # pyspark.daemon
                        continue
                    self.seen[pid] = (argv, cwd, set())
                maps = (proc / "maps").read_text(errors="replace")
            except OSError:  # gone meanwhile
                continue
            self.seen[pid][2].update(line.split(None, 5)[5] for line in maps.splitlines() if line.count(" ") >= 5
                                     and "/" in line.split(None, 5)[-1])

    def run(self) -> None:
        while not self.done.is_set():
            self._sample()
            time.sleep(0.2)

    def stop(self) -> dict[int, tuple[list[str], str, set[str]]]:
        self.done.set()
        self.join(timeout=30)
        return self.seen


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


def _submit(cluster: Cluster, tmp_path: Path, archive: Path, driver_python: str, items: str, classes: str,
            out: Path, *extra_conf: str) -> subprocess.Popen:
    """docs/DEPLOY.md's client-mode spark-submit line."""
    conf = ["spark.pyspark.python=./env/bin/python", f"spark.pyspark.driver.python={driver_python}",
            "spark.executor.memory=1g", "spark.task.maxFailures=8", "spark.ui.enabled=false", *extra_conf]
    cmd = [
        str(SPARK_HOME / "bin" / "spark-submit"), "--master", cluster.url,
        "--archives", f"{archive}#env",
        *[arg for c in conf for arg in ("--conf", c)],
        str(ROOT / "jobs" / "run.py"),
        "--items", items, "--classes", classes, "--views", "image=image_embedding,text=text_embedding",
        "--out", str(out), "--label-col", "label", "--partitions", "8",
    ]
    log = open(tmp_path / f"submit-{out.name}.log", "w")
    job = subprocess.Popen(cmd, env=cluster.env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                           start_new_session=True)
    cluster.procs[f"submit-{out.name}"] = job  # stopped with the cluster, by pid, whatever happens
    return job


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


def _classifying(folder: Path, name: str) -> bool:
    """The run writing `folder/name` (into it, or into its own name.staging-* folder beside it) has
    begun writing its quarantine or predictions."""
    for run in folder.glob(f"{name}*"):
        try:
            if any(p.name.startswith(("quarantine", "predictions")) for p in run.iterdir()):
                return True
        except OSError:  # not a folder, or renamed meanwhile
            continue
    return False


@pytest.mark.slow
def test_spark_submit_with_the_env_archive_on_a_standalone_cluster_survives_a_killed_worker(cluster, env_archive, tmp_path):
    items, classes, _ = make_catalog(60_000, 64, 12, seed=8)
    items_path, classes_path = write_catalog(tmp_path / "data", items, classes)
    local = _local_reference(tmp_path, items_path, classes_path)

    # 1. a clean cluster run equals local mode, value for value; the driver runs the test's
    #    interpreter (.venv, editable install), the executors only what the archive holds
    watcher = PythonWatcher(tmp_path)
    watcher.start()
    try:
        job = _submit(cluster, tmp_path, env_archive, sys.executable, items_path, classes_path, tmp_path / "cluster")
        assert job.wait(timeout=900) == 0, (tmp_path / "submit-cluster.log").read_text()[-4000:]
    finally:
        seen = watcher.stop()
    assert _content(tmp_path / "cluster" / "predictions") == _content(local / "predictions")
    assert "Lost executor" not in (tmp_path / "submit-cluster.log").read_text()

    # The executors' Python processes, on both workers, were started as ./env/bin/python in their
    # executor directories, where Spark unpacked the archive ...
    assert seen, "no executor Python process seen"
    pyver = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    by_worker: dict[str, set[str]] = {}
    for argv, cwd, mapped in seen.values():
        assert argv[0] == "./env/bin/python", (argv, cwd)
        assert (Path(cwd) / "env" / "pyvenv.cfg").is_file(), cwd
        # ... and every extension module they loaded from a site-packages is the archive's
        site = f"{cwd}/env/lib/{pyver}/site-packages/"
        foreign = sorted(m for m in mapped if "site-packages" in m and not m.startswith(site))
        assert not foreign, f"{argv} in {cwd} loaded from outside the archive: {foreign[:5]}"
        assert not any(m.startswith(str(ROOT)) for m in mapped), (cwd, sorted(mapped))
        by_worker.setdefault(Path(cwd).parts[-3], set()).update(m[len(site):] for m in mapped if m.startswith(site))
    assert set(by_worker) == {"work1", "work2"}, seen
    for worker, modules in by_worker.items():  # numpy, pandas, pyarrow, numba (its llvmlite) among them
        for package in ("numpy/", "pandas/", "pyarrow/", "llvmlite/"):
            assert any(m.startswith(package) for m in modules), f"{worker}: no {package} from the archive"
    # pairspark is pure Python, so no mapping shows it; but numba caches the compiled tournament
    # kernels beside the source file it compiled, so that file was the archive's copy
    executor_dirs = {cwd for _, cwd, _ in seen.values()}
    for cwd in executor_dirs:
        kernels_cache = Path(cwd) / "env" / "lib" / pyver / "site-packages" / "pairspark" / "core" / "__pycache__"
        assert list(kernels_cache.glob("kernels.*.nbi")), f"no numba cache of pairspark's kernels in {kernels_cache}"

    # 2. the archive unpacked on the submitting machine is also a client-mode driver interpreter;
    #    kill one worker (its executor and Python workers with it) while the job classifies
    driver_env = tmp_path / "driver-env"
    driver_env.mkdir()
    subprocess.run(["tar", "-xzf", str(env_archive), "-C", str(driver_env)], check=True)
    job = _submit(cluster, tmp_path, env_archive, str(driver_env / "bin" / "python"), items_path, classes_path,
                  tmp_path / "killed")
    out = tmp_path / "killed"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and job.poll() is None:
        if _classifying(tmp_path, out.name):
            break
        time.sleep(0.05)
    assert job.poll() is None, "the job ended before the worker could be killed"
    cluster.kill("worker1")
    assert job.wait(timeout=900) == 0, (tmp_path / "submit-killed.log").read_text()[-4000:]
    assert _content(out / "predictions") == _content(local / "predictions")
    assert "Lost executor" in (tmp_path / "submit-killed.log").read_text()  # and not in run 1's
