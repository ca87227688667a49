"""Predictions published as a metastore table (`--predictions-table NAME`), versioned so that a
reader never sees a half-written one.

Why a room of its own: a metastore table cannot be swapped by a file rename (`spark/publish.py`'s
protocol), and INSERT OVERWRITE deletes the old files before the new ones are complete. So `NAME`
is a view, and each run writes a new version table `NAME__pairspark_v<token>` in full first; then
one metastore operation (CREATE OR REPLACE VIEW) points `NAME` at it. A reader resolving `NAME`
sees last night's rows or tonight's, never a mix or nothing; a run killed before the swap leaves
the view on the old version (the orphan version is dropped by the next run). The previous version
is kept (a reader may still be scanning it); older ones are dropped. Version names take their
token from publishing (`new_token`), so they sort by time.
"""

from __future__ import annotations

from pairspark.errors import UsageError
from pairspark.spark.fs import FileSystem
from pairspark.spark.publish import new_token

TABLE_VERSION = "__pairspark_v"
_VIEW_PROPERTY = "pairspark.version"


def _split_table(name: str) -> tuple[str | None, str]:
    database, _, table = name.rpartition(".")
    return (database or None), table


def _relation_kind(spark, name: str) -> str | None:
    """'VIEW', another table type, or None when NAME does not exist."""
    database, table = _split_table(name)
    try:
        listed = spark.catalog.listTables(database) if database else spark.catalog.listTables()
    except Exception as exc:  # an unknown database
        raise UsageError(f"--predictions-table {name}: {str(exc).strip().splitlines()[0]}") from None
    for entry in listed:
        if entry.name.lower() == table.lower() and not entry.isTemporary:
            return str(entry.tableType).upper()
    return None


def _view_version(spark, name: str) -> str | None:
    rows = spark.sql(f"SHOW TBLPROPERTIES {name}").collect()
    props = {r[0]: r[1] for r in rows}
    return props.get(_VIEW_PROPERTY)


def publish_table(spark, frame, name: str) -> dict:
    """Write `frame` as a new version table and point the view `name` at it (see above)."""
    if not all(part.replace("_", "").isalnum() for part in name.split(".")) or name.count(".") > 1:
        raise UsageError(f"--predictions-table takes NAME or DATABASE.NAME (letters, digits, _), got {name!r}")
    kind = _relation_kind(spark, name)
    previous = None
    if kind is not None:
        previous = _view_version(spark, name) if kind == "VIEW" else None
        if previous is None:
            raise UsageError(f"{name} exists and was not published by pairspark ({kind.lower()}): "
                             "choose another --predictions-table or drop it")
    database, table = _split_table(name)
    version = f"{name}{TABLE_VERSION}{new_token().lower().replace('-', '_')}"
    frame.write.format("parquet").saveAsTable(version)
    spark.sql(f"CREATE OR REPLACE VIEW {name} TBLPROPERTIES ('{_VIEW_PROPERTY}' = '{version}') "
              f"AS SELECT * FROM {version}")
    keep = {version.lower(), (previous or "").lower()}
    prefix = f"{table}{TABLE_VERSION}".lower()
    listed = spark.catalog.listTables(database) if database else spark.catalog.listTables()
    dropped = []
    for entry in listed:
        qualified = f"{database}.{entry.name}" if database else entry.name
        if entry.name.lower().startswith(prefix) and qualified.lower() not in keep and not entry.isTemporary:
            spark.sql(f"DROP TABLE IF EXISTS {qualified}")
            dropped.append(qualified)
    dropped += _drop_orphan_folders(spark, database, prefix, keep | {d.lower() for d in dropped})
    return {"table": name, "version": version, "previous": previous, "dropped": dropped}


def _drop_orphan_folders(spark, database: str | None, prefix: str, registered: set[str]) -> list[str]:
    """Folders of version tables a killed run began writing (data first, metastore entry last):
    they sit in the database's location with no table to drop."""
    try:
        location = spark.catalog.getDatabase(database or spark.catalog.currentDatabase()).locationUri
    except Exception:
        return []
    fs = FileSystem(spark)
    names = {n.split(".")[-1] for n in registered}
    orphans = [n for n in fs.list_names(location) if n.lower().startswith(prefix) and n.lower() not in names]
    for orphan in orphans:
        fs.delete(f"{location.rstrip('/')}/{orphan}")
    return orphans
