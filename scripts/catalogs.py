"""Catalogs for the research harness (scripts/study.py): many zero-shot problems built from the shared sets.

Each builder returns a `Catalog` (item vectors per view, unit class prompts per view, ground truth),
deterministic given its arguments, without Spark and without writing anything but the prompt
encodings cache (/tmp/pairspark-study). The parquet files of ../shared/data (or $PAIRSPARK_DATA)
are read once per process and kept in memory; nothing is copied into the repository.

Families (`all_catalogs` lists the instances; `python scripts/catalogs.py` prints them):

* full          a shared set with both views, or one view alone (fashion_lvis: all 1,203 LVIS classes)
* subsample     seeded subsamples: balanced 50/150/500 items per class, or Zipf (the rule of
                scripts/compare.py subsample(), so the same seeds give the same items)
* lvis_near     fashion_clip + the k LVIS classes whose text prompts are nearest the 23 (near-synonyms)
* lvis_random   fashion_clip + k random LVIS classes
* lvis_text     one view of fashion_lvis with N classes: the 23 plus N - 23 random others
* tree          fashion_tree read flat at level 1 (4 roots) or 2 (16 sub-categories)
* merged        classes merged (label mapped, prompt = unit mean of the members' unit prompts)
* weak_prompts  MiniLM views with class prompts re-embedded from the bare names ("{}") or the
                5 templates of pairspark.embed.PROMPT_TEMPLATES (as scripts/compare.py prompt_classes)
* article_type  fashion_clip's text view with its 22 original article types as classes (MiniLM of the
                names): fine-grained (Tshirts vs Shirts, Casual vs Sports vs Formal Shoes)
* drop_classes  a class table missing k of the classes that occur (their items are always wrong):
                the open-set case

The "choose" / "report" split (`chosen_on`): within each family, the catalogs are ordered by
sha256 of their name and the first ceil(n / 3) are "choose" (rules may be tuned on them), the
rest "report" (figures quoted from them). A catalog's tag depends only on its family's names.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
# PAIRSPARK_SRC: import pairspark from another checkout (see scripts/study.py)
_SRC = os.environ.get("PAIRSPARK_SRC") or str(ROOT)
if "pairspark" not in sys.modules and _SRC not in sys.path:
    sys.path.insert(0, _SRC)

from pairspark.core.cosine import ensemble_prompts  # noqa: E402

DATA = Path(os.environ.get("PAIRSPARK_DATA", ROOT.parent / "shared" / "data"))
CACHE = Path(os.environ.get("PAIRSPARK_STUDY_CACHE", "/tmp/pairspark-study"))
SETS = ("agnews", "fashion_clip", "fashion_lvis", "fashion_tree")

# the rule of scripts/compare.py subsample() (kept equal: the same seed gives the same items)
PER_CLASS = (50, 150, 500)
ZIPF_LARGEST, ZIPF_SMALLEST = 500, 5
CELLS = tuple(f"{k}/class" for k in PER_CLASS) + ("zipf",)

# merged(): the default groups per set, {group label (in the catalog's name): member classes}
MERGES = {
    "agnews": {"world+business": ("World", "Business")},
    "fashion_clip": {"tops": ("jacket", "shirt", "sweater", "sweatshirt"),
                     "footwear": ("flip-flop_(sandal)", "sandal_(type_of_shoe)", "shoe")},
}


def _groups(set_name: str, groups) -> dict[str, tuple[str, ...]]:
    """{label: sorted members}: a dict as given, or a list of member tuples labelled a+b+..."""
    groups = MERGES[set_name] if groups is None else groups
    if not isinstance(groups, dict):
        groups = {"+".join(sorted(g)): g for g in groups}
    return {label: tuple(sorted(g)) for label, g in groups.items()}


@dataclass
class Catalog:
    """One zero-shot problem. Classes are kept sorted by class_id, as spark/io.load_classes sorts them."""

    name: str
    family: str
    views: dict[str, np.ndarray]  # view -> (n, D) float32 item vectors as stored (not unit)
    prompts: dict[str, np.ndarray]  # view -> (C, D) float64 unit class vectors
    class_ids: list[str]
    labels: np.ndarray  # (n,) str ground truth; may be outside class_ids
    item_ids: np.ndarray  # (n,) str
    note: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        order = sorted(range(len(self.class_ids)), key=lambda i: self.class_ids[i])
        self.class_ids = [str(self.class_ids[i]) for i in order]
        self.prompts = {v: np.asarray(p, np.float64)[order] for v, p in self.prompts.items()}
        self.labels = np.asarray(self.labels).astype(str).astype(object)
        self.item_ids = np.asarray(self.item_ids).astype(str).astype(object)
        n = len(self.item_ids)
        assert len(set(self.class_ids)) == len(self.class_ids), f"{self.name}: duplicate class ids"
        assert len(set(self.item_ids)) == n, f"{self.name}: duplicate item ids"
        assert set(self.views) == set(self.prompts), f"{self.name}: views and prompts differ"
        for v, x in self.views.items():
            assert x.shape[0] == n and x.shape[1] == self.prompts[v].shape[1], f"{self.name}/{v}: shapes"
            assert np.isfinite(x).all() and (np.abs(x).sum(axis=1) > 0).all(), f"{self.name}/{v}: invalid rows"
        assert len(self.labels) == n

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_classes(self) -> int:
        return len(self.class_ids)

    @property
    def view_names(self) -> list[str]:
        return list(self.views)

    def take(self, rows: np.ndarray, name: str, family: str | None = None, **meta) -> Catalog:
        return Catalog(name, family or self.family, {v: x[rows] for v, x in self.views.items()}, dict(self.prompts),
                       list(self.class_ids), self.labels[rows], self.item_ids[rows], self.note, {**self.meta, **meta})

    def summary(self) -> str:
        present = len(set(self.labels) & set(self.class_ids))
        return (f"{self.name}: {self.family}, {self.n_items} items, {self.n_classes} classes ({present} occur), "
                f"views {', '.join(f'{v} {x.shape[1]}-d' for v, x in self.views.items())}")


# ---- reading the shared sets (once per process) ----

def _matrix(column) -> np.ndarray:
    """(n, D) float32 of a list<float> column without nulls."""
    column = column.combine_chunks()
    flat = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return flat.reshape(len(column), -1)


def _unit(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, np.float64)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


@lru_cache(maxsize=None)
def _items(set_name: str) -> dict:
    table = pq.read_table(DATA / set_name / "items.parquet")
    out = {"item_id": np.array([str(x) for x in table.column("item_id").to_pylist()], dtype=object),
           "label": np.array([str(x) for x in table.column("label").to_pylist()], dtype=object), "views": {}}
    for f in table.schema:
        if f.name.endswith("_embedding"):
            out["views"][f.name.removesuffix("_embedding")] = _matrix(table.column(f.name))
    for extra in ("article_type", "product_name", "title", "description"):
        if extra in table.schema.names:
            out[extra] = np.array(table.column(extra).to_pylist(), dtype=object)
    return out


@lru_cache(maxsize=None)
def _classes(set_name: str) -> dict:
    """class ids (file order), parent ids, and per view the raw prompt rows (None where null)."""
    table = pq.read_table(DATA / set_name / "classes.parquet")
    out = {"class_id": [str(x) for x in table.column("class_id").to_pylist()], "views": {}}
    out["parent_id"] = table.column("parent_id").to_pylist() if "parent_id" in table.schema.names else None
    for f in table.schema:
        if f.name.endswith("_embedding"):
            out["views"][f.name.removesuffix("_embedding")] = [None if v is None else np.asarray(v, np.float64)
                                                               for v in table.column(f.name).to_pylist()]
    return out


def _class_prompts(set_name: str, view: str, ids: list[str] | None = None) -> tuple[list[str], np.ndarray]:
    """(class ids, (C, D) unit prompts) of a set's classes table in one view, as load_classes makes
    them: every prompt row unit-normalised, the rows of a class averaged and re-normalised."""
    c = _classes(set_name)
    rows = [i for i, cid in enumerate(c["class_id"]) if ids is None or cid in set(ids)]
    names = sorted({c["class_id"][i] for i in rows})
    index = {n: k for k, n in enumerate(names)}
    codes = np.array([index[c["class_id"][i]] for i in rows])
    unit = _unit(np.stack([c["views"][view][i] for i in rows]))
    return names, ensemble_prompts(codes, unit, len(names))


def _view_list(set_name: str, views) -> list[str]:
    have = list(_items(set_name)["views"])
    views = have if views is None else [views] if isinstance(views, str) else list(views)
    missing = [v for v in views if v not in have]
    assert not missing, f"{set_name} has no view {missing}; it has {have}"
    return views


def _suffix(set_name: str, views: list[str]) -> str:
    return "" if views == list(_items(set_name)["views"]) else f"[{'+'.join(views)}]"


# ---- builders ----

def full(set_name: str, views=None) -> Catalog:
    """A shared set as stored (fashion_tree is not flat: see tree_level)."""
    assert set_name in ("agnews", "fashion_clip", "fashion_lvis"), set_name
    views = _view_list(set_name, views)
    items = _items(set_name)
    prompts, ids = {}, None
    for v in views:
        ids, prompts[v] = _class_prompts(set_name, v)
    return Catalog(set_name + _suffix(set_name, views), "full", {v: items["views"][v] for v in views}, prompts, ids,
                   items["label"], items["item_id"])


def subsample(cat: Catalog, cell: str, seed: int) -> Catalog:
    """compare.py's subsample(): cell "N/class" (balanced; a class with fewer keeps all) or "zipf"
    (a seeded order of the label values, the k-th gets 500/k items, at least 5). Rows stay in file order."""
    labels = np.array([str(x) for x in cat.labels], dtype=object)
    rng = np.random.default_rng(seed)
    classes = sorted(set(labels))
    rows_of = {c: np.flatnonzero(labels == c) for c in classes}
    if cell == "zipf":
        order = rng.permutation(len(classes))
        wanted = {classes[c]: max(ZIPF_SMALLEST, round(ZIPF_LARGEST / (rank + 1))) for rank, c in enumerate(order)}
    else:
        wanted = {c: int(cell.split("/")[0]) for c in classes}
    picked = np.sort(np.concatenate([rng.choice(rows_of[c], min(wanted[c], len(rows_of[c])), replace=False)
                                     for c in classes]))
    return cat.take(picked, f"{cat.name}~{cell}#{seed}", "subsample", cell=cell, seed=seed)


def subsampled(set_name: str, cell: str, seed: int, views=None) -> Catalog:
    return subsample(full(set_name, views), cell, seed)


def _with_extra_classes(extra: list[str], name: str, family: str, views=None) -> Catalog:
    """fashion_clip's items and 23 classes plus `extra` LVIS classes (their fashion_lvis prompts)."""
    base = full("fashion_clip", views)
    prompts = {}
    for v in base.views:
        ids, more = _class_prompts("fashion_lvis", v, extra)
        prompts[v] = np.concatenate([base.prompts[v], more])
    return Catalog(name, family, dict(base.views), prompts, base.class_ids + ids, base.labels, base.item_ids,
                   meta={"extra_classes": ids})


