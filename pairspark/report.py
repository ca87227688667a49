"""REPORT_DIR/report.html: one self-contained page (figures embedded as PNG data URIs) from the
metrics.json content, the top suspected annotation errors and, when given, the changes since the
previous run. No Spark here: evaluate collects what the page shows."""

from __future__ import annotations

import base64
import html
import io

import numpy as np

from pairspark.core.metrics import confusion_of

SUSPECTS_SHOWN = 20
# A figure shows at most this many classes (the largest); a taxonomy of thousands would be an
# unreadable picture of hundreds of MB. The per-class table lists every class that occurs.
FIGURE_CLASSES_MAX = 50


def _largest(sizes: np.ndarray, limit: int = FIGURE_CLASSES_MAX) -> np.ndarray:
    """Indices of the `limit` largest sizes, in their original order (ties to the earlier)."""
    if len(sizes) <= limit:
        return np.arange(len(sizes))
    return np.sort(np.argsort(-np.asarray(sizes), kind="stable")[:limit])


def _png_bytes(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buffer.getvalue()


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _png(fig) -> str:
    return _data_uri(_png_bytes(fig))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display: render to memory
    import matplotlib.pyplot as plt

    return plt


def confusion_png(metrics: dict, title: str, reference: str, predicted: str) -> str:
    """A confusion matrix as a PNG data URI: rows the reference, columns the prediction, classes
    that occur in neither left out (a taxonomy entry nobody has); beyond FIGURE_CLASSES_MAX that
    occur, the largest (by items in either role)."""
    plt = _pyplot()
    confusion, names = confusion_of(metrics)
    shown_classes = _largest(confusion.sum(axis=0) + confusion.sum(axis=1))
    if len(shown_classes) < len(names):
        title = f"{title} ({len(shown_classes)} largest of {len(names)} classes)"
    confusion = confusion[np.ix_(shown_classes, shown_classes)]
    names = [names[i] for i in shown_classes]
    size = max(4.0, 0.32 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    shown = np.log1p(confusion)
    image = ax.imshow(shown, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel(predicted)
    ax.set_ylabel(reference)
    ax.set_title(title, fontsize=10)
    if len(names) <= 25:
        for i in range(len(names)):
            for j in range(len(names)):
                if confusion[i, j]:
                    ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=6,
                            color="white" if shown[i, j] > shown.max() / 2 else "black")
    fig.colorbar(image, ax=ax, fraction=0.04, label="log(1 + items)")
    return _png(fig)


def class_shift_png(counts: dict[str, dict[str, int]], base: str, primary: str, view: str) -> str:
    plt = _pyplot()
    classes = sorted(set(counts.get(base, {})) | set(counts.get(primary, {})))
    before = np.array([counts.get(base, {}).get(c, 0) for c in classes])
    after = np.array([counts.get(primary, {}).get(c, 0) for c in classes])
    shown = _largest(before + after)
    title = f"{view}: class sizes, {base} vs {primary}"
    if len(shown) < len(classes):
        title += f" ({len(shown)} largest of {len(classes)})"
    classes, before, after = [classes[i] for i in shown], before[shown], after[shown]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.35 * len(classes) + 2), 3.5))
    positions = np.arange(len(classes))
    ax.bar(positions - 0.2, before, width=0.4, label=base)
    ax.bar(positions + 0.2, after, width=0.4, label=primary)
    ax.set_xticks(positions, classes, rotation=90, fontsize=7)
    ax.set_ylabel("items")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return _png(fig)


