"""Benchmark: scan floor, fit, classify base, classify base+pairwise on one synthetic catalog, in
ONE Spark session, so the ratios compare like with like. Run it with scripts/bench (which sets up
.venv); see docs/PERFORMANCE.md for the last results.

The catalog is generated in Spark (memory bounded: each Arrow batch is made from its id range)
and cached under --work by its parameters, so a rerun skips generation.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pairspark import pipeline
from pairspark.config import View, load_settings
from pairspark.core.cosine import base_assign, top_candidates, unit_rows64
from pairspark.core.classify import classify
from pairspark.core.methods import REGISTRY, Batch, pair_cache, prepare, prepare_pairs
from pairspark.core.tournament import resolve_candidates, splitmix64
from pairspark.core.validate import row_reasons
from pairspark.core.batches import batch_matrix, class_names
from pairspark.spark.model_io import load_model
from pairspark.spark.fs import FileSystem
from pairspark.spark.session import build_session

VIEWS = [View("image", "image_embedding"), View("text", "text_embedding")]


def prototypes(n_classes: int, dim: int, seed: int) -> dict[str, np.ndarray]:
    """Per view: a shared component (CLIP vectors share a large common direction) plus a class part."""
    out = {}
    for v, view in enumerate(VIEWS):
        rng = np.random.default_rng([seed, v])
        common = rng.normal(size=dim)
        common /= np.linalg.norm(common)
        protos = rng.normal(size=(n_classes, dim))
        protos /= np.linalg.norm(protos, axis=1, keepdims=True)
        # each class moves on its own subset of dims more than on the rest: masks have something to find
        emphasis = 1.0 + 2.0 * (rng.random((n_classes, dim)) < 0.15)
        out[view.name] = (common, protos * emphasis / np.linalg.norm(protos * emphasis, axis=1, keepdims=True))
    return out


def tree_classes(classes_path: str, shape: tuple[int, ...]) -> str:
    """The flat catalog's classes as the leaves of a tree of this shape (e.g. 10 roots x 10 x 100:
    leaf c sits under node c // 100 of level 2, under root c // 1,000), next to them; inner nodes
    have no prompt. Same leaves, same prompts: the tree run against the flat run is the tree's cost."""
    flat = pq.read_table(classes_path)
    n = flat.num_rows
    if int(np.prod(shape)) != n:
        raise SystemExit(f"--tree {','.join(map(str, shape))} makes {int(np.prod(shape))} leaves, the catalog has {n} classes")
    out = str(Path(classes_path).with_name("classes_tree.parquet"))
    ids, parents = [], []
    for depth in range(1, len(shape)):
        width = int(np.prod(shape[:depth]))
        below = int(np.prod(shape[depth:]))
        ids += [f"node-{depth}-{i:05d}" for i in range(width)]
        parents += [None if depth == 1 else f"node-{depth - 1}-{i // shape[depth - 1]:05d}" for i in range(width)]
    leaf_parent = [f"node-{len(shape) - 1}-{c // shape[-1]:05d}" for c in range(n)]
    vec = flat.schema.field("image_embedding").type
    inner = len(ids)
    table = pa.table({"class_id": pa.array(ids + flat.column("class_id").to_pylist()),
                      "parent_id": pa.array(parents + leaf_parent, pa.string()),
                      **{c: pa.concat_arrays([pa.nulls(inner, vec), flat.column(c).combine_chunks()])
                         for c in ("image_embedding", "text_embedding")}})
    pq.write_table(table, out)
    return out


