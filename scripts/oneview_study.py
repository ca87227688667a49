"""Issue 26, one view: label-free statistics of self-training against its gain over base (numpy).

For every view of the chosen catalogs (a two-view catalog gives two one-view problems), on every item
as the driver's sample: base, self-training run until its targets repeat (core/rounds.train_until_repeat
with selftrain_round), the halves' reproducibility (as fit_selftrain computes it) and candidate checks.
Prints one JSON line per (catalog, view).

CLI: PAIRSPARK_SRC=DIR .venv/bin/python scripts/oneview_study.py [--tag choose] [--catalogs a,b] [--skip a,b] --out FILE
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import study  # noqa: E402,F401
import catalogs as cats  # noqa: E402
try:
    from pairspark.core import rounds as M  # noqa: E402
except ImportError:  # a PAIRSPARK_SRC checkout from before core/rounds.py
    from pairspark.core import methods as M  # noqa: E402
from pairspark.core.cosine import unit_rows64  # noqa: E402
try:
    from pairspark.core.targets import margin_threshold, top_margin  # noqa: E402
except ImportError:  # a PAIRSPARK_SRC checkout from before core/targets.py
    from pairspark.core.scorers import margin_threshold, top_margin  # noqa: E402


def one(cat, v):
    x = unit_rows64(cat.views[v])
    cos = x @ np.asarray(cat.prompts[v], np.float32).astype(np.float64).T
    truth = np.array([cat.class_ids.index(l) if l in cat.class_ids else -1 for l in cat.labels])
    base = cos.argmax(axis=1)
    margin = top_margin(cos)
    thr = margin_threshold(margin, 0.3)
    none = np.full(len(x), -1)
    trained = M.train_until_repeat([v], {v: x}, {v: cos}, none, [thr], M.selftrain_round, 0.3)
    st = trained.model[v].predict(x, cos)
    rows = len(x)
    rng = np.random.default_rng(M.SELFTRAIN_SEED)
    reps, agree_halves = [], []
    for _ in range(M.SELFTRAIN_SPLITS):
        order = rng.permutation(rows)
        halves = []
        for part in (order[: rows // 2], order[rows // 2:]):
            try:
                h = M.train_until_repeat([v], {v: x[part]}, {v: cos[part]}, none[part],
                                         [margin_threshold(top_margin(cos[part]), 0.3)], M.selftrain_round, 0.3)
            except Exception:  # noqa: BLE001
                break
            halves.append(h.model[v].predict(x, cos))
        if len(halves) == 2:
            reps.append(M.reproducibility(base, *halves))
            agree_halves.append(float(np.mean(halves[0] == halves[1])))
        else:
            reps.append(0.0)
            agree_halves.append(0.0)
    conf = margin >= thr
    top = margin >= np.quantile(margin, 0.7)
    share_b = np.bincount(base, minlength=cat.n_classes) / rows
    share_s = np.bincount(st, minlength=cat.n_classes) / rows
    return {"catalog": cat.name, "view": v, "items": rows, "classes": cat.n_classes,
            "base": float(np.mean(base == truth)), "selftrain": float(np.mean(st == truth)),
            "rep": float(np.median(reps)), "reps": [round(r, 3) for r in reps],
            "agree_halves": float(np.median(agree_halves)),
            "changed": float(np.mean(st != base)), "kept_conf": float(np.mean(st[conf] == base[conf])),
            "kept_top30": float(np.mean(st[top] == base[top])),
            "tv_shares": float(0.5 * np.abs(share_b - share_s).sum()),
            "max_gain_share": float(np.max(share_s - share_b)),
            "base_conf_acc": float(np.mean(base[conf] == truth[conf])), "rounds": trained.rounds}


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--tag")
    p.add_argument("--catalogs")
    p.add_argument("--skip")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    specs = cats.all_catalogs()
    if a.tag:
        specs = [s for s in specs if s.chosen_on == a.tag]
    if a.catalogs:
        specs = [s for s in specs if any(c in s.name for c in a.catalogs.split(","))]
    if a.skip:
        specs = [s for s in specs if not any(c in s.name for c in a.skip.split(","))]
    with a.out.open("a") as f:
        for s in specs:
            cat = s.build()
            for v in cat.view_names:
                r = one(cat, v)
                r["tag"], r["n_views"] = s.chosen_on, s.n_views
                f.write(json.dumps(r) + "\n")
                f.flush()
                print(f"{cat.name}/{v}: base {r['base']:.3f} self {r['selftrain']:.3f} rep {r['rep']:.2f}", file=sys.stderr)


if __name__ == "__main__":
    main()