def _lvis_others() -> list[str]:
    own = set(_classes("fashion_clip")["class_id"])
    return sorted(c for c in set(_classes("fashion_lvis")["class_id"]) if c not in own)


def nearest_lvis(k: int) -> list[str]:
    """The k LVIS classes (outside the 23) whose text prompt has the highest cosine to any of the 23."""
    others = _lvis_others()
    _, own = _class_prompts("fashion_clip", "text")
    _, cand = _class_prompts("fashion_lvis", "text", others)
    closeness = (cand @ own.T).max(axis=1)
    order = np.argsort(-closeness, kind="stable")[:k]
    return [others[i] for i in order]


def lvis_distractors(k: int, seed: int = 0) -> Catalog:
    """fashion_clip + the k nearest LVIS classes by text-prompt cosine (deterministic: seed unused)."""
    return _with_extra_classes(nearest_lvis(k), f"fashion+lvis_near{k}", "lvis_near")


def lvis_random(k: int, seed: int = 0) -> Catalog:
    others = _lvis_others()
    chosen = sorted(np.random.default_rng(seed).choice(len(others), k, replace=False).tolist())
    return _with_extra_classes([others[i] for i in chosen], f"fashion+lvis_rand{k}#{seed}", "lvis_random")


def lvis_text(n_classes: int, seed: int = 0, view: str = "text") -> Catalog:
    """One view of fashion_lvis with n_classes classes: fashion_clip's 23 plus random others."""
    others = _lvis_others()
    chosen = np.random.default_rng(seed).choice(len(others), n_classes - 23, replace=False)
    base = full("fashion_clip", [view])
    ids, more = _class_prompts("fashion_lvis", view, [others[i] for i in chosen])
    return Catalog(f"lvis{n_classes}#{seed}[{view}]", "lvis_text", dict(base.views),
                   {view: np.concatenate([base.prompts[view], more])}, base.class_ids + ids, base.labels, base.item_ids)


