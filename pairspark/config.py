"""One typed settings object, from conf/default.toml-style TOML plus command-line overrides."""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from pairspark.core.masks import MaskSettings
from pairspark.errors import UsageError


@dataclass(frozen=True)
class View:
    """A view: its name (also the classes table's column) and the items' embedding column."""

    name: str
    column: str


def parse_views(spec: str) -> list[View]:
    """'image=image_embedding,text=text_embedding' (or bare 'col', meaning col=col)."""
    views = []
    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        name, _, column = part.partition("=")
        name, column = name.strip(), (column.strip() or name.strip())
        if not name.isidentifier():
            raise UsageError(f"view name {name!r} must be a plain identifier (letters, digits, _)")
        views.append(View(name, column))
    if not 1 <= len(views) <= 2:
        raise UsageError(f"--views needs one or two NAME=COL entries, got {spec!r}")
    if len({v.name for v in views}) != len(views):
        raise UsageError(f"--views names must differ, got {spec!r}")
    return views


def parse_binary(spec: str | None) -> dict[str, list[str]]:
    """'clothing=shirt,jean;footwear=shoe,sandal' -> {'clothing': ['shirt', 'jean'], ...}."""
    groups: dict[str, list[str]] = {}
    for part in [p.strip() for p in (spec or "").split(";") if p.strip()]:
        name, _, classes = part.partition("=")
        members = [c.strip() for c in classes.split(",") if c.strip()]
        if not name.strip() or not members:
            raise UsageError(f"binary groups look like NAME=class1,class2[;NAME2=...], got {spec!r}")
        if name.strip() in groups:
            raise UsageError(f"binary group {name.strip()!r} given twice")
        groups[name.strip()] = members
    return groups


def format_views(views: list[View]) -> str:
    return ",".join(f"{v.name}={v.column}" for v in views)


@dataclass(frozen=True)
class MarginRule:
    """min_margin: an absolute cosine margin, or a quantile of the view's margins ('30%')."""

    value: float
    is_quantile: bool = False

    @classmethod
    def parse(cls, raw: Any) -> MarginRule:
        if isinstance(raw, MarginRule):
            return raw
        text = str(raw).strip()
        try:
            if text.endswith("%"):
                q = float(text[:-1]) / 100.0
                if not 0.0 <= q < 1.0:
                    raise ValueError
                return cls(q, True)
            return cls(float(text), False)
        except ValueError:
            raise UsageError(f"min_margin must be a number or a percentage in [0%, 100%), got {raw!r}") from None

    def __str__(self) -> str:
        return f"{self.value * 100:g}%" if self.is_quantile else f"{self.value:g}"


@dataclass(frozen=True)
class Settings:
    ratio_threshold: float = 1.2
    min_dims: int = 8
    max_dims: int | None = None
    min_class_count: int = 2
    min_cosine: float = -1.0
    min_margin: MarginRule = MarginRule(0.3, True)
    seed: int = 0
    partitions: int | None = None
    master: str = "local[*]"
    arrow_batch_size: int = 10000
    methods: tuple[str, ...] = ()  # () = "auto": core.model.default_methods, or the model's
    on_invalid: str = "quarantine"
    output_files: int = 4
    candidates: int = 0
    binary: str | None = None  # "GROUP=class,class[;GROUP2=...]": also score "in the group vs not"

    @property
    def confident_share(self) -> float:
        """The share of least confident items set aside: min_margin's quantile, or 30% when
        min_margin is absolute (cotrain's discriminant scores have no absolute scale)."""
        return self.min_margin.value if self.min_margin.is_quantile else 0.3

    def mask_settings(self) -> MaskSettings:
        return MaskSettings(self.ratio_threshold, self.min_dims, self.max_dims, self.min_class_count)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["min_margin"] = str(self.min_margin)
        out["methods"] = ",".join(self.methods) or "auto"
        return out


def _coerce(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name == "min_margin":
        return MarginRule.parse(value)
    if name == "methods":
        if value == "auto":
            return ()
        items = value.split(",") if isinstance(value, str) else list(value)
        methods = tuple(m.strip() for m in items if m.strip())
        from pairspark.core.model import METHODS

        unknown = [m for m in methods if m not in METHODS]
        if unknown or not methods:
            raise UsageError(f"methods must be auto or a subset of {','.join(METHODS)}, got {value!r}")
        return methods
    if name == "binary":
        parse_binary(value)
        return str(value)
    if name == "on_invalid":
        if value not in ("quarantine", "error"):
            raise UsageError(f"on_invalid must be quarantine or error, got {value!r}")
        return value
    if name in {"ratio_threshold", "min_cosine"}:
        return float(value)
    if name in {"min_dims", "max_dims", "min_class_count", "seed", "partitions", "arrow_batch_size", "output_files", "candidates"}:
        if isinstance(value, bool) or int(value) != value:
            raise UsageError(f"{name} must be an integer, got {value!r}")
        return int(value)
    return value


def load_settings(config_path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Dataclass defaults, then the TOML file (table [pairspark] or top level), then overrides."""
    known = {f.name for f in fields(Settings)}
    values: dict[str, Any] = {}
    if config_path is not None:
        try:
            with open(config_path, "rb") as fh:
                data = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise UsageError(f"cannot read config {config_path}: {exc}") from None
        data = data.get("pairspark", data)
        unknown = sorted(set(data) - known)
        if unknown:
            raise UsageError(f"unknown setting(s) in {config_path}: {', '.join(unknown)}")
        values.update(data)
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = value
    settings = replace(Settings(), **{k: _coerce(k, v) for k, v in values.items()})
    if settings.min_dims < 1:
        raise UsageError("min_dims must be >= 1")
    if settings.output_files < 1 or settings.arrow_batch_size < 1 or (settings.partitions is not None and settings.partitions < 1):
        raise UsageError("output_files, arrow_batch_size and partitions must be >= 1")
    if settings.candidates < 0 or settings.candidates == 1:
        raise UsageError("candidates must be 0 (every class) or >= 2")
    if settings.max_dims is not None and settings.max_dims < settings.min_dims:
        raise UsageError("max_dims must be >= min_dims")
    return settings
