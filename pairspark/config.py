"""The CLI's settings: the estimator's Params (params.py) plus the options only a CLI run has.

Data flows one way: TOML file, then flags -> `Settings` -> the estimator's Params (pipeline/
sets them) and the run's own options. The modelling settings are declared once, as Params;
the run options are declared once, here, with their help text and the commands that take them.
"""

from __future__ import annotations

import math
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from pairspark.errors import UsageError
from pairspark.params import SETTING_PARAMS, HasPairsparkParams, snake
from pairspark.views import View, format_views, parse_views  # noqa: F401  (re-exported)

ALL = ("fit", "classify", "evaluate", "audit", "review", "diff", "run", "embed", "embed-classes")


def _option(default: Any, help: str, commands: tuple[str, ...] = ALL, kind: type = str, choices: tuple[str, ...] = ()):
    return field(default=default, metadata={"help": help, "commands": commands, "kind": kind, "choices": choices})


@dataclass(frozen=True)
class RunOptions:
    """What a CLI run decides beyond the model: where Spark runs and how outputs are written."""

    master: str = _option("local[*]", "Spark master when not under spark-submit")
    partitions: int | None = _option(None, "repartition the items into N partitions first",
                                     ("fit", "classify", "run", "embed"), int)
    arrow_batch_size: int = _option(10000, "rows per Arrow batch handed to the kernels (a setting of the "
                                    "session the CLI builds)", ("fit", "classify", "run"), int)
    on_invalid: str = _option("quarantine", "bad item rows: set aside with a reason, or stop the run (exit 3)",
                              ("fit", "classify", "run"), str, ("quarantine", "error"))
    output_files: int = _option(4, "prediction files; rows hashed by item_id and sorted within each file",
                                ("classify", "run"), int)
    items_format: str | None = _option(None, "format of --items when it is a path: parquet, or any format spark.read "
                                       "knows (orc, json, csv...); --items may also be table:NAME",
                                       ("fit", "classify", "run", "audit", "review", "embed"))
    labels: str | None = _option(None, "verified labels: Parquet or CSV (.csv) with item_id and label (a class_id); "
                                 "fixed training items of every learning method, a verified_label column in the "
                                 "predictions, and left out of the metrics (the estimator's labelsPath)",
                                 ("fit", "classify", "run"))
    warm_start: str = _option("auto", "reuse a fitted model when nothing the fit depends on changed (the items' and "
                              "classes' files, labels, fit settings, partitioning, versions): auto (the model "
                              "already at OUT, last night's), a MODEL_DIR, or off (always fit)", ("fit", "run"))
    items_reader: str = _option("auto", "how fit and classify read the items: arrow (pyarrow in the Python workers, "
                                "faster: a Parquet path of file: URIs, string or integer ids, array vectors; "
                                "docs/PERFORMANCE.md), spark (Spark's reader: any source), auto (arrow where it can)",
                                ("fit", "classify", "run"), str, ("auto", "spark", "arrow"))
    classes_format: str | None = _option(None, "format of --classes when it is a path (as --items-format); "
                                         "--classes may also be table:NAME", ("fit", "run"))
    predictions_table: str | None = _option(None, "also publish the predictions as this metastore table "
                                            "(readers see the last run's rows or this one's, never a mix)",
                                            ("classify", "run"))
    experiment: str | None = _option(None, "log to this MLflow experiment (tracking is also on when "
                                     "MLFLOW_TRACKING_URI is set; needs pairspark[mlflow])", ("fit", "evaluate", "run"))
    binary: str | None = _option(None, "also score GROUP=class1,class2[;GROUP2=...] against the rest, or "
                                 "@FILE with one GROUP=class per line", ("evaluate", "run"))
    review_below: float = _option(0.9, "the review queue (OUT/review) takes every item whose first view's "
                                  "confidence is below this, besides the items whose views disagree or whose "
                                  "label contradicts them", ("review", "run"), float)

    def __post_init__(self) -> None:
        for f in fields(self):
            try:
                _check_option(f.name, getattr(self, f.name))
            except ValueError as exc:
                raise UsageError(f"{f.name}: {exc}") from None


def _check_option(name: str, value: Any) -> None:
    """Raise ValueError (the message without the option's name) when a run option's value is not allowed."""
    if name in ("partitions", "arrow_batch_size", "output_files"):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"must be an integer >= 1, got {value!r}")
    elif name in ("on_invalid", "items_reader"):
        allowed = RUN_OPTIONS[name].metadata["choices"]
        if value not in allowed:
            raise ValueError(f"must be {', '.join(allowed[:-1])} or {allowed[-1]}, got {value!r}")
    elif name == "warm_start":
        if not isinstance(value, str) or value.strip().lower() in ("", "true", "false", "yes", "no", "on", "none"):
            raise ValueError(f"must be auto, off or a MODEL_DIR, got {value!r}")
    elif name == "binary":
        if value is not None:
            try:
                parse_binary(value)
            except UsageError as exc:
                raise ValueError(str(exc)) from None
    elif name == "review_below":
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"must be a probability in [0, 1], got {value!r}")


RUN_OPTIONS = {f.name: f for f in fields(RunOptions)}


@dataclass(frozen=True)
class Settings:
    """A CLI run's settings: Params (camelCase name -> validated value, only those given), run
    options, and the Spark conf of the session the CLI builds (TOML [spark] table, --conf)."""

    params: dict[str, Any] = field(default_factory=dict)
    options: RunOptions = field(default_factory=RunOptions)
    spark_conf: dict[str, str] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        # settings.seed, settings.partitions...: the option, or the Param's value or default
        options = self.__dict__.get("options")
        if options is not None and name in RUN_OPTIONS:
            return getattr(options, name)
        for param in SETTING_PARAMS:
            if snake(param) == name:
                return self.params.get(param, _defaults().getOrDefault(param))
        raise AttributeError(name)

    def to_json(self) -> dict[str, Any]:
        out = {snake(p): _defaults().getOrDefault(p) for p in SETTING_PARAMS}
        out.update({snake(k): v for k, v in self.params.items()})
        out.update({f.name: getattr(self.options, f.name) for f in fields(RunOptions)})
        return out


