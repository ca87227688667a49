"""A view: one embedding of the items (image, text...), named as in the classes table."""

from __future__ import annotations

from dataclasses import dataclass

from pairspark.errors import UsageError


@dataclass(frozen=True)
class View:
    """A view: its name (also the classes table's column) and the items' embedding column."""

    name: str
    column: str


def parse_views(spec: str) -> list[View]:
    """'image=image_embedding,text=text_embedding' (or bare 'col', meaning col=col)."""
    views = []
    for part in [p.strip() for p in str(spec).split(",") if p.strip()]:
        name, _, column = part.partition("=")
        name, column = name.strip(), (column.strip() or name.strip())
        if not name.isidentifier():
            raise UsageError(f"view name {name!r} must be a plain identifier (letters, digits, _)")
        views.append(View(name, column))
    if not 1 <= len(views) <= 2:
        raise UsageError(f"views needs one or two NAME=COL entries, got {spec!r}")
    if len({v.name for v in views}) != len(views):
        raise UsageError(f"view names must differ, got {spec!r}")
    return views


def format_views(views: list[View]) -> str:
    return ",".join(f"{v.name}={v.column}" for v in views)