def _tree() -> dict:
    c = _classes("fashion_tree")
    parent = dict(zip(c["class_id"], c["parent_id"]))

    def chain(node):  # root first
        out = [node]
        while parent[out[-1]] is not None:
            out.append(parent[out[-1]])
        return out[::-1]

    return {"ids": c["class_id"], "parent": parent, "chain": {n: chain(n) for n in c["class_id"]}}


def tree_level(level: int, views=None) -> Catalog:
    """fashion_tree flat at depth `level` (1: roots, 2: sub-categories): label = the leaf label's
    ancestor at that depth; text prompt = the node's own; image prompt = unit mean of its
    descendant leaves' unit image prompts (inner nodes have none)."""
    views = _view_list("fashion_tree", views)
    tree, c, items = _tree(), _classes("fashion_tree"), _items("fashion_tree")
    nodes = sorted(n for n in tree["ids"] if len(tree["chain"][n]) == level)
    index = {n: k for k, n in enumerate(nodes)}
    row = {n: i for i, n in enumerate(c["class_id"])}
    prompts = {}
    for v in views:
        if v == "text":
            prompts[v] = _unit(np.stack([c["views"][v][row[n]] for n in nodes]))
        else:
            leaves = [n for n in tree["ids"] if c["views"][v][row[n]] is not None]
            codes = np.array([index[tree["chain"][n][level - 1]] for n in leaves])
            prompts[v] = ensemble_prompts(codes, _unit(np.stack([c["views"][v][row[n]] for n in leaves])), len(nodes))
            if (prompts[v] == 0).all(axis=1).any():
                raise ValueError(f"tree level {level}: a node has no leaf with a {v} prompt")
    labels = np.array([tree["chain"][lab][level - 1] for lab in items["label"]], dtype=object)
    return Catalog(f"tree_L{level}" + _suffix("fashion_tree", views), "tree", {v: items["views"][v] for v in views},
                   prompts, nodes, labels, items["item_id"])


