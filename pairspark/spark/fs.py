"""Files and folders on any Hadoop path (file:, hdfs:, s3a:, ...) from the driver, through the
JVM's Hadoop FileSystem API.

Why a room of its own: publishing, the lock, the reuse fingerprint (which files an input is, their
lengths and times), tracking (an artifact on a cluster path copied to the driver), the stages'
small JSON files and the bench all need the same few file operations on whatever file system a
path names. Python's own file functions see the driver's disk only, and a DataFrame cannot
rename, list or lock. This module is that facade and nothing else: what a publish or a lock does
with these operations is `spark/publish.py`'s.

It needs the JVM gateway (`spark._jvm`), so a classic session: the CLI, which always builds one,
uses it; `ml.py` and everything below it do not (they run on Spark Connect too).
"""

from __future__ import annotations

import json
import os
import time

from py4j.protocol import Py4JJavaError
from pyspark.sql import SparkSession

from pairspark.errors import UsageError


class FileSystem:
    def __init__(self, spark: SparkSession):
        self._spark = spark
        self._jvm = spark._jvm  # type: ignore[attr-defined]
        self._conf = spark._jsc.hadoopConfiguration()  # type: ignore[attr-defined]

    @classmethod
    def of(cls, spark_or_fs: SparkSession | FileSystem) -> FileSystem:
        return spark_or_fs if isinstance(spark_or_fs, FileSystem) else cls(spark_or_fs)

    def _path(self, path: str):
        jpath = self._jvm.org.apache.hadoop.fs.Path(path)
        return jpath.getFileSystem(self._conf), jpath

    def exists(self, path: str) -> bool:
        fs, p = self._path(path)
        return bool(fs.exists(p))

    def is_dir(self, path: str) -> bool:
        fs, p = self._path(path)
        return bool(fs.exists(p) and fs.getFileStatus(p).isDirectory())

    def delete(self, path: str) -> None:
        fs, p = self._path(path)
        if fs.exists(p):
            fs.delete(p, True)

    def rename(self, src: str, dst: str) -> None:
        if not self.try_rename(src, dst):
            raise OSError(f"could not rename {src} to {dst}")

    def try_rename(self, src: str, dst: str) -> bool:
        fs, s = self._path(src)
        _, d = self._path(dst)
        try:
            return bool(fs.rename(s, d))
        except Py4JJavaError:
            if not fs.exists(s):
                return False
            raise

    def mkdirs(self, path: str) -> None:
        fs, p = self._path(path)
        fs.mkdirs(p)

    def list_names(self, path: str) -> list[str]:
        fs, p = self._path(path)
        if not fs.exists(p):
            return []
        return sorted(str(s.getPath().getName()) for s in fs.listStatus(p))

    def qualify(self, path: str) -> str:
        fs, p = self._path(path)
        return str(fs.makeQualified(p).toString())

    def local_path(self, path: str) -> str | None:
        """The driver's OS path of a file: path, None on any other filesystem."""
        fs, p = self._path(path)
        uri = fs.makeQualified(p).toUri()
        return str(uri.getPath()) if uri.getScheme() == "file" else None

    def modified_ms(self, path: str) -> int | None:
        fs, p = self._path(path)
        try:
            return int(fs.getFileStatus(p).getModificationTime())
        except Py4JJavaError:
            if fs.exists(p):
                raise
            return None

    def file_facts(self, uris: list[str]) -> list[tuple[str, int, int]]:
        """(path, length, modification time in ms) of each file, sorted: what says whether an input
        was rewritten. `uris`: URL-encoded, as DataFrame.inputFiles() gives them (Spark 3.4+).
        One listing per directory, not one call per file (a call is a request on object stores)."""
        by_parent: dict[str, set[str]] = {}
        for uri in uris:
            path = self._jvm.org.apache.hadoop.fs.Path(self._jvm.java.net.URI(uri))
            by_parent.setdefault(str(path.getParent().toString()), set()).add(str(path.getName()))
        out = []
        for parent, names in by_parent.items():
            fs, p = self._path(parent)
            for status in fs.listStatus(p):
                if status.isFile() and str(status.getPath().getName()) in names:
                    out.append((str(status.getPath().toString()), int(status.getLen()), int(status.getModificationTime())))
        if len(out) != len(uris):
            raise OSError(f"{len(uris) - len(out)} of the {len(uris)} input files could not be listed")
        return sorted(out)

    def touch(self, path: str) -> None:
        """Set the modification time to now (a heartbeat; the content is left alone)."""
        fs, p = self._path(path)
        fs.setTimes(p, int(time.time() * 1000), -1)

    def create_new(self, path: str, text: str) -> bool:
        """Create a file holding `text` if none exists, in one atomic create-if-absent; False if
        it exists (what the output lock is taken with). O_CREAT|O_EXCL for a local (file:) path,
        since Hadoop's local filesystem checks for the file and then creates it; `create(path,
        overwrite=False)` elsewhere, atomic on HDFS but not on object stores (see
        `spark/publish.py`)."""
        data = text.encode("utf-8")
        local = self.local_path(path)
        if local is not None:
            try:
                fd = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            return True
        fs, p = self._path(path)
        try:
            stream = fs.create(p, False)
        except Py4JJavaError:
            if fs.exists(p):
                return False
            raise
        try:
            stream.write(bytearray(data))
        finally:
            stream.close()
        return True

    def move_back_if_absent(self, src: str, dst: str) -> bool:
        """Rename the file src to dst unless dst exists (HDFS rename never replaces a file; a
        local rename would, so a hard link is made instead)."""
        local_src, local_dst = self.local_path(src), self.local_path(dst)
        if local_src is not None and local_dst is not None:
            try:
                os.link(local_src, local_dst)
            except FileExistsError:
                return False
            os.unlink(local_src)
            return True
        return self.try_rename(src, dst)

    def write_text(self, path: str, text: str) -> None:
        self.write_bytes(path, text.encode("utf-8"))

    def write_bytes(self, path: str, data: bytes) -> None:
        fs, p = self._path(path)
        stream = fs.create(p, True)
        try:
            stream.write(bytearray(data))
        finally:
            stream.close()

    def read_text(self, path: str) -> str:
        fs, p = self._path(path)
        if not fs.exists(p):
            raise UsageError(f"{path} does not exist")
        stream = fs.open(p)
        try:
            return bytes(stream.readAllBytes()).decode("utf-8")
        finally:
            stream.close()

    def copy_to_local(self, path: str, local: str) -> None:
        fs, p = self._path(path)
        fs.copyToLocalFile(False, p, self._jvm.org.apache.hadoop.fs.Path(f"file://{local}"), True)

    def write_json(self, path: str, data: dict) -> None:
        self.write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")

    def read_json(self, path: str) -> dict:
        return json.loads(self.read_text(path))

