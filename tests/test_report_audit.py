"""report.html (rendered in a real headless Chromium), the audit ranking and the nightly diff."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from pairspark import pipeline
from pairspark.config import View, load_settings
from tests.synthetic import make_catalog, write_catalog

VIEWS = [View("image", "image_embedding"), View("text", "text_embedding")]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def run_dir(spark, tmp_path_factory):
    # noise 1.4: one rightly labelled item (item-000172) sits in another class's region in both views:
    # every answer, learned and zero-shot, names that class, as for a planted error
    items, classes, truth = make_catalog(400, 8, 4, seed=5, noise=1.4)
    # three planted annotation errors: items both views place right with the widest margins
    # (numpy cosines) get another class's label
    margins = []
    for view in ("image_embedding", "text_embedding"):
        x = items[view] / np.linalg.norm(items[view], axis=1, keepdims=True)
        t = classes[view] / np.linalg.norm(classes[view], axis=1, keepdims=True)
        cos = np.sort(x @ t.T, axis=1)
        right = (x @ t.T).argmax(axis=1) == truth
        margins.append(np.where(right, cos[:, -1] - cos[:, -2], -1.0))
    planted = np.argsort(-np.minimum(*margins))[:3]
    labels = list(items["label"])
    for i in planted:
        labels[i] = f"c{(truth[i] + 1) % 4:02d}"
    items["label"] = labels
    items["title"] = [f"title {i}" for i in range(400)]
    folder = tmp_path_factory.mktemp("report")
    items_path, classes_path = write_catalog(folder / "data", items, classes)
    out = folder / "run"
    pipeline.run(spark, items_path, classes_path, VIEWS, str(out), load_settings(), label_col="label", show_cols=["title"])
    return folder, items_path, classes_path, [f"item-{i:06d}" for i in planted], truth


def test_the_report_is_self_contained_and_its_figures_load_in_headless_chromium(run_dir, tmp_path):
    folder, *_ = run_dir
    page = (folder / "run" / "report" / "report.html").read_text()
    assert "<h2>Summary</h2>" in page and "Top suspected annotation errors" in page
    assert not re.search(r"""src=['"](?!data:)""", page), "every figure is embedded"
    figures = len(re.findall(r"<img ", page))
    assert figures == 1 + 2 + 2 + 3  # image vs text, each view vs label, class sizes per view, reliability per view + coverage
    if CHROMIUM is None:
        pytest.skip("no chromium on this machine (scripts/test installs Debian's chromium when it can)")
    # probe appended to a copy: after load, count the images the browser actually decoded
    probe = ("<script>window.addEventListener('load', () => { const ok = [...document.images]"
             ".filter(i => i.complete && i.naturalWidth > 0).length; document.body.setAttribute('data-loaded', ok); });</script>")
    copy = tmp_path / "report.html"
    copy.write_text(page.replace("</body>", probe + "</body>"))
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom", copy.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    assert f'data-loaded="{figures}"' in dom, dom[:500]


def test_metrics_json_carries_class_counts_and_suspects_show_item_columns(run_dir):
    folder, _, _, planted, _ = run_dir
    metrics = json.loads((folder / "run" / "report" / "metrics.json").read_text())
    for view in ("image", "text"):
        for method in metrics["methods"]:
            assert sum(metrics["class_counts"][view][method].values()) == metrics["counts"]["items"]
    page = (folder / "run" / "report" / "report.html").read_text()
    assert f"title {int(planted[0][5:])}" in page  # a planted error, shown with its title
    # no verified labels: the report says what the confidence was calibrated on and how it errs
    basis = metrics["confidence_basis"]
    assert basis["fitted_on"] == "the other view's zero-shot answers" and "overstates" in basis["warning"]
    assert "Calibrated on: the other view&#x27;s zero-shot answers" in page and "<b>Warning:</b> no verified labels" in page


def test_audit_ranks_first_the_items_every_answer_contradicts_and_writes_parquet_and_csv(spark, run_dir, tmp_path):
    """The planted label errors lead, with the one rightly labelled item whose embeddings say
    otherwise in every answer (the audit sees only answers and labels: it lists both for a person);
    items where a zero-shot answer agrees with the label come after them."""
    folder, items_path, _, planted, truth = run_dir
    summary = pipeline.audit(spark, str(folder / "run" / "predictions"), str(tmp_path / "audit"), show_cols=["title"])
    flagged = pd.read_parquet(tmp_path / "audit" / "suspects")
    csv = pd.read_csv(tmp_path / "audit" / "suspects.csv")
    assert summary["flagged"] == len(flagged) == len(csv) and sum(summary["by_kind"].values()) == len(flagged)
    assert list(csv["item_id"]) == list(flagged.sort_values(["score", "item_id"], ascending=[False, True])["item_id"])
    pred = pd.read_parquet(folder / "run" / "predictions").set_index("item_id")
    answers = ["image_class", "text_class", "image_base", "text_base"]
    unanimous = [i for i in pred.index if pred.loc[i, answers].nunique() == 1 and pred.loc[i, "image_class"] != pred.loc[i, "label"]]
    assert set(planted) <= set(unanimous) and len(unanimous) == 4
    (model_error,) = set(unanimous) - set(planted)  # rightly labelled: its true class is its label
    assert pred.loc[model_error, "label"] == f"c{truth[int(model_error[5:])]:02d}"
    assert set(csv["item_id"].head(4)) == set(unanimous) and (csv["score"].head(4) > 2).all()
    assert (csv["kind"].head(4) == "label_contradicted_by_both_views").all()
    rest = csv.iloc[4:]
    assert (rest["score"] < 2).all() and (rest.loc[rest["kind"] == "label_contradicted_by_both_views", "score"] > 1).all()
    assert "title" in csv.columns and (tmp_path / "audit" / "_SUCCESS").exists()


def test_diff_and_run_previous_list_the_changed_items(spark, run_dir, tmp_path):
    folder, items_path, classes_path, *_ = run_dir
    # tomorrow: another seed and the pairwise primary -> some items change class
    settings = load_settings(None, {"methods": "base,pairwise", "seed": 9})
    out = tmp_path / "tomorrow"
    report = pipeline.run(spark, items_path, classes_path, VIEWS, str(out), settings, label_col="label",
                          previous=str(folder / "run" / "predictions"))
    changes = pd.read_parquet(out / "changes" / "changes")
    summary = json.loads((out / "changes" / "summary.json").read_text())
    old = pd.read_parquet(folder / "run" / "predictions").set_index("item_id")
    new = pd.read_parquet(out / "predictions").set_index("item_id")
    for view in ("image", "text"):
        differs = old[f"{view}_class"] != new.loc[old.index, f"{view}_class"]
        assert summary["changed"][view] == int(differs.sum()) == int((changes["view"] == view).sum())
        mine = changes[changes["view"] == view].set_index("item_id")
        assert (mine["old_class"] == old.loc[mine.index, f"{view}_class"]).all()
        assert (mine["new_class"] == new.loc[mine.index, f"{view}_class"]).all()
    assert summary["compared"] == 400 and summary["added"] == summary["removed"] == 0
    assert sum(p["count"] for p in summary["by_pair"]) == len(changes) > 0
    assert report["changes"]["compared"] == 400
    assert "Changes since the previous run" in (out / "report" / "report.html").read_text()


def _weighted_f1(reference: pd.Series, predicted: pd.Series) -> float:
    total = 0.0
    for c in set(reference) | set(predicted):
        tp = ((reference == c) & (predicted == c)).sum()
        precision = tp / max((predicted == c).sum(), 1)
        recall = tp / max((reference == c).sum(), 1)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        total += f1 * (reference == c).sum()
    return total / len(reference)


def test_binary_groups_collapse_every_method_and_view(spark, run_dir, tmp_path):
    folder, *_ = run_dir
    report = pipeline.evaluate(spark, str(folder / "run" / "predictions"), str(tmp_path / "rep"), binary="low=c00,c01;top=c03")
    pred = pd.read_parquet(folder / "run" / "predictions")
    for group, members in (("low", ["c00", "c01"]), ("top", ["c03"])):
        def collapse(s):
            return s.map(lambda c: group if c in members else f"not_{group}")
        for method in report["methods"]:
            got = report["binary"][group][method]
            assert got["weighted_f1"] == pytest.approx(_weighted_f1(collapse(pred[f"text_{method}"]), collapse(pred[f"image_{method}"])), abs=1e-12)
            for view in ("image", "text"):
                want = _weighted_f1(collapse(pred["label"]), collapse(pred[f"{view}_{method}"]))
                assert got["vs_label"][view]["weighted_f1"] == pytest.approx(want, abs=1e-12)
    assert "Binary groups" in (tmp_path / "rep" / "report.html").read_text()
    from pairspark.errors import UsageError

    with pytest.raises(UsageError, match="not in the class table"):
        pipeline.evaluate(spark, str(folder / "run" / "predictions"), str(tmp_path / "rep2"), binary="x=nope")


def test_figures_of_a_large_taxonomy_show_its_largest_classes(monkeypatch):
    """Above FIGURE_CLASSES_MAX classes that occur, the figures show the largest and say so; the
    figure reads the cells form of metrics.json as the dense form."""
    from pairspark import report as report_module
    from pairspark.core.metrics import metrics_from_cells

    rng = np.random.default_rng(0)
    classes = [f"k{i}" for i in range(600)]
    sizes = rng.integers(1, 30, 600)
    cells = {(c, classes[(i + 1) % 600] if i % 7 == 0 else c): int(n) for i, (c, n) in enumerate(zip(classes, sizes))}
    metrics = metrics_from_cells(cells, classes)
    assert "confusion_cells" in metrics
    drawn = {}

    def fake_png(fig):
        ax = fig.axes[0]
        drawn["ticks"] = [t.get_text() for t in ax.get_yticklabels()]
        drawn["title"] = ax.get_title()
        return "data:"

    monkeypatch.setattr(report_module, "_png", fake_png)
    report_module.confusion_png(metrics, "cotrain: image vs label", "label", "image")
    assert len(drawn["ticks"]) == report_module.FIGURE_CLASSES_MAX
    assert drawn["title"].endswith(f"({report_module.FIGURE_CLASSES_MAX} largest of 600 classes)")
    role_sizes = {c: 0 for c in classes}
    for (ref, pred), n in cells.items():
        role_sizes[ref] += n
        role_sizes[pred] += n
    smallest_shown = min(role_sizes[c] for c in drawn["ticks"])
    assert all(role_sizes[c] <= smallest_shown for c in classes if c not in drawn["ticks"])
    report_module.class_shift_png({"base": dict(zip(classes, sizes.tolist())), "cotrain": {}}, "base", "cotrain", "image")
    assert drawn["title"] == f"image: class sizes, base vs cotrain ({report_module.FIGURE_CLASSES_MAX} largest of 600)"