def merged(set_name: str, groups=None, views=None) -> Catalog:
    """Each group of classes becomes one class "a+b+..." (label mapped; prompt = unit mean of the
    members' unit prompts). groups: {label: members} or a list of member tuples (default MERGES)."""
    labelled = _groups(set_name, groups)
    groups = list(labelled.values())
    base = full(set_name, views)
    new_of = {m: "+".join(g) for g in groups for m in g}
    assert all(m in base.class_ids for m in new_of), f"unknown class in {groups}"
    new_ids = sorted({new_of.get(c, c) for c in base.class_ids})
    index = {c: k for k, c in enumerate(new_ids)}
    codes = np.array([index[new_of.get(c, c)] for c in base.class_ids])
    prompts = {v: ensemble_prompts(codes, p, len(new_ids)) for v, p in base.prompts.items()}
    labels = np.array([new_of.get(lab, lab) for lab in base.labels], dtype=object)
    return Catalog(f"{base.name}~merge({','.join(labelled)})", "merged", dict(base.views), prompts, new_ids, labels, base.item_ids)


def spoken(class_id: str) -> str:
    """LVIS-style names as a user writes them: sandal_(type_of_shoe) -> sandal type of shoe."""
    return class_id.replace("_", " ").replace("(", "").replace(")", "")


def encode(texts: list[str]) -> np.ndarray:
    """all-MiniLM-L6-v2 unit rows (pairspark.embed.encoder("minilm")), cached under CACHE."""
    key = hashlib.sha256(json.dumps(texts).encode()).hexdigest()[:24]
    path = CACHE / f"minilm-{key}.npy"
    if path.exists():
        return np.load(path)
    from pairspark.embed import encoder

    vectors = np.asarray(encoder("minilm").encode(list(texts), 64), np.float32)
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, vectors)
    os.replace(tmp, path)
    return vectors


def _templates(template: str) -> list[str]:
    from pairspark.embed import PROMPT_TEMPLATES

    return ["{}"] if template in ("name", "{}") else list(PROMPT_TEMPLATES) if template == "templates" else [template]


def _encoded_prompts(names: list[str], templates: list[str]) -> np.ndarray:
    texts = [t.format(spoken(n)) for n in names for t in templates]
    codes = np.repeat(np.arange(len(names)), len(templates))
    return ensemble_prompts(codes, _unit(encode(texts)), len(names))