def sibling_pair_count(tree) -> int:
    """Pairs of nodes with the same parent (two roots count as siblings)."""
    parents, counts = np.unique(tree.parent, return_counts=True)
    return int((counts * (counts - 1) // 2).sum())


def generate(spark, folder: Path, n_items: int, dim: int, n_classes: int, seed: int) -> tuple[str, str]:
    items_path, classes_path = folder / "items.parquet", folder / "classes.parquet"
    if (items_path / "_SUCCESS").exists() and classes_path.exists():
        return str(items_path), str(classes_path)
    folder.mkdir(parents=True, exist_ok=True)
    protos = prototypes(n_classes, dim, seed)
    vec = pa.list_(pa.float32())
    classes = {"class_id": pa.array([f"class-{c:04d}" for c in range(n_classes)])}
    rng = np.random.default_rng([seed, 99])
    for name, (common, p) in protos.items():
        prompt = 0.6 * common + p + 0.3 * rng.normal(size=p.shape) / np.sqrt(dim)
        classes[f"{name}_embedding"] = pa.array(list(prompt.astype(np.float32)), vec)
    pq.write_table(pa.table(classes), classes_path)

    def make(batches):
        for batch in batches:
            ids = batch.column(0).to_numpy()
            labels = (splitmix64(ids.astype(np.uint64) ^ np.uint64(seed)) % np.uint64(n_classes)).astype(np.int64)
            local = np.random.default_rng([seed, int(ids[0])])
            columns = [pa.array([f"item-{i:09d}" for i in ids]), pa.array([f"class-{c:04d}" for c in labels])]
            for name, (common, p) in protos.items():
                x = common + 0.5 * p[labels] + 0.8 * local.normal(size=(len(ids), dim)) / np.sqrt(dim)
                flat = pa.array(x.astype(np.float32).reshape(-1))
                offsets = pa.array(np.arange(0, (len(ids) + 1) * dim, dim, dtype=np.int32))
                columns.append(pa.ListArray.from_arrays(offsets, flat))
            yield pa.RecordBatch.from_arrays(columns, ["item_id", "label", "image_embedding", "text_embedding"])

    schema = "item_id string, label string, image_embedding array<float>, text_embedding array<float>"
    parts = max(2, n_items // 50_000)
    spark.range(0, n_items, numPartitions=parts).mapInArrow(make, schema).write.mode("overwrite").parquet(str(items_path))
    return str(items_path), str(classes_path)


class MemoryWatch:
    """Samples the resident memory of this machine's Spark JVM and Python workers every 0.2 s."""

    def __init__(self):
        self.peaks: dict[str, float] = {}
        self._stage = "idle"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self, stage: str):
        self._stage = stage
        if not self._thread.is_alive():
            self._thread.start()

    def stop(self):
        self._stop.set()

    def _run(self):
        while not self._stop.is_set():
            for kind, rss in _spark_processes():
                key = f"{self._stage}.{kind}"
                self.peaks[key] = max(self.peaks.get(key, 0.0), rss)
            time.sleep(0.2)


def _spark_processes():
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        if b"pyspark.daemon" in cmd or b"pyspark.worker" in cmd:
            kind = "python_worker"
        elif b"java" in cmd and b"spark" in cmd:
            kind = "jvm"
        else:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                yield kind, int(line.split()[1]) / 1024


def scan_floor(spark, items_path: str, dim: int) -> int:
    """Read the vectors and hand them to Python as numpy (no math): the floor for any job."""

    def to_numpy(batches):
        rows = 0
        for batch in batches:
            for view in VIEWS:
                batch_matrix(batch, view.column, dim)
            rows += batch.num_rows
        yield pa.RecordBatch.from_arrays([pa.array([rows], pa.int64())], ["rows"])

    frame = spark.read.parquet(items_path).select("item_id", *[v.column for v in VIEWS])
    return int(frame.mapInArrow(to_numpy, "rows long").groupBy().sum("rows").collect()[0][0])


def _prepared(view):
    """The view as the driver ships it: its tournaments' preparation made (methods.prepare_pairs)."""
    prepare_pairs(view)
    return view


def kernel_profile(items_path: str, model_dir_views, candidates: int | str, batch_rows: int = 10_000) -> dict:
    """Per view, ms per `batch_rows` items for each step of classify_batches, in this process."""
    from pairspark.core.pair_cache import PairCache

    table = pq.ParquetFile(next(Path(items_path).glob("*.parquet"))).read_row_group(0)
    batch = table.slice(0, batch_rows).combine_chunks().to_batches()[0]
    keys = np.arange(batch.num_rows, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    out = {}
    for model in model_dir_views:
        prepare_pairs(model)  # as on the driver before broadcast
        steps: dict[str, float] = {}

        def timed(name, fn):
            best = float("inf")
            for _ in range(3):
                t0 = time.perf_counter()
                value = fn()
                best = min(best, time.perf_counter() - t0)
            steps[name] = round(best * 1e3 * batch_rows / batch.num_rows, 2)
            return value

        x = timed("arrow_to_numpy", lambda: batch_matrix(batch, model.column, model.dim))
        checks = [(v.name, v.column, v.dim) for v in model_dir_views]
        timed("validate_rows", lambda: row_reasons(batch.column(batch.schema.get_field_index("item_id")),
                                                   [(n, batch.column(batch.schema.get_field_index(c)), d) for n, c, d in checks]))
        unit = timed("unit_rows_float64", lambda: unit_rows64(x))
        base = timed("base_cosine_argmax", lambda: base_assign(unit, model.vectors64))
        k = resolve_candidates(candidates, model.n_classes)
        top = top_candidates(base.cosines, k) if 0 < k < model.n_classes else None
        pairwise = REGISTRY["pairwise"].predict
        pairwise(model, Batch(unit[:2], base, keys[:2], None if top is None else top[:2]))  # compile, stored weights
        if model.on_demand:  # the first batch of a worker builds its pairs; later ones mostly find them
            fresh = pickle.loads(pickle.dumps(model))
            fresh._local["pair_cache"] = PairCache(model.vectors64, model.moments, model.mask_settings)
            t0 = time.perf_counter()
            pairwise(fresh, Batch(unit, base, keys, top))
            steps["pairwise_tournament_cold"] = round((time.perf_counter() - t0) * 1e3 * batch_rows / batch.num_rows, 2)
            steps["pairs_built_per_10k"] = fresh._local["pair_cache"].built * batch_rows // batch.num_rows
        timed("pairwise_tournament", lambda: pairwise(model, Batch(unit, base, keys, top)))
        timed("class_names_out", lambda: class_names(model.class_ids, base.best))
        out[model.name] = steps
    return out


def tree_profile(items_path: str, views, candidates, rows: int = 10_000) -> dict:
    """The tree model's pairs on 10k items of the catalog (in this process): the leaf pairs the
    tournament built, the distinct sibling pairs whose masks they use, and the tree's sibling pairs."""
    from pairspark.core.tree import sibling_ancestors

    table = pq.ParquetFile(next(iter(sorted(Path(items_path).glob("*.parquet"))))).read_row_groups([0])
    out = {}
    for view in views:
        tree = view.tree
        x = batch_matrix(table.slice(0, rows).combine_chunks().to_batches()[0], view.column, view.dim)
        keys = np.arange(len(x), dtype=np.uint64)
        prepare(view, ("base", "pairwise"))
        classify(view, x, keys, ("base", "pairwise"), candidates)
        cache = pair_cache(view)
        pairs = np.array(list(cache._slot), dtype=np.int64)
        a, b = sibling_ancestors(tree, pairs // cache.n_classes, pairs % cache.n_classes)
        used = len(set(zip(np.minimum(a, b).tolist(), np.maximum(a, b).tolist())))
        out[view.name] = {"nodes": tree.n_nodes, "leaves": int(len(tree.leaves)), "sibling_pairs": sibling_pair_count(tree),
                          "leaf_pairs_built_per_10k": int(cache.built), "sibling_masks_used": used}
    return out


def kernel_sweep(out_path: str, sizes: list[tuple[int, int]], seed: int = 0, items: int = 10_000) -> dict:
    """Base vs pairwise kernel cost per 10k items as classes and dims grow (no Spark): masks are
    fitted from synthetic items by the real code path, so their sizes are realistic."""
    from pairspark.core.classify import classify
    from pairspark.core.masks import MaskSettings
    from pairspark.core.model import fit_view
    from pairspark.core.pair_cache import sample_lengths
    from pairspark.core.stats import ClassMoments

    rows = []
    for n_classes, dim in sizes:
        common, protos = prototypes(n_classes, dim, seed)["image"]
        rng = np.random.default_rng([seed, n_classes, dim])
        n_fit = max(20 * n_classes, items)
        labels = rng.integers(0, n_classes, n_fit)
        x = common + 0.5 * protos[labels] + 0.8 * rng.normal(size=(n_fit, dim)) / np.sqrt(dim)
        prompts = unit_rows64(0.6 * common + protos)
        unit = unit_rows64(x)
        base = base_assign(unit, prompts)
        t0 = time.perf_counter()
        model = fit_view("image", "image_embedding", [str(c) for c in range(n_classes)], prompts,
                         ClassMoments.from_batch(unit, base.best, n_classes), MaskSettings())
        prepare_pairs(model)
        masks_s = time.perf_counter() - t0
        keys = np.arange(items, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        batch = x[:items].astype(np.float32)
        classify(model, batch[:4], keys[:4], ("base", "pairwise"))  # compile
        timings = {}
        for label, methods, k in (("base", ("base",), 0), ("pairwise", ("base", "pairwise"), 0), ("pairwise_top8", ("base", "pairwise"), 8)):
            best = float("inf")
            for _ in range(2):
                t0 = time.perf_counter()
                classify(model, batch, keys, methods, k)
                best = min(best, time.perf_counter() - t0)
            timings[label] = round(best * 1e3 * 10_000 / items, 1)
        row = {"classes": n_classes, "dim": dim, "ms_per_10k": timings,
               "pairwise_vs_base": round(timings["base"] / timings["pairwise"], 3),
               "top8_vs_base": round(timings["base"] / timings["pairwise_top8"], 3),
               "pair_masks": "on_demand" if model.on_demand else "stored",
               "mask_dims_median": float(np.median(sample_lengths(model.moments, model.mask_settings) if model.on_demand
                                                   else model.masks.lengths)),
               "masks_mb": 0.0 if model.on_demand else round(model.masks.nbytes / 2**20, 1),
               "pair_cache_mb": round(pair_cache(model).nbytes / 2**20, 1) if model.on_demand else 0.0,
               "fit_masks_s": round(masks_s, 1)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpus": os.cpu_count(), "rows": rows}
    Path(out_path).write_text(json.dumps(result, indent=2) + "\n")
    return result


def embed_bench(args) -> int:
    """Texts per second of `pairspark embed` (Spark, every core) and of the encoder alone (one process)."""
    import pandas as pd

    from pairspark.embed import encode_texts, encoder

    source = Path(os.environ.get("PAIRSPARK_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "agnews" / "items.parquet"
    work = Path(args.work) / "embed"
    work.mkdir(parents=True, exist_ok=True)
    raw = pq.read_table(source, columns=["item_id", "title", "description"])
    pq.write_table(raw, work / "raw.parquet")
    titles = raw.column("title").to_pylist()[:2000]
    model = encoder("minilm")
    encode_texts(pd.Series(titles[:64]), model, 64)  # warm-up
    start = time.perf_counter()
    encode_texts(pd.Series(titles), model, 64)
    alone = len(titles) / (time.perf_counter() - start)
    spark = build_session(args.master, "pairspark-bench-embed", {"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false"})
    spark.sparkContext.setLogLevel("ERROR")
    pipeline.embed(spark, str(work / "raw.parquet"), ["title"], str(work / "warm"), partitions=2)  # workers load the model
    start = time.perf_counter()
    info = pipeline.embed(spark, str(work / "raw.parquet"), ["title", "description"], str(work / "out"), partitions=2)
    seconds = time.perf_counter() - start
    spark.stop()
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "master": args.master},
        "items": info["items"], "texts": info["items"] * 2,
        "spark_seconds": round(seconds, 1),
        "spark_items_per_s": round(info["items"] / seconds, 1),
        "spark_texts_per_s": round(info["items"] * 2 / seconds, 1),
        "one_process_titles_per_s": round(alone, 1),
        "torch_threads_per_worker": int(os.environ.get("PAIRSPARK_TORCH_THREADS", "1")),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


STAGES = ("scan", "fit", "fit_default", "fit_reuse", "load", "base", "pairwise", "cotrain", "classify",
          "single_process_scan", "single_process_base", "tree_fit", "tree_classify")
TREE_STAGES = ("tree_fit", "tree_classify")


def single_process(items_path: str, classes_path: str, dim: int, cosine: bool) -> int:
    """The limit without Spark: this one process reads the same Parquet files with pyarrow (its own
    threads) and, with `cosine`, takes each view's cosine argmax with numpy (BLAS threads), on
    the same cores. Returns the rows read."""
    import pyarrow.dataset as ds

    classes = pq.read_table(classes_path)
    prompts = {}
    for view in VIEWS:
        t = np.asarray(classes.column(view.column).combine_chunks().flatten(), np.float32).reshape(-1, dim)
        prompts[view.column] = t / np.linalg.norm(t, axis=1, keepdims=True)
    rows = 0
    for batch in ds.dataset(items_path, format="parquet").to_batches(columns=["item_id", *prompts], batch_size=10_000):
        for column, t in prompts.items():
            x = batch_matrix(batch, column, dim)
            if cosine:
                np.argmax((x / np.linalg.norm(x, axis=1, keepdims=True)) @ t.T, axis=1)
        rows += batch.num_rows
    return rows


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def _ratios(seconds: dict[str, float]) -> dict[str, float]:
    """Throughput ratios of the stages that were timed (>1: the first is faster)."""
    pairs = {"pairwise_vs_base": ("base", "pairwise"), "cotrain_vs_base": ("base", "cotrain"),
             "base_vs_scan": ("scan", "base"), "classify_vs_scan": ("scan", "classify"),
             "scan_vs_single_process_scan": ("single_process_scan", "scan"),
             "classify_vs_single_process_base": ("single_process_base", "classify")}
    out = {k: round(seconds[a] / seconds[b], 3) for k, (a, b) in pairs.items() if a in seconds and b in seconds}
    # issue 28's goals, as costs against base classify: the default classify and fit, and the
    # default model's load (load_model of its directory on the driver) against the default classify
    costs = {"classify_cost_vs_base": ("classify", "base"), "fit_default_cost_vs_base": ("fit_default", "base"),
             "load_cost_vs_classify": ("load", "classify"),
             # issue 29: the tree's default fit and classify against the flat run over its leaves
             "tree_classify_cost_vs_flat": ("tree_classify", "classify"), "tree_fit_cost_vs_flat": ("tree_fit", "fit_default")}
    out.update({k: round(seconds[a] / seconds[b], 3) for k, (a, b) in costs.items() if a in seconds and b in seconds})
    # fit ratios are costs: seconds of fit per second of scan
    out.update({f"{f}_vs_scan": round(seconds[f] / seconds["scan"], 3) for f in ("fit", "fit_default", "fit_reuse")
                if f in seconds and "scan" in seconds})
    return out


# the measured scaling grid (docs/PERFORMANCE.md "Scaling"): one axis at a time around
# 100k x 768 x 50 classes, items up to 1M, classes 10..10,000, dims 384 / 768
SCALING_GRID = ((100_000, 768, 50), (300_000, 768, 50), (1_000_000, 768, 50), (100_000, 768, 10),
                (100_000, 768, 200), (100_000, 768, 1000), (100_000, 768, 10_000), (100_000, 384, 50))


def scaling(args) -> int:
    """Runs this bench once per grid point, each in its own process and Spark session (a session's
    heap and caches do not carry over), then writes every point's seconds and ratios to --out and
    a Markdown table beside it."""
    points = []
    for items, dim, classes in SCALING_GRID:
        out = Path(args.work) / f"scaling-n{items}-d{dim}-c{classes}.json"
        command = [sys.executable, __file__, "--items", str(items), "--dim", str(dim), "--classes", str(classes),
                   "--seed", str(args.seed), "--master", args.master, "--work", args.work, "--repeats", str(args.repeats),
                   "--candidates", args.candidates, "--driver-memory", args.driver_memory, "--out", str(out)]
        command += ["--min-margin", args.min_margin] if args.min_margin is not None else []
        print(" ".join(command[2:]), flush=True)
        subprocess.run(command, check=True)
        points.append(json.loads(out.read_text()))
    Path(args.out).write_text(json.dumps(points, indent=2) + "\n")
    columns = ("scan", "single_process_base", "fit", "fit_default", "fit_reuse", "base", "pairwise", "cotrain", "classify")
    lines = ["| items | dims | classes | " + " | ".join(columns) + " | fit_default / scan | classify / scan | worker RSS MB |",
             "|" + "---|" * (len(columns) + 6)]
    for p in points:
        q, s = p["params"], p["seconds"]
        lines.append(f"| {q['items']:,} | {q['dim']} | {q['classes']:,} | " + " | ".join(f"{s.get(c, float('nan')):.1f}" for c in columns)
                     + f" | {p['ratios'].get('fit_default_vs_scan', float('nan')):.2f}"
                     + f" | {s['classify'] / s['scan']:.2f} | {p['peak_rss_mb']:,.0f} |")
    table = "\n".join(lines) + "\n"
    Path(args.out).with_suffix(".md").write_text(table)
    print(table)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--classes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--work", default="/tmp/pairspark-bench", help="catalogs (kept) and job outputs")
    parser.add_argument("--min-margin", default=None, help="fit setting (default: conf/default.toml)")
    parser.add_argument("--candidates", default="auto",
                        help="classify setting (auto, the default; 0: every class in each bracket; K: each item's top K)")
    parser.add_argument("--out", default="bench.json", help="JSON results file")
    parser.add_argument("--repeats", type=int, default=3, help="times each stage runs; the median is reported")
    parser.add_argument("--stages", default=",".join(STAGES),
                        help="stages to time (a model a stage needs is still fitted, once, untimed)")
    parser.add_argument("--tree", default=None, help="also fit and classify the catalog's classes as the leaves of a "
                        "tree of this shape, e.g. 10,10,100 (10 roots x 10 x 100 leaves = --classes)")
    parser.add_argument("--driver-memory", default="4g", help="JVM heap in local mode (the executors share it)")
    parser.add_argument("--kernel-sweep", action="store_true",
                        help="instead: base vs pairwise kernels (no Spark) for classes 10..1000 x dims 256..768")
    parser.add_argument("--embed", action="store_true",
                        help="instead: embedding throughput (pairspark embed, all-MiniLM-L6-v2) on agnews' raw texts")
    parser.add_argument("--scaling", action="store_true",
                        help="instead: every point of SCALING_GRID (items, dims, classes), one process each, into --out "
                             "and a Markdown table beside it")
    args = parser.parse_args(argv)
    if args.scaling:
        return scaling(args)
    if args.embed:
        return embed_bench(args)
    if args.kernel_sweep:
        sizes = [(c, 768) for c in (10, 50, 200, 1000)] + [(50, d) for d in (256, 512)]
        kernel_sweep(args.out, sizes, args.seed)
        return 0

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    # every timed fit fits (the repeats write into one folder: --warm-start auto would reuse it)
    overrides = {"master": args.master, "candidates": args.candidates, "warm_start": "off"}
    if args.min_margin is not None:
        overrides["min_margin"] = args.min_margin
    settings = load_settings(None, overrides)
    # one JVM heap for every stage; 1,000 classes need more than the 1 GB default in local mode
    spark = build_session(args.master, "pairspark-bench", {"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false",
                                                           "spark.driver.memory": args.driver_memory})
    spark.sparkContext.setLogLevel("ERROR")
    work = Path(args.work)
    data = work / f"catalog-n{args.items}-d{args.dim}-c{args.classes}-s{args.seed}"
    runs = work / "runs"

    t0 = time.perf_counter()
    items_path, classes_path = generate(spark, data, args.items, args.dim, args.classes, args.seed)
    generate_s = time.perf_counter() - t0
    size_mb = sum(f.stat().st_size for f in Path(items_path).glob("*.parquet")) / 2**20

    watch = MemoryWatch()
    seconds: dict[str, float] = {}

    chosen = [x.strip() for x in args.stages.split(",") if x.strip()]
    if args.tree:
        chosen += [s for s in TREE_STAGES if s not in chosen]
    unknown = sorted(set(chosen) - set(STAGES))
    if unknown:
        parser.error(f"unknown stage(s) {', '.join(unknown)}; stages: {', '.join(STAGES)}")

    def stage(name, fn):
        if name not in chosen:
            if name in ("fit", "fit_default"):
                fn()  # the models the classify stages read
            return
        watch.start(name)
        runs = []
        for _ in range(max(1, args.repeats)):
            start = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - start)
        seconds[name] = round(float(np.median(runs)), 2)
        print(f"  {name:<11} {seconds[name]:8.2f} s (median of {' '.join(f'{r:.1f}' for r in runs)})", flush=True)

    scan_floor(spark, items_path, args.dim)  # warm-up: JIT, Python workers, page cache
    stage("scan", lambda: scan_floor(spark, items_path, args.dim))
    stage("single_process_scan", lambda: single_process(items_path, classes_path, args.dim, cosine=False))
    stage("single_process_base", lambda: single_process(items_path, classes_path, args.dim, cosine=True))
    seed_methods = load_settings(None, {**overrides, "methods": "base,pairwise"})
    stage("fit", lambda: pipeline.fit(spark, items_path, classes_path, VIEWS, str(runs / "model"), seed_methods))
    # the default fit adds cotrain's passes (docs/METHOD.md); its model serves the cotrain stage
    stage("fit_default", lambda: pipeline.fit(spark, items_path, classes_path, VIEWS, str(runs / "model_default"), settings))
    # a nightly rerun with unchanged inputs: the default model reused (fingerprint, load, write)
    stage("fit_reuse", lambda: pipeline.fit(spark, items_path, classes_path, VIEWS, str(runs / "model_default"),
                                            load_settings(None, {**overrides, "warm_start": "auto"})))
    stage("load", lambda: load_model(spark, str(runs / "model_default")))
    base_settings = load_settings(None, {**overrides, "methods": "base"})
    stage("base", lambda: pipeline.classify(spark, items_path, str(runs / "model"), str(runs / "base"), base_settings))
    both = load_settings(None, {**overrides, "methods": "base,pairwise"})
    stage("pairwise", lambda: pipeline.classify(spark, items_path, str(runs / "model"), str(runs / "pairwise"), both))
    cotrain = load_settings(None, {**overrides, "methods": "base,cotrain"})
    stage("cotrain", lambda: pipeline.classify(spark, items_path, str(runs / "model_default"), str(runs / "cotrain"), cotrain))
    # the default classify: every method the default model was fitted for (base, pairwise, cotrain)
    stage("classify", lambda: pipeline.classify(spark, items_path, str(runs / "model_default"), str(runs / "classify"),
                                                settings))
    if args.tree:  # the same catalog with its classes as a tree's leaves: the default fit and classify
        tree_path = tree_classes(classes_path, tuple(int(x) for x in args.tree.split(",")))
        stage("tree_fit", lambda: pipeline.fit(spark, items_path, tree_path, VIEWS, str(runs / "model_tree"), settings))
        stage("tree_classify", lambda: pipeline.classify(spark, items_path, str(runs / "model_tree"),
                                                         str(runs / "tree_classify"), settings))
    watch.stop()
    cotrain_passes = FileSystem(spark).read_json(str(runs / "model_default" / "meta.json"))["method_fits"]["cotrain"]

    tree_facts = None
    if args.tree and (runs / "model_tree").exists():
        tree_views, _ = load_model(spark, str(runs / "model_tree"))
        tree_facts = tree_profile(items_path, tree_views, settings.candidates)
    views, metadata = load_model(spark, str(runs / "model"))
    meta = metadata["pairspark"]
    profile = kernel_profile(items_path, views, settings.candidates)
    spark.stop()

    n = args.items
    peaks = {k: round(v, 1) for k, v in sorted(watch.peaks.items())}
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "master": args.master},
        "params": {"repeats": args.repeats, "items": n, "dim": args.dim, "classes": args.classes, "views": len(VIEWS), "seed": args.seed,
                   "candidates": settings.candidates, "driver_memory": args.driver_memory,
                   "min_margin": meta["settings"]["min_margin"], "items_parquet_mb": round(size_mb, 1),
                   "generate_s": round(generate_s, 1)},
        "seconds": seconds,
        "items_per_s": {k: round(n / seconds[k]) for k in STAGES if k in seconds},
        "cotrain_fit": cotrain_passes,
        "ratios": _ratios(seconds),
        "peak_rss_mb": max([v for k, v in peaks.items() if k.endswith("python_worker")], default=0.0),
        "peak_rss_mb_by_stage": peaks,
        # what rides to the workers: the views as pickled after the driver's preparation
        "broadcast_mb": round(sum(len(pickle.dumps(_prepared(v))) for v in views) / 2**20, 2),
        "pair_masks": {v.name: "on_demand" if v.on_demand else "stored" for v in views},
        # the default model's directory against issue 28's goal: 4 C D float32 bytes per view + D^2
        "model_dir_mb": round(_folder_bytes(runs / "model_default") / 2**20, 1),
        "model_dir_goal_mb": round((len(views) * 4 * args.classes * args.dim * 4 + args.dim ** 2 * 4) / 2**20, 1),
        "mask_dims": {v["name"]: v["mask_dims"] for v in meta["views"]},
        "kernel_ms_per_10k_items": profile,
        **({"tree": tree_facts} if tree_facts else {}),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{n:,} items x {args.dim} dims x {args.classes} classes, {len(VIEWS)} views, {args.master}")
    print(f"{'stage':<12}{'seconds':>10}{'items/s':>12}")
    for k in [k for k in STAGES if k in seconds]:
        print(f"{k:<12}{seconds[k]:>10.2f}{result['items_per_s'][k]:>12,}")
    for k, v in result["ratios"].items():
        print(f"{k:<18}{v:>8.3f}")
    print(f"peak Python worker RSS {result['peak_rss_mb']} MB; broadcast {result['broadcast_mb']} MB; "
          f"model dir {result['model_dir_mb']} MB (goal {result['model_dir_goal_mb']} MB)")
    print(f"kernel ms per 10k items: {json.dumps(profile)}")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