def _defaults() -> HasPairsparkParams:
    return HasPairsparkParams()


def _coerce_param(param: str, value: Any) -> Any:
    holder = HasPairsparkParams()
    try:
        holder._set(**{param: value})
    except TypeError as exc:
        raise ValueError(str(exc).split(". ", 1)[-1]) from None
    return holder.getOrDefault(param)


def _coerce_option(name: str, value: Any) -> Any:
    kind = RUN_OPTIONS[name].metadata["kind"]
    if kind is float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"must be a number, got {value!r}") from None
        if isinstance(value, bool) or not math.isfinite(number):
            raise ValueError(f"must be a finite number, got {value!r}")
        return number
    if kind is int:
        try:
            number = float(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError):
            raise ValueError(f"must be an integer, got {value!r}") from None
        if isinstance(value, bool) or not math.isfinite(number) or number != int(number):
            raise ValueError(f"must be an integer, got {value!r}")
        return int(number)
    return str(value)


def _where(key: str, source: str) -> str:
    """How an error names a setting: the flag the user typed, or the key of the file."""
    return f"--{key.replace('_', '-')}" if source == "flag" else f"{source}: {key}"


def parse_conf(pairs: list[str] | None) -> dict[str, str]:
    """--conf KEY=VALUE entries."""
    conf = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or key.strip() != key or " " in key:
            raise UsageError(f"--conf takes KEY=VALUE (a Spark setting), got {pair!r}")
        conf[key] = value
    return conf


def load_settings(config_path: str | Path | None = None, overrides: dict[str, Any] | None = None,
                  conf: list[str] | None = None) -> Settings:
    """Defaults, then the TOML file (table [pairspark] or top level; table [spark] for Spark
    settings), then overrides (snake_case names; None means not given) and `conf` (KEY=VALUE)."""
    known = {snake(p): p for p in SETTING_PARAMS}
    values: dict[str, tuple[Any, str]] = {}  # key -> (value, where it came from)
    spark_conf: dict[str, str] = {}
    if config_path is not None:
        try:
            with open(config_path, "rb") as fh:
                data = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise UsageError(f"cannot read config {config_path}: {exc}") from None
        spark_table = data.pop("spark", {})
        if not isinstance(spark_table, dict) or any(isinstance(v, dict) for v in spark_table.values()):
            raise UsageError(f"{config_path}: [spark] holds Spark settings as key = value")
        spark_conf.update({str(k): _conf_value(v) for k, v in spark_table.items()})
        data = data.get("pairspark", data)
        unknown = sorted(set(data) - set(known) - set(RUN_OPTIONS))
        if unknown:
            raise UsageError(f"unknown setting(s) in {config_path}: {', '.join(unknown)}")
        values.update({k: (v, str(config_path)) for k, v in data.items()})
    for key, value in (overrides or {}).items():
        if value is not None:
            if key not in known and key not in RUN_OPTIONS:
                raise UsageError(f"unknown setting {key!r}")
            values[key] = (value, "flag")
    params, options = {}, {}
    for key, (value, source) in values.items():
        try:
            if key in known:
                params[known[key]] = _coerce_param(known[key], value)
            else:
                options[key] = _coerce_option(key, value)
                _check_option(key, options[key])
        except ValueError as exc:
            raise UsageError(f"{_where(key, source)}: {exc}") from None
    options = replace(RunOptions(), **options)
    holder = HasPairsparkParams()
    holder._set(**params)
    holder.check_settings()
    spark_conf.update(parse_conf(conf))
    return Settings(params, options, spark_conf)


def _conf_value(value: Any) -> str:
    """TOML values as Spark conf strings (true -> "true", 4 -> "4")."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def parse_binary(spec: str | None) -> dict[str, list[str]]:
    """Groups of classes scored "in the group vs not".

    'clothing=shirt,jean;footwear=shoe,sandal', or '@FILE': one group per line, GROUP=CLASS (a
    group on several lines gathers them), so class ids may hold ',', ';' or '=' after the first '='
    ("Home Decor & Festive Needs", "T-shirts, Tops")."""
    groups: dict[str, list[str]] = {}
    spec = (spec or "").strip()
    if spec.startswith("@"):
        try:
            lines = Path(spec[1:]).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise UsageError(f"cannot read binary groups from {spec[1:]}: {exc.strerror}") from None
        for number, line in enumerate(lines, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            name, sep, member = line.partition("=")
            if not sep or not name.strip() or not member.strip():
                raise UsageError(f"{spec[1:]} line {number}: expected GROUP=CLASS, got {line!r}")
            groups.setdefault(name.strip(), []).append(member.strip())
        if not groups:
            raise UsageError(f"{spec[1:]} holds no GROUP=CLASS line")
        return groups
    for part in [p.strip() for p in spec.split(";") if p.strip()]:
        name, _, classes = part.partition("=")
        members = [c.strip() for c in classes.split(",") if c.strip()]
        if not name.strip() or not members:
            raise UsageError(f"binary groups look like NAME=class1,class2[;NAME2=...] or @FILE, got {spec!r}")
        if name.strip() in groups:
            raise UsageError(f"binary group {name.strip()!r} given twice")
        groups[name.strip()] = members
    return groups