def reliability_png(view: str, calibration: dict) -> bytes:
    """Predicted confidence vs observed accuracy per bin (bar width = the bin, the diagonal is
    perfect calibration), with the items per bin below."""
    plt = _pyplot()
    table = calibration["reliability"]
    bins = len(table["items"])
    edges = np.linspace(0, 1, bins + 1)
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(4.2, 4.6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    accuracy = [a if a is not None else 0.0 for a in table["accuracy"]]
    ax.bar(edges[:-1], accuracy, width=1 / bins, align="edge", edgecolor="k", linewidth=0.4, label="accuracy")
    confidence = [(c if c is not None else np.nan) for c in table["confidence"]]
    ax.plot(confidence, [a if n else np.nan for a, n in zip(table["accuracy"], table["items"])], "o", ms=3, color="C1",
            label="(mean confidence, accuracy)")
    ax.plot([0, 1], [0, 1], "--", color="gray", linewidth=0.8)
    ax.set_ylabel("accuracy")
    ax.set_title(f"{view}: reliability (ECE {calibration['ece']:.3f})", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    hist.bar(edges[:-1], table["items"], width=1 / bins, align="edge", edgecolor="k", linewidth=0.4, color="C2")
    hist.set_xlabel("confidence")
    hist.set_ylabel("items")
    hist.set_yscale("symlog")
    return _png_bytes(fig)


def coverage_png(calibration: dict[str, dict]) -> bytes:
    """Accuracy of the items kept vs the share kept, keeping the most confident first (one point
    per bin edge, from the reliability tables)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 3.4))
    for view, cal in calibration.items():
        table = cal["reliability"]
        n = np.asarray(table["items"], np.float64)
        right = np.asarray([a * k if k else 0.0 for a, k in zip(table["accuracy"], table["items"])])
        kept, correct = np.cumsum(n[::-1]), np.cumsum(right[::-1])
        has = kept > 0
        ax.plot(kept[has] / n.sum(), correct[has] / kept[has], "o-", ms=3, label=view)
    ax.set_xlabel("coverage (share of items at or above a confidence)")
    ax.set_ylabel("accuracy of those items")
    ax.set_xlim(0, 1.02)
    ax.set_title("coverage vs accuracy", fontsize=10)
    ax.legend(fontsize=8)
    return _png_bytes(fig)


def histogram_png(view: str, confidence: dict) -> bytes:
    plt = _pyplot()
    counts = confidence["histogram"]
    edges = np.linspace(0, 1, len(counts) + 1)
    fig, ax = plt.subplots(figsize=(4.2, 2.6))
    ax.bar(edges[:-1], counts, width=1 / len(counts), align="edge", edgecolor="k", linewidth=0.4, color="C2")
    ax.set_xlabel("confidence")
    ax.set_ylabel("items")
    ax.set_title(f"{view}: confidence (no label to check it against)", fontsize=10)
    return _png_bytes(fig)


def confidence_figures(report: dict) -> dict[str, bytes]:
    """The report's confidence figures as PNG files (name -> bytes): a reliability diagram per
    view and the coverage/accuracy curve with a label column, else a confidence histogram per view."""
    if report.get("calibration"):
        figures = {f"reliability_{v}.png": reliability_png(v, c) for v, c in report["calibration"].items()}
        figures["coverage_accuracy.png"] = coverage_png(report["calibration"])
        return figures
    return {f"confidence_{v}.png": histogram_png(v, c) for v, c in report.get("confidence", {}).items()}


def _table(header: list[str], rows: list[list], classes: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f'<table class="{classes}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return html.escape("" if value is None else str(value))


_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:0.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:right}
th{background:#f0f0f0} td:first-child,th:first-child{text-align:left}
img{max-width:100%;margin:0.5em 1em 1em 0;vertical-align:top}
h2{border-bottom:1px solid #ddd;padding-bottom:3px;margin-top:1.6em}
.note{color:#555;font-size:13px}
.warning{color:#8a4b00;background:#fff6e5;padding:6px}
"""


def _no_suspects(report: dict) -> str:
    """What the audit compared when it flagged nothing, or why it could compare nothing."""
    views, label = report["views"], report.get("label_column")
    has_label = bool(label) and report["counts"].get("labelled", 1) > 0
    no_label = f"the label column {label} has no labelled item" if label else "there is no label column"
    if len(views) == 2:
        if has_label:
            return (f"None: the views {views[0]} and {views[1]} agree with each other on every item, and with the label "
                    f"({label}) on every labelled item.")
        return f"None: the views {views[0]} and {views[1]} agree with each other on every item; {no_label}, so no label was compared."
    if has_label:
        return f"None: {views[0]} matches the label ({label}) on every labelled item; no two views were compared with each other."
    return (f"No comparison was possible: the predictions have {len(views)} view{'s' if len(views) > 1 else ''} "
            f"({', '.join(views)}), not two to compare, and {no_label}; an audit needs two views or labels.")


def _confidence_section(report: dict, figures: dict[str, bytes]) -> str:
    primary = report.get("primary_method", "")
    parts = [f"<h2>Confidence ({html.escape(primary)})</h2><p class='note'>NAME_confidence: the calibrated probability "
             "that NAME_class is right (docs/METHOD.md, \"Confidence\").</p>"]
    basis = report.get("confidence_basis")
    if basis:
        parts.append(f"<p>Calibrated on: {html.escape(basis['fitted_on'])}.</p>")
        if basis.get("warning"):
            parts.append(f"<p class='warning'><b>Warning:</b> {html.escape(basis['warning'])}</p>")
    if report.get("review"):
        r = report["review"]
        parts.append(f"<p>Review queue (<code>review/</code>): <b>{r['items']}</b> items; the first view "
                     f"({html.escape(r['primary_view'])}) below confidence {r['below']:g}, views that disagree or a label "
                     "that contradicts them.</p>")
        parts.append(_table(["reason", "items"], [[k, v] for k, v in r["by_reason"].items()]))
    if report.get("calibration"):
        thresholds = list(next(iter(report["selective"].values())))
        rows = []
        for view, cal in report["calibration"].items():
            sel = report["selective"][view]
            rows.append([view, cal["ece"]] + [f"{sel[t]['accuracy']:.4f} / {sel[t]['coverage']:.3f}" if sel[t]["accuracy"] is not None
                                                else f"- / {sel[t]['coverage']:.3f}" for t in thresholds])
        parts.append(_table(["view", f"ECE ({next(iter(report['calibration'].values()))['bins']} bins)"]
                            + [f"accuracy / coverage at confidence >= {t}" for t in thresholds], rows))
    parts.append("<div>" + "".join(f"<img alt='{html.escape(name)}' src='{_data_uri(png)}'>" for name, png in figures.items())
                 + "</div>")
    return "\n".join(parts)


def _tree_section(tree: dict, methods: list[str], primary: str) -> str:
    """Per level of the class tree: each method's accuracy read up from its leaf, the primary's
    back-off (coverage and precision per depth) and the ECE of its path confidence."""
    parts = [f"<h2>Class tree ({tree['nodes']} nodes, {tree['leaves']} leaves, {tree['levels']} levels)</h2>"
             "<p class='note'>Level k: a path's k-th node (level 1: a root). Accuracy at level k is over the items labelled "
             "to level k or deeper; NAME_backoff (the primary's) is the deepest node of the path at least backoffAt likely, "
             "right when it is the label, one of its ancestors, or below a label that stops above the leaves. "
             f"Paths that are their class's path in the tree: "
             + ", ".join(f"{html.escape(v)} {c:.4f}" for v, c in tree["consistent"].items() if c is not None) + ".</p>"]
    levels = [str(k) for k in range(1, tree["levels"] + 1)]
    if tree.get("agreement"):
        parts.append(_table(["agreement between the views"] + [f"level {k}" for k in levels],
                            [[m] + [tree["agreement"][m][k] for k in levels] for m in methods]))
    for view, by_method in tree.get("vs_label", {}).items():
        rows = [[m + (" (primary)" if m == primary else "")] + [by_method[m]["by_level"][k]["accuracy"] for k in levels]
                + [by_method[m]["hierarchical_f1"]] for m in methods]
        back = tree["backoff"][view]["by_depth"]
        rows.append(["back-off: coverage / precision"] + [f"{back[k]['coverage']:.3f} / " + ("-" if back[k]["precision"] is None
                                                          else f"{back[k]['precision']:.4f}") for k in levels]
                    + [f"none {tree['backoff'][view]['none']:.3f}"])
        rows.append(["ECE of the path confidence"] + [tree["calibration"][view][k]["ece"] for k in levels] + [""])
        parts.append(f"<h3>{html.escape(view)} against the label</h3>"
                     + _table(["method"] + [f"level {k}" for k in levels] + ["hierarchical F1"], rows))
    return "\n".join(parts)


def _candidates_section(candidates: dict) -> str:
    """The candidate rule's recall: how often the true class is among the classes an item plays."""
    k = candidates["bracket"]
    parts = [f"<h2>Candidates</h2><p class='note'>Each item's tournament plays among its {k} best classes by base "
             "cosine (--candidates); an answer can be right only when the true class is among them. Recall: the share "
             "of labelled items whose label ranks within the first K classes by base cosine"]
    if "unavailable" in candidates:
        return parts[0] + f".</p><p>No figure: {html.escape(candidates['unavailable'])}.</p>"
    parts[0] += f" ({candidates['items']} labelled items, a fixed draw).</p>"
    views = candidates["views"]
    ks = list(next(iter(views.values()))["recall"])
    parts.append(_table(["view", f"recall at K = {k} (used)"] + [f"K = {x}" for x in ks] + ["labels not among the classes"],
                        [[v, c["at_bracket"]] + [c["recall"][x] for x in ks] + [c["labels_not_classes"]] for v, c in views.items()]))
    return "\n".join(parts)


def render_report(report: dict, suspects: list[dict], class_counts: dict, changes: dict | None = None,
                  figures: dict[str, bytes] | None = None) -> str:
    """The page as a string. `report`: metrics.json content; `suspects`: audit rows (dicts);
    `class_counts`: {view: {method: {class: items}}}; `changes`: diff summary or None;
    `figures`: confidence_figures(report), when already drawn."""
    views, methods = report["views"], report["methods"]
    primary = report.get("primary_method", methods[0])
    counts = report["counts"]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>pairspark report</title><style>{_STYLE}</style></head><body>",
             "<h1>pairspark report</h1>",
             f"<p class='note'>Predictions {html.escape(str(report.get('predictions', '')))}, created {html.escape(str(report.get('created_at', '')))}. "
             f"Primary method (NAME_class): <b>{html.escape(primary)}</b>.</p>"]

    parts.append("<h2>Summary</h2>")
    if counts.get("verified_excluded"):
        parts.append(f"<p class='note'>{counts['verified_excluded']} items carry a verified label (--labels): the model "
                     "trained on them, so every metric below is computed on the other items only.</p>")
    count_rows = [[k, v] for k, v in counts.items() if not isinstance(v, dict)]
    count_rows += [[f"quarantined: {reason}", n] for reason, n in counts.get("quarantined_by_reason", {}).items()]
    parts.append(_table(["count", "items"], count_rows))
    header = ["method"]
    if "agreement" in report:
        header += [f"agreement weighted F1 ({report['agreement']['predicted_view']} vs {report['agreement']['reference_view']})", "agreement macro F1"]
    for view in views if "vs_label" in report else []:
        header += [f"{view} accuracy", f"{view} weighted F1", f"{view} macro F1"]
    rows = []
    for method in methods:
        row = [method + (" (primary)" if method == primary else "")]
        if "agreement" in report:
            row += [report["agreement"][method]["weighted_f1"], report["agreement"][method]["macro_f1"]]
        for view in views if "vs_label" in report else []:
            m = report["vs_label"][view][method]
            row += [m["accuracy"], m["weighted_f1"], m["macro_f1"]]
        rows.append(row)
    parts.append(_table(header, rows))

    if report.get("candidates"):
        parts.append(_candidates_section(report["candidates"]))
    if report.get("tree"):
        parts.append(_tree_section(report["tree"], methods, primary))

    if report.get("binary"):
        parts.append("<h2>Binary groups (in the group vs not)</h2>")
        for group, by_method in report["binary"].items():
            header = ["method", "agreement weighted F1"] + [f"{v} weighted F1 vs label" for v in views if "vs_label" in report]
            rows = []
            for method in methods:
                m = by_method[method]
                rows.append([method, m.get("weighted_f1")] + [m["vs_label"][v]["weighted_f1"] for v in views if "vs_label" in m])
            parts.append(f"<h3>{html.escape(group)}: {html.escape(', '.join(by_method['classes']))}</h3>" + _table(header, rows))

    parts.append("<h2>Confusion matrices</h2><div>")
    if "agreement" in report:
        a = report["agreement"]
        parts.append(f"<img alt='confusion {a['predicted_view']} vs {a['reference_view']}' src='"
                     + confusion_png(a[primary], f"{primary}: {a['predicted_view']} vs {a['reference_view']}",
                                     a["reference_view"], a["predicted_view"]) + "'>")
    for view in views if "vs_label" in report else []:
        parts.append(f"<img alt='confusion {view} vs label' src='"
                     + confusion_png(report["vs_label"][view][primary], f"{primary}: {view} vs label", "label", view) + "'>")
    parts.append("</div>")

    parts.append(f"<h2>Per class ({html.escape(primary)})</h2>")
    for view in views:
        if "vs_label" in report:
            per_class, what = report["vs_label"][view][primary]["per_class"], f"{view} against the label"
        elif "agreement" in report and view == report["agreement"]["predicted_view"]:
            per_class, what = report["agreement"][primary]["per_class"], f"{view} against {report['agreement']['reference_view']}"
        else:
            continue
        rows = [[c, m["precision"], m["recall"], m["f1"], m["support"], m["predicted"]]
                for c, m in per_class.items() if m["support"] or m["predicted"]]
        parts.append(f"<h3>{html.escape(what)}</h3>" + _table(["class", "precision", "recall", "F1", "support", "predicted"], rows))

    if "base" in methods and primary != "base":
        parts.append(f"<h2>Class sizes: base vs {html.escape(primary)}</h2><div>")
        for view in views:
            parts.append(f"<img alt='class sizes {view}' src='" + class_shift_png(class_counts.get(view, {}), "base", primary, view) + "'>")
        parts.append("</div>")

    if report.get("confidence"):
        parts.append(_confidence_section(report, confidence_figures(report) if figures is None else figures))

    parts.append(f"<h2>Top suspected annotation errors</h2><p class='note'>Ranked by the audit score "
                 f"(README.md, \"Audit\"): {SUSPECTS_SHOWN} shown; <code>pairspark audit</code> lists them all.</p>")
    if suspects:
        header = list(suspects[0].keys())
        parts.append(_table(header, [[s[k] for k in header] for s in suspects[:SUSPECTS_SHOWN]], "suspects"))
    else:
        parts.append(f"<p>{html.escape(_no_suspects(report))}</p>")

    if changes:
        parts.append("<h2>Changes since the previous run</h2>")
        parts.append(_table(["items compared", "added", "removed"] + [f"{v} changed" for v in changes["changed"]],
                            [[changes["compared"], changes["added"], changes["removed"], *changes["changed"].values()]]))
        parts.append(_table(["view", "old class", "new class", "items"],
                            [[p["view"], p["old_class"], p["new_class"], p["count"]] for p in changes["by_pair"][:50]]))
    parts.append("</body></html>")
    return "\n".join(parts)
