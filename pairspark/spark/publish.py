"""Publishing output directories atomically, and the lock that makes it safe, on any Hadoop path
(the file operations are `spark/fs.py`'s).

Why one module: the publish protocol below is correct only with one writer per output. Its
clean-up deletes the staging and old copies it finds beside an output, and `recover` renames an
old copy back into place; with two writers at once, one would delete the other's staging
directory or restore a copy the other just retired. The lock on an output is what makes that
clean-up safe, so the names of the temporary copies, their clean-up and the lock are one protocol
and change together.

Publishing. Spark's own overwrite deletes the old output before writing the new one, so a failed
run leaves nothing. Here an output is written to a staging directory beside its final place and
swapped in only when complete:

    FINAL.staging-<token>  --write-->  complete  --rename FINAL to FINAL.old-<token>-->
    --rename staging to FINAL-->  delete the old copy

`atomic_output` yields the staging path; whatever the block writes there (one Parquet output, or,
for `pairspark run`, the whole run: model, predictions, quarantine, changes, report) is published
as one unit. A token is the UTC time in ns plus a random suffix, so names sort by time. The
temporary names have no leading '.' or '_': Spark treats such paths as hidden. A run killed at any
point leaves FINAL as it was or complete; killed between the two renames, it leaves no FINAL, and
the next publish restores the newest old copy (`recover`). A metastore table cannot be swapped by
a rename: `spark/tables.py` publishes one as a view over versions.

Locking. `output_lock(spark_or_fs, FINAL)` holds the file FINAL.lock, beside FINAL (not inside: the
lock must outlive the swap). Taking it is one atomic create-if-absent (`FileSystem.create_new`):
`create(path, overwrite=False)` on HDFS (the NameNode checks and creates in one step) and
O_CREAT|O_EXCL for a local (file:) path, since Hadoop's local filesystem checks for the file and
then creates it.
Caveat: on object stores (s3a, abfs, gs) create-if-absent is not atomic either (the object appears
only when the stream closes; Hadoop's filesystem specification warns against create() as a lock
there), so two runs started at the same moment could both proceed; keep one scheduler per output.
The file records host, pid, user and since (UTC); the holder touches it every HEARTBEAT_SECONDS
from a daemon thread. A lock is stale when its holder ran on this host and its process is gone,
or when its heartbeat is older than LOCK_TIMEOUT_SECONDS; a stale lock is taken over with a
warning, by first moving it aside (of two runs taking over the same stale lock, one wins).
"""

from __future__ import annotations

import contextlib
import getpass
import html
import json
import logging
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone

from py4j.protocol import Py4JJavaError
from pyspark.sql import SparkSession

from pairspark.errors import UsageError
from pairspark.spark.fs import FileSystem

log = logging.getLogger("pairspark")

SUCCESS = "_SUCCESS"
LOCK_SUFFIX = ".lock"
HEARTBEAT_SECONDS = 30.0  # how often the holder touches its lock file
LOCK_TIMEOUT_SECONDS = 600.0  # a lock with no heartbeat for this long is stale (its holder is gone or hung)


def _split(path: str) -> tuple[str, str]:
    path = path.rstrip("/")
    parent, _, name = path.rpartition("/")
    return (parent or "."), name


# ---------------------------------------------------------------------------------------------
# publishing

_TOKEN = re.compile(r"^(\d{8}T\d{6})(\d{9})Z-[0-9a-f]+$")


