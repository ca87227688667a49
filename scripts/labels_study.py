"""Issue 26's study: verified labels, one view and two views against their references (numpy, scripts/study.py).

Per catalog (scripts/catalogs.py) and view:
* no labels: base, the default (cotrain with two views, selftrain with one) and, with two views, the
  simple peers (centroid, gnb, transductive, labelshift) on every item;
* k labels per class (5 label draws, seeds 0..4, scripts/study.draw_verified), on the items NOT drawn:
  base, "LDA on the labels alone" (core/scorers.lda_scorer fitted on the k*C drawn items with the
  product's shrinkage min(1, D/n); a class with no drawn item cannot be answered), the default fitted
  without labels (the same answers, scored on the same items) and the default fitted with the labels.

CLI: PAIRSPARK_SRC=DIR .venv/bin/python scripts/labels_study.py [--tag choose|report] [--families a,b]
     [--catalogs SUBSTR] [--skip SUBSTR] [--labels 5,20] [--seeds 5] [--jobs 2] --json OUT
`report` (a second command) reads one or two such JSON files (before, after) and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import study  # noqa: E402  (puts PAIRSPARK_SRC first on sys.path)
import catalogs as cats  # noqa: E402
from pairspark.core.cosine import unit_rows64  # noqa: E402
from pairspark.core.methods import default_methods  # noqa: E402
from pairspark.core.scorers import LabelStats, lda_scorer  # noqa: E402

PEERS = ("centroid", "gnb", "transductive", "labelshift")


def lda_on_labels(cat, verified) -> dict[str, float]:
    evaluated = verified < 0
    truth = np.array(cat.class_ids, dtype=object)
    out = {}
    for n in cat.view_names:
        x = unit_rows64(cat.views[n])
        stats = LabelStats.from_labels(x, np.maximum(verified, 0), cat.n_classes, verified >= 0, with_scatter=True)
        pred = lda_scorer(stats).predict(x[evaluated], x[evaluated] @ cat.prompts[n].T)
        out[n] = float(np.mean(truth[pred] == cat.labels[evaluated]))
    return out


def run_catalog(job) -> dict:
    spec, labels, seeds = job
    t0 = time.perf_counter()
    cat = spec.build()
    names = cat.view_names
    default = default_methods(len(names))
    methods = default + (PEERS if len(names) == 2 else ())
    r0 = study.fit_and_classify(cat, methods, 0, 0, keep_answers=True)
    truth = np.array(cat.class_ids, dtype=object)
    out = {"catalog": cat.name, "family": spec.family, "tag": spec.chosen_on, "n_items": cat.n_items,
           "n_classes": cat.n_classes, "views": names, "primary": r0["primary"],
           "nolabels": {v: r0["views"][v]["accuracy"] for v in names},
           "facts": {m: {k: f for k, f in fa.items() if k in ("rounds", "period", "views")} for m, fa in r0["method_fits"].items()},
           "labels": {}}
    answers0 = {v: r0["views"][v]["answers"] for v in names}
    base_answers = {v: np.argmax(unit_rows64(cat.views[v]) @ cat.prompts[v].T, axis=1) for v in names}
    for k in labels:
        runs = []
        for seed in range(seeds):
            verified = study.draw_verified(cat, k, seed)
            ev = verified < 0
            r = study.fit_and_classify(cat, default, k, seed, keep_answers=False)
            lda = lda_on_labels(cat, verified)
            runs.append({v: {"base": float(np.mean(truth[base_answers[v][ev]] == cat.labels[ev])),
                             "lda": lda[v],
                             "nolabels": float(np.mean(truth[answers0[v][ev]] == cat.labels[ev])),
                             "labels": r["views"][v]["accuracy"][r["primary"]]} for v in names})
        out["labels"][str(k)] = runs
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"  {cat.name}: {out['seconds']} s", file=sys.stderr, flush=True)
    return out


def collect(argv) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--tag", choices=("choose", "report"))
    p.add_argument("--families")
    p.add_argument("--catalogs", help="comma list of substrings")
    p.add_argument("--skip", help="comma list of substrings to leave out")
    p.add_argument("--views", type=int, help="only catalogs with this many views")
    p.add_argument("--labels", default="5,20")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--json", type=Path, required=True)
    a = p.parse_args(argv)
    specs = cats.all_catalogs()
    if a.tag:
        specs = [s for s in specs if s.chosen_on == a.tag]
    if a.families:
        specs = [s for s in specs if s.family in a.families.split(",")]
    if a.catalogs:
        specs = [s for s in specs if any(c in s.name for c in a.catalogs.split(","))]
    if a.skip:
        specs = [s for s in specs if not any(c in s.name for c in a.skip.split(","))]
    if a.views:
        specs = [s for s in specs if s.n_views == a.views]
    labels = [int(x) for x in a.labels.split(",") if x and int(x) > 0]
    jobs = [(s, labels, a.seeds) for s in specs]
    import pairspark
    print(f"pairspark from {pairspark.__file__}; {len(jobs)} catalogs", file=sys.stderr)
    if a.jobs > 1:
        import multiprocessing
        with multiprocessing.get_context("fork").Pool(a.jobs) as pool:
            results = list(pool.imap(run_catalog, jobs))
    else:
        results = [run_catalog(j) for j in jobs]
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(results, indent=0))
    return 0


# ---- report ----

def _rows(results, k):
    """(catalog, family, tag, view, dict of per-seed lists)"""
    for r in results:
        for v in r["views"]:
            runs = r["labels"].get(str(k), [])
            if runs:
                yield r, v, {key: [x[v][key] for x in runs] for key in runs[0][v]}


def label_table(results, k, before=None):
    bmap = {(r["catalog"]): r for r in (before or [])}
    lines = [f"\nk = {k} labels per class (mean / worst over draws, accuracy x100 on the unlabelled items; "
             "ref = max(base, LDA, no labels) per draw)",
             "| catalog | tag | view | base | LDA labels | default no labels | " + ("before | " if before else "")
             + "default labels | - ref (mean) | worst - ref |", "|---|---|---|---|---|---|" + ("---|" if before else "") + "---|---|---|"]
    stats = {}
    for r, v, d in _rows(results, k):
        ref = [max(b, l, n) for b, l, n in zip(d["base"], d["lda"], d["nolabels"])]
        gap = [x - y for x, y in zip(d["labels"], ref)]
        f = lambda xs: f"{100 * np.mean(xs):.1f} / {100 * min(xs):.1f}"
        bcol = ""
        if before and r["catalog"] in bmap and str(k) in bmap[r["catalog"]]["labels"]:
            bl = [x[v]["labels"] for x in bmap[r["catalog"]]["labels"][str(k)]]
            bcol = f"{f(bl)} | "
        elif before:
            bcol = "- | "
        lines.append(f"| {r['catalog']} | {r['tag']} | {v} | {f(d['base'])} | {f(d['lda'])} | {f(d['nolabels'])} | {bcol}"
                     f"{f(d['labels'])} | {100 * np.mean(gap):+.1f} | {100 * min(gap):+.1f} |")
        stats.setdefault(r["tag"], []).append((np.mean(gap), min(gap), np.mean(d["labels"]) - np.mean(ref)))
    for tag, g in stats.items():
        lines.append(f"- {tag}: {len(g)} views, mean (default - ref) {100 * np.mean([x[0] for x in g]):+.2f} points, "
                     f"views with mean below ref - 0.5: {sum(x[0] < -0.005 for x in g)}, worst mean {100 * min(x[0] for x in g):+.1f}, "
                     f"worst draw {100 * min(x[1] for x in g):+.1f}")
    return lines


def nolabel_table(results, before=None):
    bmap = {r["catalog"]: r for r in (before or [])}
    lines = ["\nno labels, accuracy x100 on every item: default vs base (one view); vs base and the best simple peer (two views)",
             "| catalog | tag | view | base | best peer | " + ("before | " if before else "") + "default | - base | - best peer |",
             "|---|---|---|---|---|" + ("---|" if before else "") + "---|---|---|"]
    stats = {}
    for r in results:
        for v in r["views"]:
            a = r["nolabels"][v]
            prim = r["primary"]
            peers = {m: a[m] for m in PEERS if m in a}
            best = max(peers.items(), key=lambda kv: kv[1]) if peers else None
            bcol = ""
            if before:
                b = bmap.get(r["catalog"])
                bcol = f"{100 * b['nolabels'][v][b['primary']]:.1f} | " if b else "- | "
            lines.append(f"| {r['catalog']} | {r['tag']} | {v} | {100 * a['base']:.1f} | "
                         + (f"{100 * best[1]:.1f} {best[0]} | " if best else "- | ") + bcol
                         + f"{100 * a[prim]:.1f} | {100 * (a[prim] - a['base']):+.1f} | "
                         + (f"{100 * (a[prim] - best[1]):+.1f} |" if best else "- |"))
            key = (r["tag"], len(r["views"]))
            stats.setdefault(key, []).append((a[prim] - a["base"], (a[prim] - best[1]) if best else None))
    for (tag, nv), g in sorted(stats.items()):
        gb = [x[0] for x in g]
        gp = [x[1] for x in g if x[1] is not None]
        lines.append(f"- {tag}, {nv} view(s): {len(g)} views, mean - base {100 * np.mean(gb):+.2f}, worst {100 * min(gb):+.1f}, "
                     f"below base - 0.5: {sum(x < -0.005 for x in gb)}"
                     + (f"; mean - best peer {100 * np.mean(gp):+.2f}, worst {100 * min(gp):+.1f}, below peer - 0.5: "
                        f"{sum(x < -0.005 for x in gp)}" if gp else ""))
    return lines


def report(argv) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("after", type=Path)
    p.add_argument("--before", type=Path)
    p.add_argument("--labels", default="5,20")
    p.add_argument("--only", choices=("labels", "nolabels"))
    a = p.parse_args(argv)
    after = json.loads(a.after.read_text())
    before = json.loads(a.before.read_text()) if a.before else None
    lines = []
    if a.only != "labels":
        lines += nolabel_table(after, before)
    if a.only != "nolabels":
        for k in a.labels.split(","):
            lines += label_table(after, int(k), before)
    print("\n".join(lines))
    return 0




def family_table(after, before, k):
    """Per (family, tag): mean over views of base, LDA, default without labels, default with labels
    (before, after), and the worst view's (default - ref) and the views below ref - 0.5."""
    bmap = {r["catalog"]: r for r in before or []}
    groups = {}
    for r, v, d in _rows(after, k):
        ref = [max(b, l, n) for b, l, n in zip(d["base"], d["lda"], d["nolabels"])]
        b = bmap.get(r["catalog"])
        bl = [x[v]["labels"] for x in b["labels"][str(k)]] if b and str(k) in b["labels"] else None
        for key in ((r["family"], r["tag"]), ("ALL", r["tag"])):
            groups.setdefault(key, []).append((np.mean(d["base"]), np.mean(d["lda"]), np.mean(d["nolabels"]),
                                               np.mean(bl) if bl else np.nan, np.mean(d["labels"]), np.mean(ref),
                                               np.mean(bl) - np.mean(ref) if bl else np.nan, np.mean(d["labels"]) - np.mean(ref)))
    lines = [f"\nk = {k}: per family, mean over views (x100); gap = default with labels - max(base, LDA, no labels), "
             "mean over draws per view; 'miss' = views whose gap < -0.5",
             "| family | tag | views | base | LDA labels | no labels | before | after | before gap mean / worst / miss | after gap mean / worst / miss |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (fam, tag), g in sorted(groups.items(), key=lambda kv: (kv[0][0] == "ALL", kv[0])):
        a = np.array(g, float)
        m = lambda i: f"{100 * np.nanmean(a[:, i]):.1f}"
        gap = lambda i: (f"{100 * np.nanmean(a[:, i]):+.1f} / {100 * np.nanmin(a[:, i]):+.1f} / {int(np.sum(a[:, i] < -0.005))}"
                         if np.isfinite(a[:, i]).any() else "-")
        lines.append(f"| {fam} | {tag} | {len(g)} | {m(0)} | {m(1)} | {m(2)} | {m(3)} | {m(4)} | {gap(6)} | {gap(7)} |")
    return lines


def families(argv) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("after", type=Path)
    p.add_argument("--before", type=Path)
    p.add_argument("--labels", default="5,20")
    a = p.parse_args(argv)
    after = json.loads(a.after.read_text())
    before = json.loads(a.before.read_text()) if a.before else None
    lines = []
    for k in a.labels.split(","):
        lines += family_table(after, before, int(k))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "report":
        sys.exit(report(sys.argv[2:]))
    if len(sys.argv) > 1 and sys.argv[1] == "families":
        sys.exit(families(sys.argv[2:]))
    sys.exit(collect(sys.argv[1:]))