def weak_prompts(set_name: str, template: str = "name", views=None) -> Catalog:
    """The MiniLM views' class prompts re-embedded from the class names: "name" (the bare name, "{}")
    or "templates" (PROMPT_TEMPLATES, averaged per class); a CLIP view keeps the set's prompts."""
    minilm = {"agnews": ("title", "description"), "fashion_clip": ("text",)}[set_name]
    base = full(set_name, views)
    encoded = _encoded_prompts(base.class_ids, _templates(template))
    prompts = {v: (encoded if v in minilm else p) for v, p in base.prompts.items()}
    label = "name" if template in ("name", "{}") else template
    return Catalog(f"{base.name}~prompts:{label}", "weak_prompts", dict(base.views), prompts, base.class_ids,
                   base.labels, base.item_ids)


def article_type(template: str = "name") -> Catalog:
    """fashion_clip's text view, labels = the original article_type (22 of them), prompts = MiniLM
    of the article type names."""
    items = _items("fashion_clip")
    names = sorted(set(items["article_type"]))
    return Catalog(f"fashion_article:{template}[text]", "article_type", {"text": items["views"]["text"]},
                   {"text": _encoded_prompts(names, _templates(template))}, names, items["article_type"],
                   items["item_id"])


def drop_classes(set_name: str, k: int, seed: int = 0, views=None) -> Catalog:
    """The class table without k seeded classes among those that occur (their items stay: always wrong)."""
    base = full(set_name, views)
    occurring = sorted(set(base.labels) & set(base.class_ids))
    dropped = sorted(np.random.default_rng(seed).choice(occurring, k, replace=False).tolist())
    keep = [i for i, c in enumerate(base.class_ids) if c not in dropped]
    return Catalog(f"{base.name}~drop{k}#{seed}", "drop_classes", dict(base.views),
                   {v: p[keep] for v, p in base.prompts.items()}, [base.class_ids[i] for i in keep], base.labels,
                   base.item_ids, meta={"dropped": dropped})


BUILDERS = {f.__name__: f for f in (full, subsampled, lvis_distractors, lvis_random, lvis_text, tree_level, merged,
                                    weak_prompts, article_type, drop_classes)}


# ---- the list of catalogs ----

@dataclass(frozen=True)
class Spec:
    name: str
    family: str
    n_views: int
    builder: str
    args: tuple
    kwargs: tuple = ()  # (key, value) pairs
    chosen_on: str = "report"  # "choose" or "report"

    def build(self) -> Catalog:
        cat = BUILDERS[self.builder](*self.args, **dict(self.kwargs))
        assert cat.name == self.name, (cat.name, self.name)
        cat.meta["chosen_on"] = self.chosen_on
        return cat


def _views_of(set_name: str) -> list[str]:
    return list(_classes(set_name)["views"])


def _spec(family: str, builder: str, *args, views=None, **kwargs) -> Spec:
    """A spec and its catalog's name, computed as the builder names it (without building it)."""
    set_name = args[0] if builder in ("full", "subsampled", "merged", "weak_prompts", "drop_classes") else (
        "fashion_tree" if builder == "tree_level" else "fashion_clip")
    all_views = _views_of(set_name)
    vs = all_views if views is None else [views] if isinstance(views, str) else list(views)
    suffix = "" if vs == all_views else f"[{'+'.join(vs)}]"
    if builder == "full":
        name = set_name + suffix
    elif builder == "subsampled":
        name = f"{set_name}{suffix}~{args[1]}#{args[2]}"
    elif builder == "lvis_distractors":
        name = f"fashion+lvis_near{args[0]}"
    elif builder == "lvis_random":
        name = f"fashion+lvis_rand{args[0]}#{args[1]}"
    elif builder == "lvis_text":
        vs = [kwargs.get("view", "text")]
        name = f"lvis{args[0]}#{args[1]}[{vs[0]}]"
    elif builder == "tree_level":
        name = f"tree_L{args[0]}{suffix}"
    elif builder == "merged":
        name = f"{set_name}{suffix}~merge({','.join(_groups(set_name, None))})"
    elif builder == "weak_prompts":
        name = f"{set_name}{suffix}~prompts:{args[1]}"
    elif builder == "article_type":
        vs = ["text"]
        name = f"fashion_article:{args[0]}[text]"
    elif builder == "drop_classes":
        name = f"{set_name}{suffix}~drop{args[1]}#{args[2]}"
    else:
        raise ValueError(builder)
    if views is not None and builder not in ("lvis_text", "article_type"):
        kwargs["views"] = tuple(vs)
    return Spec(name, family, len(vs), builder, tuple(args), tuple(sorted(kwargs.items())))