def new_token() -> str:
    """UTC time to the ns plus a random suffix: tokens sort by time as plain strings."""
    ns = time.time_ns()
    stamp = datetime.fromtimestamp(ns // 1_000_000_000, timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"{stamp}{ns % 1_000_000_000:09d}Z-{secrets.token_hex(3)}"


def _token_ns(token: str) -> int | None:
    match = _TOKEN.match(token)
    if not match:
        return None
    seconds = datetime.strptime(match.group(1), "%Y%m%dT%H%M%S").replace(tzinfo=timezone.utc).timestamp()
    return int(seconds) * 1_000_000_000 + int(match.group(2))


def _newest(fs: FileSystem, parent: str, names: list[str], prefix: str) -> str:
    """The newest of `names` by the time in their token; names from before time-ordered tokens
    (random ones) by their modification time."""
    def when(name: str) -> int:
        ns = _token_ns(name[len(prefix):])
        return ns if ns is not None else (fs.modified_ms(f"{parent}/{name}") or 0) * 1_000_000
    return max(names, key=when)


def recover(fs: FileSystem, final: str) -> None:
    """Restore `final` from the newest old copy if a publish died between its two renames."""
    if fs.exists(final):
        return
    parent, name = _split(final)
    prefix = f"{name}.old-"
    olds = [n for n in fs.list_names(parent) if n.startswith(prefix)]
    if olds:
        newest = _newest(fs, parent, olds, prefix)
        log.warning("restoring %s from %s (a publish was killed between its two renames)", final, newest)
        fs.rename(f"{parent}/{newest}", final)


def _swap(fs: FileSystem, staging: str, final: str) -> None:
    parent, name = _split(final)
    old = f"{parent}/{name}.old-{new_token()}"  # named when retired: the newest old copy is the last good one
    had_old = fs.exists(final)
    if had_old:
        fs.rename(final, old)
    fs.rename(staging, final)
    if had_old:
        fs.delete(old)


@contextlib.contextmanager
def atomic_output(spark_or_fs: SparkSession | FileSystem, final: str, marker: dict | None = None) -> Iterator[str]:
    """Yield a staging path to write into; publish it as `final` only if the block succeeds.

    `marker` (filled in by the block, e.g. with row counts) is written as JSON to STAGING/_SUCCESS
    last, so it appears in `final` in the same rename as the data it describes. One writer per
    `final` at a time (`output_lock`): the leftovers of killed runs found beside it are deleted.
    """
    fs = FileSystem.of(spark_or_fs)
    final = final.rstrip("/")
    parent, name = _split(final)
    fs.mkdirs(parent)
    recover(fs, final)
    for leftover in fs.list_names(parent):
        if leftover.startswith(f"{name}.staging-") or leftover.startswith(f"{name}.old-"):
            fs.delete(f"{parent}/{leftover}")
    staging = f"{parent}/{name}.staging-{new_token()}"
    try:
        yield staging
        fs.write_json(f"{staging}/{SUCCESS}", {"published_by": "pairspark", **(marker or {})})
    except BaseException:
        with contextlib.suppress(Exception):  # never hide why the block failed (e.g. the JVM died):
            fs.delete(staging)                # a staging folder left behind goes with the next run
        raise
    _swap(fs, staging, final)


# ---------------------------------------------------------------------------------------------
# locking

def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry (containers)
        return str(os.getuid())


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state first), None where there is none."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _process_start(pid: int) -> str | None:
    stat = _proc_stat(pid)
    return stat[19] if stat and len(stat) > 19 else None  # field 22, starttime (clock ticks since boot)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = _proc_stat(pid)
    return not (stat and stat[0] in ("Z", "X"))  # a zombie is dead


def _holder_text(holder: dict) -> str:
    return (f"user {holder.get('user', '?')} on host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, "
            f"since {holder.get('since', '?')}")


