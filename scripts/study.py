"""A Spark-free research harness: pairspark's fit + classify in numpy on many catalogs (scripts/catalogs.py),
with accuracy and confidence calibration per view.

`fit_and_classify` replays spark/fit.fit_views and the classify transform with the product's own
numpy code (pairspark/core/*), step by step:

1. class table: the catalog's unit prompts, sorted by class_id and stored as float32 (core/batches.ClassTable);
2. the driver's sample (spark/passes.draw_sample): every item when there are at most COTRAIN_SAMPLE
   (10,000) of them, as in every catalog here; above that the same hash draw as the product
   (xxhash64(seed + 1, item_id) mod 2^30 below fraction * 2^30, plus every verified item);
3. margin thresholds (spark/fit.margin_thresholds): the min_margin quantile of the 4,096-bin
   histogram of the drawn items' base margins, per view;
4. the iterative methods through REGISTRY[m].fit over `ArrayPasses` (core/fitting.Passes over the
   in-memory items, verified rows included), those that need the confident moments last;
5. confident moments per view (spark/passes.run_pass): ClassMoments of the items that are confident
   (core/cosine.confident) or verified, each in its verified class if it has one, else its base class;
6. core/model.fit_view per view, then core/confidence.calibrate on the sample as fit_views calls it;
7. core/classify.classify of every item (bracket keys = xxhash64(seed, item_id), as the JVM computes them),
   margin_of = the primary method; confidences rounded to float32, as the predictions store them.

Verified labels: `labels_per_class` items of each class of the class table, drawn with `label_seed`
as scripts/compare.py draw_labels draws them; every metric leaves them out (as evaluate does). An
item is right only when its answer equals its label (a label outside the class table is always wrong).

CLI: .venv/bin/python scripts/study.py [--quick] [--families a,b] [--catalogs SUBSTR] [--labels 0,5,20]
     [--seeds 5] [--methods m1,m2] [--jobs 2] [--json OUT]
prints one Markdown table: per catalog and view, base and default accuracy (mean (worst) over the
label seeds when labels are drawn), ECE / AUROC / accuracy at confidence >= 0.9 (coverage) of the
primary method, and the seconds taken.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
# PAIRSPARK_SRC: import pairspark from another checkout (e.g. `git archive HEAD pairspark | tar -x -C DIR`
# to measure a committed version while the working tree changes, or to compare two versions of a rule)
for p in (str(ROOT / "scripts"), os.environ.get("PAIRSPARK_SRC") or str(ROOT)):
    if p not in sys.path:
        sys.path.insert(0, p)

from pairspark.core.calibration import auroc, expected_calibration_error, reliability, selective  # noqa: E402
from pairspark.core.cosine import base_assign, confident, margin_histogram, margin_quantile, unit_rows64  # noqa: E402
from pairspark.core.masks import MaskSettings  # noqa: E402
from pairspark.core.methods import REGISTRY, default_methods, iterative, primary_method  # noqa: E402
from pairspark.core.model import fit_view  # noqa: E402
from pairspark.core.stats import ClassMoments  # noqa: E402
from pairspark.core.tournament import bracket_keys  # noqa: E402

try:
    from pairspark.core.fitting import FitContext  # noqa: E402
except ImportError:  # a PAIRSPARK_SRC checkout from before core/fitting.py: FitContext was in core/methods.py
    from pairspark.core.methods import FitContext  # noqa: E402
try:
    from pairspark.core.classify import classify  # noqa: E402
    from pairspark.core.confidence import calibrate  # noqa: E402
    from pairspark.core.methods import prepare  # noqa: E402
except ImportError:  # a PAIRSPARK_SRC checkout from before core/classify.py: ViewModel classified itself
    from pairspark.core.model import calibrate  # noqa: E402

    def prepare(view, methods):
        return view.prepare(methods)

    def classify(view, *args, **kwargs):
        return view.classify(*args, **kwargs)

import catalogs as cats  # noqa: E402

# spark/passes.COTRAIN_SAMPLE and spark/fit.DEFAULT_CONFIDENT_SHARE (not imported: they live in
# modules that import pyspark)
COTRAIN_SAMPLE = 10_000
DEFAULT_CONFIDENT_SHARE = 0.3
# the Params defaults (pairspark/params.py _setDefault)
DEFAULTS = {"min_margin": "30%", "min_cosine": -1.0, "mask": MaskSettings(), "candidates": "auto", "top_k": 3, "seed": 0}
THRESHOLD = 0.9  # the selective accuracy reported


def margin_rule(raw) -> tuple[float, bool]:
    """params.MarginRule.parse: "30%" -> (0.3, True); "0.05" -> (0.05, False)."""
    text = str(raw).strip()
    return (float(text[:-1]) / 100.0, True) if text.endswith("%") else (float(text), False)


def drawn_mask(item_ids: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """spark/passes.drawn_mask (the sample's hash draw)."""
    if fraction >= 1:
        return np.ones(len(item_ids), bool)
    keys = bracket_keys(pa.array(list(item_ids), pa.string()), int(seed) + 1).view(np.int64)
    bucket = np.fmod(keys, np.int64(1 << 30))
    bucket = np.where(bucket < 0, bucket + (1 << 30), bucket).astype(np.float64)
    return bucket < fraction * (1 << 30)


def draw_verified(cat: cats.Catalog, per_class: int, seed: int) -> np.ndarray:
    """Per item its verified class index (-1 for none): compare.py draw_labels, `per_class` items of
    each class of the class table that occurs, drawn with one rng over the classes in sorted order."""
    verified = np.full(cat.n_items, -1, np.int64)
    if per_class <= 0:
        return verified
    rng = np.random.default_rng(seed)
    for k, c in enumerate(cat.class_ids):  # class_ids are sorted
        rows = np.flatnonzero(cat.labels == c)
        if len(rows):
            verified[np.sort(rng.choice(rows, min(per_class, len(rows)), replace=False))] = k
    return verified


@dataclass
class Sample:
    rows: np.ndarray  # item rows in the driver's sample (drawn rows plus every verified row)
    drawn: np.ndarray  # per sample row: chosen by the draw
    complete: bool


def draw_sample(item_ids: np.ndarray, verified: np.ndarray, seed: int) -> Sample:
    """spark/passes.draw_sample on valid rows only (every catalog row is valid)."""
    n = len(item_ids)
    fraction = min(1.0, COTRAIN_SAMPLE / max(n, 1))
    drawn = drawn_mask(item_ids, fraction, seed)
    if fraction < 1 and drawn.sum() < COTRAIN_SAMPLE // 2:  # cannot happen without invalid rows
        drawn = drawn_mask(item_ids, min(1.0, COTRAIN_SAMPLE * fraction / max(int(drawn.sum()), 1)), seed)
    rows = np.flatnonzero(drawn | (verified >= 0))
    return Sample(rows, drawn[rows], fraction >= 1)


class ArrayPasses:
    """core/fitting.Passes over in-memory items (spark/passes.SparkPasses without Spark): a pass is
    the labeller over every item at once (Spark sums it per Arrow batch: the same to rounding)."""

    def __init__(self, xs: dict, cosines: dict, bases: dict, verified: np.ndarray, sample: Sample,
                 min_cosine: float, margins: dict, n_classes: dict):
        self.xs, self.cosines, self.bases, self.verified = xs, cosines, bases, verified
        self._sample, self._min_cosine, self._margins, self._n_classes = sample, min_cosine, margins, n_classes
        self.reads = 0
        self._moments = None

    def stats(self, labeller):
        self.reads += 1
        if self._moments is None:  # the moments ride on the first pass (same numbers as their own)
            self._moments = self._confident_moments()
        return labeller(self.xs, self.cosines, self.verified)

    def sample(self):
        rows = self._sample.rows
        if self._sample.complete and len(rows) == len(self.verified):
            return self.xs, self.verified
        return {n: x[rows] for n, x in self.xs.items()}, self.verified[rows]

    def moments(self):
        if self._moments is None:
            self.reads += 1
            self._moments = self._confident_moments()
        return self._moments

    def _confident_moments(self):
        """run_pass's confident rule: confident in the view, or verified (then in its verified class)."""
        out = {}
        is_verified = self.verified >= 0
        for n, base in self.bases.items():
            keep = confident(base, self._min_cosine, self._margins[n]) | is_verified
            labels = np.where(is_verified, self.verified, base.best)
            out[n] = ClassMoments.from_batch(self.xs[n][keep], labels[keep], self._n_classes[n])
        return out, len(self.verified)


def fit_and_classify(cat: cats.Catalog, methods=None, labels_per_class: int = 0, label_seed: int = 0,
                     settings: dict | None = None, keep_answers: bool = True) -> dict:
    """pairspark's fit + classify of `cat` in numpy (see the module docstring), and the metrics.

    methods: default core/methods.default_methods(number of views); the primary (NAME_class) is
    primary_method(methods); base is always classified too. settings: any of DEFAULTS (min_margin
    "30%" or an absolute margin, min_cosine, mask: core/masks.MaskSettings, candidates, top_k, seed).
    labels_per_class / label_seed: verified labels (draw_verified), left out of every metric.
    Returns per view: accuracy of every method, ece, auroc, accuracy_at_0.9, coverage_at_0.9,
    temperatures, and (keep_answers) the primary's answers (class index per item) and confidences;
    plus the fit facts and seconds."""
    start = time.perf_counter()
    s = {**DEFAULTS, **(settings or {})}
    names = cat.view_names
    methods = tuple(methods or default_methods(len(names)))
    for m in methods:
        if REGISTRY[m].min_views > len(names):
            raise ValueError(f"method {m} needs two views")
    primary = primary_method(methods)
    q, is_quantile = margin_rule(s["min_margin"])
    share = q if is_quantile else DEFAULT_CONFIDENT_SHARE
    # the class table as spark/io.load_classes leaves it: float32 unit rows, sorted (Catalog sorts)
    vectors = {n: np.asarray(cat.prompts[n], np.float32) for n in names}
    vec64 = {n: vectors[n].astype(np.float64) for n in names}
    n_classes = {n: cat.n_classes for n in names}
    verified = draw_verified(cat, labels_per_class, label_seed)
    xs = {n: unit_rows64(cat.views[n]) for n in names}
    bases = {n: base_assign(xs[n], vec64[n]) for n in names}
    sample = draw_sample(cat.item_ids, verified, s["seed"])
    # margin thresholds (spark/fit.margin_thresholds): over the drawn rows of the sample
    if not is_quantile:
        margins = {n: q for n in names}
    elif q == 0:
        margins = {n: 0.0 for n in names}
    else:
        margins = {n: margin_quantile(margin_histogram(bases[n].margin[sample.rows][sample.drawn]), q) for n in names}
    passes = ArrayPasses(xs, {n: b.cosines for n, b in bases.items()}, bases, verified, sample, s["min_cosine"],
                         margins, n_classes)
    scorers = {n: {} for n in names}
    method_fits = {}
    loops = iterative(methods)
    bound = len(sample.rows) if sample.complete else cat.n_items

    held_out = {}

    def fit_method(method, context):
        t0 = time.perf_counter()
        result = REGISTRY[method].fit(passes, context)
        if isinstance(result, tuple):  # (scorers, facts): core/methods before its Fit object
            fitted, facts = result
        else:  # core/fitting.Fit
            fitted, facts = result.scorers, result.facts
            held_out[method] = dict(getattr(result, "held_out", {}) or {})
        method_fits[method] = {**facts, "seconds": round(time.perf_counter() - t0, 3)}
        for name, scorer in fitted.items():
            scorers[name][method] = scorer

    for method in (m for m in loops if not REGISTRY[m].needs_moments):
        fit_method(method, FitContext(names, vectors, {}, margins, bound, share))
    moments, valid_items = passes.moments()
    for method in (m for m in loops if REGISTRY[m].needs_moments):
        fit_method(method, FitContext(names, vectors, moments, margins, valid_items, share))
    views = [fit_view(n, f"{n}_embedding", cat.class_ids, vectors[n], moments[n], s["mask"], margins[n], scorers[n])
             for n in names]
    sample_xs, sample_verified = passes.sample()
    # as spark/fit.fit_views calls it (the keywords only where this checkout's calibrate takes them)
    accepted = inspect.signature(calibrate).parameters
    extra = {k: v for k, v in (("candidates", s["candidates"]), ("held_out", held_out)) if k in accepted}
    calibration = calibrate(views, methods, sample_xs, sample_verified, margins, share, **extra)
    fitted = time.perf_counter()

    keys = bracket_keys(pa.array(list(cat.item_ids), pa.string()), s["seed"])
    # base is always classified too (the reference of every table); margin_of stays the primary
    answered = tuple(dict.fromkeys((*methods, "base")))
    evaluated = verified < 0
    labels = cat.labels[evaluated]
    class_ids = np.array(cat.class_ids, dtype=object)
    out_views = {}
    for view in views:
        prepare(view, answered)
        got = classify(view, cat.views[view.name], keys, answered, s["candidates"], margin_of=primary, k=s["top_k"])
        right = {m: class_ids[got[m][evaluated]] == labels for m in answered}
        conf = got["confidence"].astype(np.float32).astype(np.float64)[evaluated]
        correct = right[primary]
        sel = selective(conf, correct, (THRESHOLD,))[f"{THRESHOLD:g}"]
        out_views[view.name] = {
            "accuracy": {m: float(r.mean()) if len(r) else None for m, r in right.items()},
            "ece": expected_calibration_error(reliability(conf, correct)),
            "auroc": auroc(conf, correct),
            "accuracy_at_0.9": sel["accuracy"], "coverage_at_0.9": sel["coverage"],
            "temperatures": dict(view.calibration),
            "confident_items": int(view.moments.count.sum()),
            "margin_threshold": float(margins[view.name]),
        }
        if keep_answers:
            out_views[view.name]["answers"] = got[primary]
            out_views[view.name]["confidence"] = got["confidence"].astype(np.float32)
    done = time.perf_counter()
    return {"catalog": cat.name, "family": cat.family, "tag": cat.meta.get("chosen_on"), "n_items": cat.n_items,
            "n_classes": cat.n_classes, "views": out_views, "methods": list(methods), "primary": primary,
            "labels_per_class": labels_per_class, "label_seed": label_seed, "verified": int((verified >= 0).sum()),
            "evaluated": int(evaluated.sum()), "sample_items": int(len(sample.rows)), "method_fits": method_fits,
            "calibration_source": calibration["fitted_on"], "reads": passes.reads,
            "seconds": {"fit": round(fitted - start, 3), "classify": round(done - fitted, 3), "total": round(done - start, 3)}}


# ---- the CLI ----

def run_spec(job) -> list[dict]:
    """Every (labels, seed) run of one catalog spec; the answers arrays dropped."""
    spec, labels, seeds, methods = job
    t0 = time.perf_counter()
    cat = spec.build()
    built = time.perf_counter() - t0
    out = []
    for k in labels:
        for seed in (range(seeds) if k > 0 else range(1)):
            try:
                r = fit_and_classify(cat, methods, k, seed, keep_answers=False)
            except Exception as exc:  # noqa: BLE001  (one failing catalog must not stop the study)
                print(f"  {spec.name} labels {k} seed {seed}: FAILED {type(exc).__name__}: {exc}", file=sys.stderr)
                continue
            r["build_seconds"] = round(built, 3)
            out.append(r)
    return out


def _fmt(x, digits=3):
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def table(results: list[dict]) -> list[str]:
    """One row per (catalog, view, labels per class): accuracy mean (worst) over label seeds."""
    multi = len({r["labels_per_class"] for r in results}) > 1 or any(r["labels_per_class"] for r in results)
    lines = ["| catalog | family | tag | items | classes | view | " + ("labels | " if multi else "")
             + "base acc | default acc | ECE | AUROC | acc@0.9 (coverage) | s |",
             "|---|---|---|---|---|---|" + ("---|" if multi else "") + "---|---|---|---|---|---|"]
    groups: dict = {}
    for r in results:
        groups.setdefault((r["catalog"], r["labels_per_class"]), []).append(r)
    for (name, k), runs in groups.items():
        first = runs[0]
        for v in first["views"]:
            base = [x["views"][v]["accuracy"]["base"] for x in runs]
            dflt = [x["views"][v]["accuracy"][x["primary"]] for x in runs]

            def acc(values):
                return _fmt(values[0], 4) if len(values) == 1 else f"{_mean(values):.4f} ({min(values):.4f})"

            q = {key: _mean([x["views"][v][key] for x in runs]) for key in ("ece", "auroc", "accuracy_at_0.9", "coverage_at_0.9")}
            secs = _mean([x["seconds"]["total"] for x in runs])
            lines.append(f"| {name} | {first['family']} | {first['tag']} | {first['n_items']} | {first['n_classes']} | {v} | "
                         + (f"{k} | " if multi else "")
                         + f"{acc(base)} | {acc(dflt)} | {_fmt(q['ece'])} | {_fmt(q['auroc'])} | "
                         f"{_fmt(q['accuracy_at_0.9'])} ({_fmt(q['coverage_at_0.9'], 2)}) | {secs:.1f} |")
    return lines


def summary(results: list[dict]) -> list[str]:
    """Per family and tag: mean and worst (default - base) over the views, in points."""
    rows: dict = {}
    for r in results:
        for v, got in r["views"].items():
            gain = got["accuracy"][r["primary"]] - got["accuracy"]["base"]
            for key in ((r["family"], r["labels_per_class"]), ("ALL " + str(r["tag"]), r["labels_per_class"])):
                rows.setdefault(key, []).append((gain, got["ece"]))
    lines = ["", "default - base in points, mean / worst over the (catalog, view, seed) runs; mean ECE:"]
    for (family, k), gains in sorted(rows.items(), key=lambda kv: (kv[0][0].startswith("ALL"), kv[0][1])):
        g = [x[0] for x in gains]
        lines.append(f"- {family} (labels {k}/class): {100 * _mean(g):+.1f} / {100 * min(g):+.1f} over {len(g)}; "
                     f"ECE {_fmt(_mean([x[1] for x in gains]))}")
    return lines


def _progress(got: list[dict]) -> None:
    if got:
        print(f"  {got[0]['catalog']}: {sum(r['seconds']['total'] for r in got):.1f} s", file=sys.stderr, flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="catalogs.all_catalogs(quick=True)")
    parser.add_argument("--families", help="comma list of families (default: every one)")
    parser.add_argument("--catalogs", help="only catalogs whose name contains this")
    parser.add_argument("--tag", choices=("choose", "report"), help="only the catalogs with this chosen_on tag")
    parser.add_argument("--labels", default="0", help="verified labels per class, comma list (default 0)")
    parser.add_argument("--seeds", type=int, default=5, help="label draws per labels value above 0 (default 5)")
    parser.add_argument("--methods", help="comma list (default: default_methods of the catalog's views)")
    parser.add_argument("--jobs", type=int, default=1, help="catalogs run in parallel processes (default 1)")
    parser.add_argument("--json", type=Path, help="write every run's figures here")
    args = parser.parse_args(argv)
    specs = cats.all_catalogs(args.quick)
    if args.families:
        wanted = set(args.families.split(","))
        unknown = wanted - {s.family for s in specs}
        if unknown:
            parser.error(f"unknown families {sorted(unknown)}; known: {sorted({s.family for s in specs})}")
        specs = [s for s in specs if s.family in wanted]
    if args.catalogs:
        specs = [s for s in specs if args.catalogs in s.name]
    if args.tag:
        specs = [s for s in specs if s.chosen_on == args.tag]
    labels = [int(x) for x in args.labels.split(",")]
    methods = tuple(args.methods.split(",")) if args.methods else None
    jobs = [(s, labels, args.seeds, methods if methods is None or all(REGISTRY[m].min_views <= s.n_views for m in methods)
             else tuple(m for m in methods if REGISTRY[m].min_views <= s.n_views)) for s in specs]
    start = time.perf_counter()
    results: list[dict] = []
    if args.jobs > 1:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(args.jobs) as pool:
            for got in pool.imap(run_spec, jobs):
                results += got
                _progress(got)
    else:
        for job in jobs:
            got = run_spec(job)
            results += got
            _progress(got)
    seconds = time.perf_counter() - start
    print("\n".join(table(results)))
    print("\n".join(summary(results)))
    print(f"\n{len(specs)} catalogs, {len(results)} runs, {seconds:.0f} s wall")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"seconds": seconds, "runs": results}, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