def _tag(specs: list[Spec]) -> list[Spec]:
    """Per family: ordered by sha256(name), the first ceil(n/3) are "choose", the others "report"."""
    out = []
    for family in dict.fromkeys(s.family for s in specs):
        mine = [s for s in specs if s.family == family]
        ranked = sorted(mine, key=lambda s: hashlib.sha256(s.name.encode()).hexdigest())
        choose = {s.name for s in ranked[: math.ceil(len(mine) / 3)]}
        out += [Spec(**{**s.__dict__, "chosen_on": "choose" if s.name in choose else "report"}) for s in mine]
    return out


def all_catalogs(quick: bool = False) -> list[Spec]:
    """Every catalog instance as a Spec (spec.build() makes it), tagged "choose" / "report".

    quick: one seed of each subsample cell, fewer variants (a smoke run of a few minutes at most)."""
    seeds = range(1) if quick else range(5)
    s: list[Spec] = []
    # full sets, both views and each view alone
    for set_name in ("agnews", "fashion_clip"):
        s.append(_spec("full", "full", set_name))
        s += [_spec("full", "full", set_name, views=v) for v in _views_of(set_name)]
    if not quick:
        s.append(_spec("full", "full", "fashion_lvis"))
        s.append(_spec("full", "full", "fashion_lvis", views="text"))
    # subsamples (the robustness cells of scripts/compare.py), two views; some one-view ones
    for set_name in ("agnews", "fashion_clip"):
        s += [_spec("subsample", "subsampled", set_name, cell, seed) for cell in CELLS for seed in seeds]
        for v in _views_of(set_name):
            s += [_spec("subsample", "subsampled", set_name, cell, 0, views=v) for cell in (("150/class", "zipf") if not quick else ("zipf",))]
    # LVIS distractor classes
    for k in ((10, 40, 150) if not quick else (40,)):
        s.append(_spec("lvis_near", "lvis_distractors", k))
        s.append(_spec("lvis_random", "lvis_random", k, 0))
    if not quick:
        s.append(_spec("lvis_random", "lvis_random", 40, 1))
        s += [_spec("lvis_text", "lvis_text", n, 0) for n in (100, 300)]
        s.append(_spec("lvis_text", "lvis_text", 100, 1))
        s.append(_spec("lvis_text", "lvis_text", 100, 0, view="image"))
    # the taxonomy read flat
    for level in (1, 2):
        s.append(_spec("tree", "tree_level", level))
        s.append(_spec("tree", "tree_level", level, views="text"))
    # merged classes
    s += [_spec("merged", "merged", n) for n in ("agnews", "fashion_clip")]
    if not quick:
        s.append(_spec("merged", "merged", "fashion_clip", views="text"))
    # weak prompts
    for template in (("name", "templates") if not quick else ("name",)):
        s += [_spec("weak_prompts", "weak_prompts", n, template) for n in ("agnews", "fashion_clip")]
        if not quick:
            s.append(_spec("weak_prompts", "weak_prompts", "agnews", template, views="title"))
    # fine-grained article types, open set
    s.append(_spec("article_type", "article_type", "name"))
    if not quick:
        s.append(_spec("article_type", "article_type", "templates"))
        s += [_spec("drop_classes", "drop_classes", "fashion_clip", 2, seed) for seed in (0, 1)]
        s.append(_spec("drop_classes", "drop_classes", "agnews", 1, 0))
    names = [x.name for x in s]
    assert len(set(names)) == len(names), "duplicate catalog names"
    return _tag(s)


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="list (and optionally build) the study's catalogs")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--build", action="store_true", help="build each catalog and print its summary")
    args = parser.parse_args(argv)
    specs = all_catalogs(args.quick)
    print("| catalog | family | tag | items | classes | views |\n|---|---|---|---|---|---|")
    for spec in specs:
        if args.build:
            cat = spec.build()
            print(f"| {cat.name} | {spec.family} | {spec.chosen_on} | {cat.n_items} | {cat.n_classes} | {'+'.join(cat.views)} |")
        else:
            print(f"| {spec.name} | {spec.family} | {spec.chosen_on} | | | {spec.n_views} |")
    two = sum(sp.n_views == 2 for sp in specs)
    print(f"\n{len(specs)} catalogs: {two} with two views, {len(specs) - two} with one")
    return 0


if __name__ == "__main__":
    sys.exit(main())