class OutputLock:
    """FINAL.lock held by this process (see the module docstring); use `output_lock`."""

    def __init__(self, fs: FileSystem, target: str, heartbeat_seconds: float = HEARTBEAT_SECONDS,
                 timeout_seconds: float = LOCK_TIMEOUT_SECONDS):
        self.fs = fs
        self.target = target.rstrip("/")
        self.path = self.target + LOCK_SUFFIX
        self.heartbeat_seconds = heartbeat_seconds
        self.timeout_seconds = timeout_seconds
        self.token = new_token()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self, path: str) -> dict | None:
        """The lock file's record plus its modification time; {} and the time when it is being
        written or unreadable; None when there is no file."""
        modified = self.fs.modified_ms(path)
        if modified is None:
            return None
        try:
            record = json.loads(self.fs.read_text(path))
            record = record if isinstance(record, dict) else {}
        except (UsageError, ValueError):
            if not self.fs.exists(path):
                return None
            record = {}
        except Py4JJavaError:
            if not self.fs.exists(path):
                return None
            raise
        return {**record, "_modified_ms": modified}

    def _stale(self, holder: dict) -> str | None:
        """Why the holder's lock is stale, or None if it may still be working."""
        pid = holder.get("pid")
        if holder.get("host") == socket.gethostname() and isinstance(pid, int):
            if not _pid_alive(pid):
                return f"its process {pid} on this host is gone"
            started = _process_start(pid)
            if holder.get("pid_start") and started and started != holder["pid_start"]:
                return f"its process {pid} on this host is gone (the pid is another process's now)"
        age = time.time() - holder["_modified_ms"] / 1000
        if age > self.timeout_seconds:
            return f"no heartbeat for {age:.0f} s (timeout {self.timeout_seconds:.0f} s)"
        return None

    def acquire(self) -> OutputLock:
        parent, _ = _split(self.target)
        self.fs.mkdirs(parent)
        me = {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": _process_start(os.getpid()),
              "user": _user(), "since": _utc(time.time()), "token": self.token, "output": self.fs.qualify(self.target)}
        for _ in range(5):
            if self.fs.create_new(self.path, json.dumps(me, indent=1, sort_keys=True) + "\n"):
                self._thread = threading.Thread(target=self._beat, name="pairspark-lock-heartbeat", daemon=True)
                self._thread.start()
                return self
            holder = self._read(self.path)
            if holder is None:
                continue  # released in the meantime
            why = self._stale(holder)
            if why is None:
                age = time.time() - holder["_modified_ms"] / 1000
                who = _holder_text(holder) if "token" in holder else "a run whose lock file is being written or unreadable"
                raise UsageError(f"{self.target} is locked by another pairspark run ({who}; last heartbeat {age:.0f} s ago); "
                                 f"it is taken over once stale, or delete {self.path} if that run is gone")
            log.warning("taking over the stale lock %s (%s): %s", self.path, _holder_text(holder), why)
            self._move_aside(holder)
        raise UsageError(f"could not take the lock {self.path}: other runs keep taking it")

    def _move_aside(self, holder: dict) -> None:
        """Remove the stale lock `holder`, and only it (another run may take over at the same time)."""
        aside = f"{self.path}.stale-{new_token()}"
        if not self.fs.try_rename(self.path, aside):
            return  # gone already: another run took it over, or its holder released it
        moved = self._read(aside) or {}
        if moved.get("token") != holder.get("token") and not self.fs.move_back_if_absent(aside, self.path):
            log.warning("the lock %s changed hands while being taken over; %s lost it", self.path, _holder_text(moved))
        self.fs.delete(aside)

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_seconds):
            try:
                holder = self._read(self.path)
                if not holder or holder.get("token") != self.token:
                    log.error("the lock %s is no longer this run's (%s): it will not publish %s", self.path,
                              _holder_text(holder) if holder else "the file is gone", self.target)
                    return
                self.fs.touch(self.path)
            except Exception as exc:  # a failed heartbeat is retried; a lock left 10 min untouched is taken over
                if self._stop.is_set():
                    return
                log.warning("could not refresh the lock %s: %s", self.path, str(exc).splitlines()[0] if str(exc) else exc)

    def check(self) -> None:
        """Raise unless this process still holds the lock: call it right before publishing."""
        holder = self._read(self.path)
        if not holder or holder.get("token") != self.token:
            now = _holder_text(holder) if holder else "the lock file is gone"
            raise UsageError(f"this run lost the lock {self.path} ({now}); {self.target} was left as it was")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        holder = self._read(self.path)
        if holder and holder.get("token") == self.token:
            self.fs.delete(self.path)


@contextlib.contextmanager
def output_lock(spark_or_fs: SparkSession | FileSystem, path: str, heartbeat_seconds: float = HEARTBEAT_SECONDS,
                timeout_seconds: float = LOCK_TIMEOUT_SECONDS) -> Iterator[OutputLock]:
    """Hold PATH.lock while writing PATH: a second writer gets a UsageError naming the holder.
    Released on the way out, exception or not."""
    lock = OutputLock(FileSystem.of(spark_or_fs), path, heartbeat_seconds, timeout_seconds).acquire()
    try:
        yield lock
    finally:
        try:
            lock.release()
        except Exception as exc:  # never hide the block's own error; a lock left behind goes stale
            log.warning("could not release the lock %s: %s", lock.path, exc)


def repoint(text, staging: str, final: str):
    """`text` with the paths under `staging` (as written in text, JSON or HTML) naming `final`
    instead; a dict or list (JSON data) is repointed through its JSON text."""
    if not isinstance(text, str):
        return json.loads(repoint(json.dumps(text), staging, final))
    (_, old), (_, new) = _split(staging), _split(final)
    for a, b in {(old, new), (json.dumps(old)[1:-1], json.dumps(new)[1:-1]), (html.escape(old), html.escape(new))}:
        text = text.replace(a, b)
    return text
