"""Atomic publishing of output directories through Hadoop's FileSystem API (any Spark path).

Spark's own overwrite deletes the old output before writing the new one, so a failed run
leaves nothing. Here each output is written to a hidden staging directory beside its final
place and swapped in only when complete:

    OUT/NAME.staging-<id>  --write-->  complete  --rename OUT/NAME to OUT/NAME.old-<id>-->
    --rename staging to OUT/NAME-->  delete the old copy

The temporary names have no leading '.' or '_': Spark treats such paths as hidden.
A run killed at any point leaves OUT/NAME either as it was or complete. If it is killed between
the two renames, the next publish (or read) finds no OUT/NAME and restores the newest old copy.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator

from pyspark.sql import SparkSession

from pairspark.errors import UsageError


class FileSystem:
    def __init__(self, spark: SparkSession):
        self._spark = spark
        self._jvm = spark._jvm  # type: ignore[attr-defined]
        self._conf = spark._jsc.hadoopConfiguration()  # type: ignore[attr-defined]

    def _path(self, path: str):
        jpath = self._jvm.org.apache.hadoop.fs.Path(path)
        return jpath.getFileSystem(self._conf), jpath

    def exists(self, path: str) -> bool:
        fs, p = self._path(path)
        return bool(fs.exists(p))

    def delete(self, path: str) -> None:
        fs, p = self._path(path)
        if fs.exists(p):
            fs.delete(p, True)

    def rename(self, src: str, dst: str) -> None:
        fs, s = self._path(src)
        _, d = self._path(dst)
        if not fs.rename(s, d):
            raise OSError(f"could not rename {src} to {dst}")

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

    def write_text(self, path: str, text: str) -> None:
        fs, p = self._path(path)
        stream = fs.create(p, True)
        try:
            stream.write(bytearray(text.encode("utf-8")))
        finally:
            stream.close()

    def read_text(self, path: str) -> str:
        fs, p = self._path(path)
        if not fs.exists(p):
            raise UsageError(f"{path} does not exist")
        stream = fs.open(p)
        reader = self._jvm.java.io.BufferedReader(self._jvm.java.io.InputStreamReader(stream, "UTF-8"))
        try:
            lines = []
            while (line := reader.readLine()) is not None:
                lines.append(line)
            return "\n".join(lines)
        finally:
            reader.close()

    def copy_from_local(self, local: str, path: str) -> None:
        """Upload a driver-local file (large model parts: no trip through the JVM heap)."""
        fs, p = self._path(path)
        fs.copyFromLocalFile(False, True, self._jvm.org.apache.hadoop.fs.Path(f"file://{local}"), p)

    def copy_to_local(self, path: str, local: str) -> None:
        fs, p = self._path(path)
        fs.copyToLocalFile(False, p, self._jvm.org.apache.hadoop.fs.Path(f"file://{local}"), True)

    def write_json(self, path: str, data: dict) -> None:
        self.write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")

    def read_json(self, path: str) -> dict:
        return json.loads(self.read_text(path))


def _split(path: str) -> tuple[str, str]:
    path = path.rstrip("/")
    parent, _, name = path.rpartition("/")
    return (parent or "."), name


def recover(fs: FileSystem, final: str) -> None:
    """Restore final from the newest old copy if a run died between the two renames."""
    parent, name = _split(final)
    if fs.exists(final):
        return
    olds = [n for n in fs.list_names(parent) if n.startswith(f"{name}.old-")]
    if olds:
        fs.rename(f"{parent}/{olds[-1]}", final)


SUCCESS = "_SUCCESS"


@contextlib.contextmanager
def atomic_output(spark: SparkSession, final: str, marker: dict | None = None) -> Iterator[str]:
    """Yield a staging path to write into; publish it as `final` only if the block succeeds.

    `marker` (filled in by the block, e.g. with row counts) is written as JSON to STAGING/_SUCCESS
    last, so it appears in `final` in the same rename as the data it describes.
    """
    fs = FileSystem(spark)
    parent, name = _split(final)
    fs.mkdirs(parent)
    recover(fs, final)
    # Leftovers of killed runs (single writer per output is assumed, as for any Spark output).
    for leftover in fs.list_names(parent):
        if leftover.startswith(f"{name}.staging-") or leftover.startswith(f"{name}.old-"):
            fs.delete(f"{parent}/{leftover}")
    token = uuid.uuid4().hex[:12]
    staging = f"{parent}/{name}.staging-{token}"
    try:
        yield staging
        fs.write_json(f"{staging}/{SUCCESS}", {"published_by": "pairspark", **(marker or {})})
    except BaseException:
        fs.delete(staging)
        raise
    old = f"{parent}/{name}.old-{token}"
    had_old = fs.exists(final)
    if had_old:
        fs.rename(final, old)
    fs.rename(staging, final)
    if had_old:
        fs.delete(old)
