"""`pairspark fit|classify|evaluate|run`: parse arguments, build the session, call the stages of pairspark/pipeline/."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from pairspark.config import RUN_OPTIONS, Settings, load_settings
from pairspark.errors import InvalidRowsError, UsageError
from pairspark.params import CLASSIFY_PARAMS, SETTING_PARAMS, HasPairsparkParams, kebab, snake
from pairspark.views import parse_views

EXIT_USAGE = 2
EXIT_INVALID_ROWS = 3
EXIT_OUT_OF_MEMORY = 4


# The Params each command takes as flags (fit decides the rest; classify only what acts there).
_COMMAND_PARAMS = {"fit": SETTING_PARAMS, "run": SETTING_PARAMS, "classify": CLASSIFY_PARAMS}


def _settings_options(parser: argparse.ArgumentParser, command: str) -> None:
    """The command's own settings: its Params (help and default from params.py) and run options
    (config.RunOptions). No command accepts a flag it would ignore."""
    group = parser.add_argument_group("settings (defaults shown; a --config TOML file's [pairspark] table, "
                                      "then flags, win over them)")
    group.add_argument("--config", help="TOML file with a [pairspark] table of settings (snake_case names)")
    defaults = HasPairsparkParams()
    for name in _COMMAND_PARAMS.get(command, ()):
        param = defaults.getParam(name)
        default = defaults.getOrDefault(param)
        group.add_argument(f"--{kebab(name)}", dest=snake(name), help=f"{param.doc} (default {default})".replace("%", "%%"))
    for name, spec in RUN_OPTIONS.items():
        if command in spec.metadata["commands"]:
            choices = spec.metadata["choices"] or None
            group.add_argument(f"--{name.replace('_', '-')}", dest=name, choices=choices,
                               help=f"{spec.metadata['help']} (default {spec.default})".replace("%", "%%"))
    group.add_argument("--conf", action="append", metavar="KEY=VALUE",
                       help="a Spark setting for the session the CLI builds (repeatable; also a [spark] table in --config)")
    group.add_argument("--verbose", action="store_true", help="full tracebacks, Spark INFO logs and progress bars")


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
    _settings_options(p, "fit")

    p = sub.add_parser("classify", help="per-item classes for every view and method into PRED_DIR")
    p.add_argument("--items", required=True)
    p.add_argument("--model", required=True, help="MODEL_DIR written by fit")
    p.add_argument("--out", required=True, help="PRED_DIR")
    p.add_argument("--label-col", help="carry this ground-truth column into the predictions")
    p.add_argument("--quarantine", help="where invalid item rows go, with a reason (default PRED_DIR.quarantine)")
    _settings_options(p, "classify")

    p = sub.add_parser("evaluate", help="agreement and label metrics into REPORT_DIR/metrics.json and report.html")
    p.add_argument("--predictions", required=True, help="PRED_DIR written by classify")
    p.add_argument("--out", required=True, help="REPORT_DIR")
    p.add_argument("--label-col", help="ground-truth column (default: the one classify carried)")
    p.add_argument("--changes", help="a `pairspark diff` output to show in the report")
    show_cols_arg(p)
    _settings_options(p, "evaluate")

    def ranked_list(command: str, help: str, csv_name: str) -> None:
        """audit and review: a ranked list of items from predictions, as Parquet, CSV and summary.json."""
        p = sub.add_parser(command, help=help)
        p.add_argument("--predictions", required=True, help="PRED_DIR written by classify")
        p.add_argument("--out", required=True, help="DIR")
        p.add_argument("--label-col", help="stored label column (default: the one classify carried)")
        p.add_argument("--items", help="items table to take --show-cols from (default: the one classify read)")
        p.add_argument("--csv-rows", type=int, default=10_000, help=f"rows in DIR/{csv_name} (10000); the Parquet has all")
        show_cols_arg(p)
        _settings_options(p, command)

    ranked_list("audit", "likely annotation errors, ranked, into DIR (Parquet, CSV, summary.json)", "suspects.csv")
    ranked_list("review", "the items to look at before their class is written, ranked, into DIR (Parquet, CSV, "
                "summary.json)", "review.csv")

    p = sub.add_parser("embed", help="add <col>_embedding vectors for text columns (needs pairspark[embed])")
    p.add_argument("--items", required=True)
    p.add_argument("--text-col", required=True, help="COL[,COL...]: text columns to embed")
    p.add_argument("--out", required=True, help="the items with the new columns (Parquet)")
    p.add_argument("--model", default="minilm", help="encoder (minilm: all-MiniLM-L6-v2, offline)")
    p.add_argument("--batch-size", type=int, default=64, help="texts per forward pass (64)")
    _settings_options(p, "embed")

    p = sub.add_parser("embed-classes", help="a classes table from class names (needs pairspark[embed])")
    p.add_argument("--names", required=True, help="a file with one class name per line, or a comma list")
    p.add_argument("--views", required=True, help="NAME[,NAME]: the classes table's vector columns")
    p.add_argument("--prompt", action="append", default=None,
                   help='a prompt template, e.g. "a photo of {}"; repeat it for several prompts per class (their '
                        'vectors are averaged). Default: the 5 templates of pairspark.embed.PROMPT_TEMPLATES')
    p.add_argument("--out", required=True)
    p.add_argument("--model", default="minilm")
    _settings_options(p, "embed-classes")

    p = sub.add_parser("diff", help="items whose class changed between two prediction runs, into DIR")
    p.add_argument("--old", required=True, help="the previous PRED_DIR")
    p.add_argument("--new", required=True, help="the new PRED_DIR")
    p.add_argument("--out", required=True, help="DIR (changes Parquet and summary.json)")
    _settings_options(p, "diff")

    p = sub.add_parser("run", help="fit, classify and evaluate into DIR/model, DIR/predictions, DIR/report")
    p.add_argument("--items", required=True)
    p.add_argument("--classes", required=True)
    views_arg(p)
    p.add_argument("--out", required=True, help="DIR")
    p.add_argument("--label-col")
    p.add_argument("--previous", help="last night's PRED_DIR: what changed goes to DIR/changes and the report")
    show_cols_arg(p)
    _settings_options(p, "run")
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    names = [snake(p) for p in SETTING_PARAMS] + list(RUN_OPTIONS)
    return load_settings(args.config, {k: getattr(args, k) for k in names if hasattr(args, k)}, args.conf)


def execute(args: argparse.Namespace, spark, settings: Settings) -> dict:
    """Run one parsed command on a given session (the tests call this with their own session).
    Every command holds its output's lock while it runs (run takes OUT's itself)."""
    from pairspark import pipeline
    from pairspark.spark.publish import output_lock

    if args.command == "run":
        show_cols = [c.strip() for c in (args.show_cols or "").split(",") if c.strip()]
        return pipeline.run(spark, args.items, args.classes, parse_views(args.views), args.out, settings, args.label_col,
                            args.previous, show_cols)
    with output_lock(spark, args.out):
        return _execute_stage(args, spark, settings, pipeline)


def _execute_stage(args: argparse.Namespace, spark, settings: Settings, pipeline) -> dict:
    if args.command == "fit":
        return pipeline.fit(spark, args.items, args.classes, parse_views(args.views), args.out, settings)
    if args.command == "classify":
        return pipeline.classify(spark, args.items, args.model, args.out, settings, args.label_col, args.quarantine)
    show_cols = [c.strip() for c in (getattr(args, "show_cols", None) or "").split(",") if c.strip()]
    if args.command == "evaluate":
        return pipeline.evaluate(spark, args.predictions, args.out, args.label_col, args.changes, show_cols, settings.binary,
                                 settings.experiment)
    if args.command == "audit":
        return pipeline.audit(spark, args.predictions, args.out, args.label_col, args.items, show_cols, args.csv_rows,
                              settings.items_format)
    if args.command == "review":
        return pipeline.review(spark, args.predictions, args.out, settings.review_below, args.label_col, args.items,
                               show_cols, args.csv_rows, settings.items_format)
    if args.command == "diff":
        return pipeline.diff(spark, args.old, args.new, args.out)
    if args.command == "embed":
        return pipeline.embed(spark, args.items, [c.strip() for c in args.text_col.split(",") if c.strip()], args.out,
                              args.model, args.batch_size, settings.partitions, settings.items_format)
    return pipeline.embed_classes(spark, class_names_arg(args.names), [v.strip() for v in args.views.split(",") if v.strip()],
                                  args.out, args.prompt, args.model)


def class_names_arg(value: str) -> list[str]:
    """A file with one name per line, or a comma-separated list."""
    from pathlib import Path

    path = Path(value)
    if path.is_file():
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return [n.strip() for n in value.split(",") if n.strip()]


def summary(command: str, result: dict) -> str:
    if command in ("audit", "review", "diff", "embed", "embed-classes"):
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


def _stop(spark) -> None:
    """Stop the session. After its JVM died (out of memory) there is nothing left to stop but the
    accumulator server's thread, which prints the lost connection: waited for, so that the
    one-line error comes last."""
    from pyspark import SparkContext

    from pairspark.spark.session import LOST_DRIVER_WAIT_S, driver_exit_code

    if driver_exit_code() is None:
        try:
            spark.stop()
            return
        except Exception:  # noqa: BLE001 - a JVM that was still exiting when the run failed
            if driver_exit_code(LOST_DRIVER_WAIT_S) is None:
                raise
    server = getattr(SparkContext._active_spark_context, "_accumulatorServer", None)
    if server is not None:
        server.shutdown()


def _quiet_after_jvm_exit(record: logging.LogRecord) -> bool:
    """py4j logs a traceback for every call that finds the driver JVM gone: the error that ends
    the run says why (e.g. out of memory), once."""
    from py4j.protocol import Py4JNetworkError

    return not (record.exc_info and isinstance(record.exc_info[1], Py4JNetworkError))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s pairspark %(message)s", stream=sys.stderr)
    if not args.verbose:
        logging.getLogger("py4j").setLevel(logging.WARNING)
        for handler in logging.getLogger().handlers:  # py4j's records reach the root's handler
            handler.addFilter(_quiet_after_jvm_exit)
    spark = settings = None
    out_of_memory = None
    try:
        settings = settings_from_args(args)
        parse_views(args.views) if hasattr(args, "views") else None
        from pairspark.spark.session import build_session

        conf = {"spark.sql.execution.arrow.maxRecordsPerBatch": str(settings.arrow_batch_size), **settings.spark_conf}
        spark = build_session(settings.master, f"pairspark-{args.command}", conf, verbose=args.verbose)
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
    except Exception as exc:  # noqa: BLE001 - out of memory gets one line; anything else its traceback
        from pairspark.spark.session import memory_failure

        out_of_memory = memory_failure(exc, settings.spark_conf if settings else {}, settings.master if settings else "local")
        if out_of_memory is None or args.verbose:
            raise
    finally:
        if spark is not None:
            _stop(spark)
    print(f"pairspark {args.command}: error: {out_of_memory}", file=sys.stderr)
    return EXIT_OUT_OF_MEMORY


if __name__ == "__main__":
    sys.exit(main())
