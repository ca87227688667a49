"""`pairspark fit|classify|evaluate|run`: parse arguments, build the session, call pipeline.py."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from pairspark.config import Settings, load_settings, parse_views
from pairspark.core.model import METHODS
from pairspark.errors import InvalidRowsError, UsageError

EXIT_USAGE = 2
EXIT_INVALID_ROWS = 3


def _settings_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("settings (defaults: conf/default.toml; flags win over --config)")
    group.add_argument("--config", help="TOML file with a [pairspark] table of settings")
    group.add_argument("--ratio-threshold", type=float, help="keep dims with cross ratio >= this (1.2)")
    group.add_argument("--min-dims", type=int, help="at least this many dims per pair (8)")
    group.add_argument("--max-dims", type=int, help="at most this many dims per pair (no cap)")
    group.add_argument("--min-class-count", type=int, help="classes with fewer confident items use all dims (2)")
    group.add_argument("--min-cosine", type=float, help="confident subset: best-cosine floor (-1 = none)")
    group.add_argument("--min-margin", help="confident subset: absolute margin (0 = keep all) or quantile like 30%% (30%%)")
    group.add_argument("--seed", type=int, help="bracket seed (0)")
    group.add_argument("--partitions", type=int, help="repartition the items into N partitions first")
    group.add_argument("--arrow-batch-size", type=int, help="rows per Arrow batch (10000)")
    group.add_argument("--master", help="Spark master when not under spark-submit (local[*])")
    group.add_argument("--on-invalid", choices=["quarantine", "error"], help="bad item rows: quarantine (default) or stop")
    group.add_argument("--output-files", type=int, help="number of prediction files (4)")
    group.add_argument("--candidates", type=int, help="pairwise bracket over each item's top-K base classes (0 = all)")
    group.add_argument("--binary", help="evaluate: also score GROUP=class1,class2[;GROUP2=...] vs the rest, per method")
    group.add_argument("--verbose", action="store_true", help="full tracebacks and Spark INFO logs")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pairspark", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def show_cols_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--show-cols", help="items columns shown beside suspected errors (e.g. product_name)")

    def views_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--views", required=True, help="NAME=COL[,NAME=COL]: view name (classes column) = items column")

    p = sub.add_parser("fit", help="class statistics and pair masks into MODEL_DIR")
    p.add_argument("--items", required=True)
    p.add_argument("--classes", required=True)
    views_arg(p)
    p.add_argument("--out", required=True, help="MODEL_DIR")
    p.add_argument("--methods", help=METHODS_HELP + "; fit prepares the ones that need passes of their own")
    _settings_options(p)

    p = sub.add_parser("classify", help="per-item classes for every view and method into PRED_DIR")
    p.add_argument("--items", required=True)
    p.add_argument("--model", required=True, help="MODEL_DIR written by fit")
    p.add_argument("--out", required=True, help="PRED_DIR")
    p.add_argument("--methods", help=METHODS_HELP)
    p.add_argument("--label-col", help="carry this ground-truth column into the predictions")
    p.add_argument("--quarantine", help="where invalid item rows go, with a reason (default PRED_DIR.quarantine)")
    _settings_options(p)

    p = sub.add_parser("evaluate", help="agreement and label metrics into REPORT_DIR/metrics.json and report.html")
    p.add_argument("--predictions", required=True, help="PRED_DIR written by classify")
    p.add_argument("--out", required=True, help="REPORT_DIR")
    p.add_argument("--label-col", help="ground-truth column (default: the one classify carried)")
    p.add_argument("--changes", help="a `pairspark diff` output to show in the report")
    show_cols_arg(p)
    _settings_options(p)

    p = sub.add_parser("audit", help="likely annotation errors, ranked, into DIR (Parquet, CSV, summary.json)")
    p.add_argument("--predictions", required=True, help="PRED_DIR written by classify")
    p.add_argument("--out", required=True, help="DIR")
    p.add_argument("--label-col", help="stored label column (default: the one classify carried)")
    p.add_argument("--items", help="items table to take --show-cols from (default: the one classify read)")
    p.add_argument("--csv-rows", type=int, default=10_000, help="rows in DIR/suspects.csv (10000); the Parquet has all")
    show_cols_arg(p)
    _settings_options(p)

    p = sub.add_parser("embed", help="add <col>_embedding vectors for text columns (needs pairspark[embed])")
    p.add_argument("--items", required=True)
    p.add_argument("--text-col", required=True, help="COL[,COL...]: text columns to embed")
    p.add_argument("--out", required=True, help="the items with the new columns (Parquet)")
    p.add_argument("--model", default="minilm", help="encoder (minilm: all-MiniLM-L6-v2, offline)")
    p.add_argument("--batch-size", type=int, default=64, help="texts per forward pass (64)")
    _settings_options(p)

    p = sub.add_parser("embed-classes", help="a classes table from class names (needs pairspark[embed])")
    p.add_argument("--names", required=True, help="a file with one class name per line, or a comma list")
    p.add_argument("--views", required=True, help="NAME[,NAME]: the classes table's vector columns")
    p.add_argument("--prompt", default="{}", help='prompt template, e.g. "a photo of {}" ({})')
    p.add_argument("--out", required=True)
    p.add_argument("--model", default="minilm")
    _settings_options(p)

    p = sub.add_parser("diff", help="items whose class changed between two prediction runs, into DIR")
    p.add_argument("--old", required=True, help="the previous PRED_DIR")
    p.add_argument("--new", required=True, help="the new PRED_DIR")
    p.add_argument("--out", required=True, help="DIR (changes Parquet and summary.json)")
    _settings_options(p)

    p = sub.add_parser("run", help="fit, classify and evaluate into DIR/model, DIR/predictions, DIR/report")
    p.add_argument("--items", required=True)
    p.add_argument("--classes", required=True)
    views_arg(p)
    p.add_argument("--out", required=True, help="DIR")
    p.add_argument("--methods", help=METHODS_HELP)
    p.add_argument("--label-col")
    p.add_argument("--previous", help="last night's PRED_DIR: what changed goes to DIR/changes and the report")
    show_cols_arg(p)
    _settings_options(p)
    return parser


METHODS_HELP = (f"comma list of {','.join(METHODS)}, or auto (default: base,pairwise,cotrain with two views, "
                "base,pairwise with one; classify: the methods the model was fitted for)")

_SETTING_FLAGS = (
    "ratio_threshold", "min_dims", "max_dims", "min_class_count", "min_cosine", "min_margin",
    "seed", "partitions", "arrow_batch_size", "master", "methods", "on_invalid", "output_files", "candidates", "binary",
)


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides = {k: getattr(args, k, None) for k in _SETTING_FLAGS}
    return load_settings(args.config, overrides)


def execute(args: argparse.Namespace, spark, settings: Settings) -> dict:
    """Run one parsed command on a given session (the tests call this with their own session)."""
    from pairspark import pipeline

    if args.command == "fit":
        return pipeline.fit(spark, args.items, args.classes, parse_views(args.views), args.out, settings)
    if args.command == "classify":
        return pipeline.classify(spark, args.items, args.model, args.out, settings, args.label_col, args.quarantine)
    show_cols = [c.strip() for c in (getattr(args, "show_cols", None) or "").split(",") if c.strip()]
    if args.command == "evaluate":
        return pipeline.evaluate(spark, args.predictions, args.out, args.label_col, args.changes, show_cols, settings.binary)
    if args.command == "audit":
        return pipeline.audit(spark, args.predictions, args.out, args.label_col, args.items, show_cols, args.csv_rows)
    if args.command == "diff":
        return pipeline.diff(spark, args.old, args.new, args.out)
    if args.command == "embed":
        return pipeline.embed(spark, args.items, [c.strip() for c in args.text_col.split(",") if c.strip()], args.out,
                              args.model, args.batch_size, settings.partitions)
    if args.command == "embed-classes":
        return pipeline.embed_classes(spark, class_names_arg(args.names), [v.strip() for v in args.views.split(",") if v.strip()],
                                      args.out, args.prompt, args.model)
    return pipeline.run(spark, args.items, args.classes, parse_views(args.views), args.out, settings, args.label_col,
                        args.previous, show_cols)


def class_names_arg(value: str) -> list[str]:
    """A file with one name per line, or a comma-separated list."""
    from pathlib import Path

    path = Path(value)
    if path.is_file():
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return [n.strip() for n in value.split(",") if n.strip()]


def summary(command: str, result: dict) -> str:
    if command in ("audit", "diff", "embed", "embed-classes"):
        return json.dumps({k: v for k, v in result.items() if k != "by_pair"}, indent=1)
    if command in ("evaluate", "run"):
        lines = [f"items: {result['counts'].get('items')}  quarantined: {result['counts'].get('quarantined', 0)}"]
        for method, m in result.get("agreement", {}).items():
            if isinstance(m, dict):
                lines.append(f"agreement {method:9s} weighted_f1={m['weighted_f1']:.4f} macro_f1={m['macro_f1']:.4f}")
        for group, by_method in result.get("binary", {}).items():
            for method, m in by_method.items():
                if isinstance(m, dict) and "weighted_f1" in m:
                    lines.append(f"binary {group}.{method:9s} agreement weighted_f1={m['weighted_f1']:.4f}")
        for view, by_method in result.get("vs_label", {}).items():
            for method, m in by_method.items():
                lines.append(f"vs_label {view}.{method:9s} accuracy={m['accuracy']:.4f} weighted_f1={m['weighted_f1']:.4f}")
        return "\n".join(lines)
    return json.dumps(result.get("counts", {}))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s pairspark %(message)s", stream=sys.stderr)
    spark = None
    try:
        settings = settings_from_args(args)
        parse_views(args.views) if hasattr(args, "views") else None
        from pairspark.spark.session import build_session

        spark = build_session(settings.master, f"pairspark-{args.command}")
        if args.verbose:
            spark.sparkContext.setLogLevel("INFO")
        result = execute(args, spark, settings)
        print(summary(args.command, result))
        return 0
    except UsageError as exc:
        if args.verbose:
            raise
        print(f"pairspark {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_INVALID_ROWS if isinstance(exc, InvalidRowsError) else EXIT_USAGE
    finally:
        if spark is not None:
            spark.stop()


if __name__ == "__main__":
    sys.exit(main())
