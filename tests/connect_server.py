"""A Spark Connect server from the pip-installed pyspark, on 127.0.0.1 and a free port, for tests.

    from tests.connect_server import connect_server
    with connect_server(tmp_dir) as server:       # blocks until the port accepts connections
        ...  SparkSession.builder.remote(server.url).getOrCreate()  (in another process)

The server is `sbin/start-connect-server.sh` of the installed pyspark (SPARK_HOME = the package
folder), master local[2], driver memory 2g, its pid file and logs in the given folder, and
PYSPARK_PYTHON = this interpreter, so its Python workers import this venv's packages (pairspark
included, through the editable install). It is stopped by its pid when the block ends, whatever
happened: stop-connect-server.sh with the same SPARK_PID_DIR, then SIGKILL if still alive.

Run by hand: `.venv/bin/python -m tests.connect_server` starts one and waits for Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pyspark

from pairspark.spark.publish import _pid_alive as _alive  # kill(0), a zombie counts as dead

SPARK_HOME = Path(pyspark.__file__).resolve().parent
SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
IDENT = "pairspark-test"  # SPARK_IDENT_STRING: fixes the pid and log file names


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ConnectServer:
    port: int
    pid: int
    workdir: Path
    started_seconds: float  # from launch until the port accepted a connection

    @property
    def url(self) -> str:
        return f"sc://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path | None:
        return _log_file(self.workdir)

    def log_tail(self, chars: int = 4000) -> str:
        return _log_tail(self.workdir, chars)

    def alive(self) -> bool:
        return _alive(self.pid)


def _log_file(workdir: Path) -> Path | None:
    logs = sorted((workdir / "logs").glob(f"spark-{IDENT}-{SERVER_CLASS}-1-*.out"))
    return logs[0] if logs else None


def _log_text(workdir: Path) -> str:
    log = _log_file(workdir)
    return log.read_text(errors="replace") if log else ""


def _log_tail(workdir: Path, chars: int = 4000) -> str:
    log = _log_file(workdir)
    if log is None:
        return f"(no server log in {workdir / 'logs'})"
    return f"--- tail of {log} ---\n" + log.read_text(errors="replace")[-chars:]


def server_env(workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           # a foreground (no pid file) or client-mode setting from the caller would break start/stop
           if k not in ("SPARK_NO_DAEMONIZE", "SPARK_REMOTE", "SPARK_CONNECT_MODE", "SPARK_LOCAL_REMOTE",
                        "SPARK_CONNECT_MODE_ENABLED", "PYSPARK_SUBMIT_ARGS", "SPARK_CONF_DIR")}
    env.update({
        "SPARK_HOME": str(SPARK_HOME),
        "SPARK_PID_DIR": str(workdir / "pid"),
        "SPARK_LOG_DIR": str(workdir / "logs"),
        "SPARK_IDENT_STRING": IDENT,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
    })
    return env


def _pid_file(workdir: Path) -> Path:
    return workdir / "pid" / f"spark-{IDENT}-{SERVER_CLASS}-1.pid"


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


READY = "Spark Connect server started at: 127.0.0.1:{port}"  # logged (INFO) once the port is bound
_BIND_ERRORS = ("BindException", "Address already in use")


@contextmanager
def connect_server(workdir: Path | str | None = None, port: int | None = None, timeout: float = 120,
                   driver_memory: str = "2g", conf: dict[str, str] | None = None) -> Iterator[ConnectServer]:
    """Start a Connect server, yield it once it listens, stop it on exit.

    workdir holds pid/, logs/ (the server's stdout+stderr log) and the server's warehouse; a fresh
    temporary folder (removed afterwards) when None. `conf` adds or overrides --conf settings.
    Ready means: the server logged that it started on the port, and the port accepts a
    connection (so a port taken by someone else in the meantime is never mistaken for ours; a
    free port chosen here that was taken before the server bound it is replaced, twice at most).
    Fails after `timeout` seconds, or as soon as the server process dies, with the log's tail.
    """
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="pairspark-connect-") as tmp:
            with connect_server(tmp, port, timeout, driver_memory, conf) as server:
                yield server
        return
    workdir = Path(workdir).resolve()
    (workdir / "pid").mkdir(parents=True, exist_ok=True)
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    env = server_env(workdir)
    pid: int | None = None
    began = time.monotonic()
    try:
        for attempt in range(3):
            chosen = port or free_port()
            pid = _launch(workdir, env, chosen, driver_memory, conf)
            if _wait_ready(workdir, pid, chosen, began + timeout, retry_on_bind_error=port is None and attempt < 2):
                break
            _stop(workdir, env, pid)  # it could not bind the port: try another
            pid = None
        yield ConnectServer(port=chosen, pid=pid, workdir=workdir, started_seconds=time.monotonic() - began)
    finally:
        _stop(workdir, env, pid)


def _launch(workdir: Path, env: dict[str, str], port: int, driver_memory: str, conf: dict[str, str] | None) -> int:
    """Run start-connect-server.sh, which daemonises the JVM (nohup), writes its pid file and
    returns within a few seconds; the JVM's pid."""
    settings = {
        "spark.connect.grpc.binding.address": "127.0.0.1",
        "spark.connect.grpc.binding.port": str(port),
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        # as the classic `spark` fixture of conftest.py
        "spark.sql.shuffle.partitions": "2",
        "spark.default.parallelism": "2",
        "spark.sql.warehouse.dir": str(workdir / "warehouse"),
        **(conf or {}),
    }
    args = [str(SPARK_HOME / "sbin" / "start-connect-server.sh"), "--master", "local[2]", "--driver-memory", driver_memory]
    for key, value in settings.items():
        args += ["--conf", f"{key}={value}"]
    pid_file = _pid_file(workdir)
    pid_file.unlink(missing_ok=True)
    launched = subprocess.run(args, env=env, cwd=workdir, capture_output=True, text=True, timeout=60)
    if launched.returncode != 0 or not pid_file.exists():
        raise RuntimeError(f"start-connect-server.sh exited {launched.returncode} (pid file written: {pid_file.exists()}):\n"
                           f"{launched.stdout}{launched.stderr}\n{_log_tail(workdir)}")
    return int(pid_file.read_text().strip())


def _wait_ready(workdir: Path, pid: int, port: int, deadline: float, retry_on_bind_error: bool) -> bool:
    """True once the server listens on port; False if it failed to bind it and a retry is allowed."""
    ready = READY.format(port=port)
    while True:
        alive = _alive(pid)  # before reading the log, so a death's last words are in it
        log = _log_text(workdir)
        if ready in log and _accepts(port):
            return True
        if retry_on_bind_error and any(e in log for e in _BIND_ERRORS):
            return False
        if not alive:
            raise RuntimeError(f"the Connect server (pid {pid}) died before listening on 127.0.0.1:{port}\n"
                               f"{_log_tail(workdir)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the Connect server (pid {pid}) did not listen on 127.0.0.1:{port} "
                               f"in time (no {ready!r} in its log, or the port refused)\n{_log_tail(workdir)}")
        time.sleep(0.25)


def _stop(workdir: Path, env: dict[str, str], pid: int | None, grace: float = 30) -> None:
    if pid is None and _pid_file(workdir).exists():
        pid = int(_pid_file(workdir).read_text().strip())
    try:
        subprocess.run([str(SPARK_HOME / "sbin" / "stop-connect-server.sh")], env=env, cwd=workdir,
                       capture_output=True, timeout=30)
    except subprocess.TimeoutExpired:
        pass
    if pid is None:
        return
    deadline = time.monotonic() + grace  # SIGTERM from the script: the JVM's shutdown hooks run
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


if __name__ == "__main__":
    with connect_server() as server:
        print(f"Spark Connect server at {server.url} (pid {server.pid}, up in {server.started_seconds:.1f} s, "
              f"log {server.log_path}); Ctrl-C stops it", flush=True)
        try:
            while server.alive():
                time.sleep(1)
        except KeyboardInterrupt:
            pass
