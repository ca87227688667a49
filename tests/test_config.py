"""The CLI's settings: one declaration per setting (Params, run options), TOML and flags on top."""

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
from pathlib import Path

import pytest

from pairspark.config import RUN_OPTIONS, RunOptions, load_settings, parse_binary
from pairspark.errors import UsageError
from pairspark.params import SETTING_PARAMS, HasPairsparkParams, snake
from pairspark.views import parse_views

DEFAULT_TOML = Path(__file__).resolve().parents[1] / "conf" / "default.toml"


def test_conf_default_toml_matches_the_declared_defaults():
    listed = tomllib.loads(DEFAULT_TOML.read_text())["pairspark"]
    declared = HasPairsparkParams()
    expected = {snake(p): declared.getOrDefault(p) for p in SETTING_PARAMS}
    expected.update({name: spec.default for name, spec in RUN_OPTIONS.items() if spec.default is not None})
    assert listed == expected
    assert load_settings(DEFAULT_TOML).options == RunOptions()


def test_flags_win_over_the_file(tmp_path):
    conf = tmp_path / "c.toml"
    conf.write_text('[pairspark]\nratio_threshold = 1.5\nmin_margin = "10%"\nseed = 3\noutput_files = 2\n')
    s = load_settings(conf, {"seed": 9, "min_dims": None})
    assert s.params == {"ratioThreshold": 1.5, "minMargin": "10%", "seed": 9}
    assert (s.seed, s.min_dims, s.output_files) == (9, 8, 2)


def test_min_margin_zero_means_every_item_counts():
    assert load_settings(None, {"min_margin": "0"}).params == {"minMargin": "0"}


@pytest.mark.parametrize("bad", [{"min_margin": "abc"}, {"min_margin": "120%"}, {"methods": "base,magic"},
                                 {"min_dims": 0}, {"ratio_threshold": "nan"}, {"ratio_threshold": float("inf")},
                                 {"min_cosine": "-inf"}, {"min_margin": "nan"}, {"min_margin": "nan%"},
                                 {"output_files": 0}, {"partitions": 1.5}, {"on_invalid": "ignore"},
                                 {"binary": "no-equals"}, {"candidates": 1}])
def test_bad_settings_raise_usage_errors(bad):
    with pytest.raises(UsageError, match="--" + next(iter(bad)).replace("_", "-")):
        load_settings(None, bad)


def test_unknown_keys_in_a_config_file_are_refused(tmp_path):
    conf = tmp_path / "c.toml"
    conf.write_text("ratio_treshold = 1.3\n")
    with pytest.raises(UsageError, match="ratio_treshold"):
        load_settings(conf)


def test_views_parse_and_validate():
    assert [(v.name, v.column) for v in parse_views("image=image_embedding, text=text_embedding")] == [
        ("image", "image_embedding"),
        ("text", "text_embedding"),
    ]
    assert [(v.name, v.column) for v in parse_views("title_embedding")] == [("title_embedding", "title_embedding")]
    for bad in ["", "a=x,a=y", "a=x,b=y,c=z", "bad name=x"]:
        with pytest.raises(UsageError):
            parse_views(bad)


def test_binary_groups_from_a_file_may_name_classes_with_separators(tmp_path):
    groups = tmp_path / "groups.txt"
    groups.write_text("# home\nhome=Home Decor & Festive Needs\nhome=Kitchen; Dining = Bar\nwear=T-shirts, Tops\n")
    assert parse_binary(f"@{groups}") == {"home": ["Home Decor & Festive Needs", "Kitchen; Dining = Bar"],
                                          "wear": ["T-shirts, Tops"]}
    assert parse_binary("a=x,y;b=z") == {"a": ["x", "y"], "b": ["z"]}
    with pytest.raises(UsageError, match="line 1"):
        groups.write_text("just a class\n")
        parse_binary(f"@{groups}")


# ---------- every setting through every entry point: flag, TOML, Param, --config + flag ----------
#
# One row per setting: (snake name, the text a user types on the command line, the value it means,
# a TOML literal meaning the same, an invalid text, a fragment of the error it must give). The
# message must name what the user typed (`--top-k 0` says '0', never 0.0).
SETTINGS_TABLE = [
    ("methods", "base,cotrain", "base,cotrain", '"base,cotrain"', "base,magic", "'base,magic'"),
    ("ratio_threshold", "1.2", 1.2, "1.2", "1.2x", "'1.2x'"),
    ("min_dims", "6", 6, "6", "6.5", "'6.5'"),
    ("max_dims", "40", 40, "40", "-1", "'-1'"),
    ("min_class_count", "3", 3, "3", "0", "'0'"),
    ("min_cosine", "0.1", 0.1, "0.1", "1.5", "'1.5'"),
    ("min_margin", "0.05", "0.05", '"0.05"', "120%", "'120%'"),
    ("seed", "7", 7, "7", "seven", "'seven'"),
    ("candidates", "16", 16, "16", "1", "'1'"),
    ("top_k", "2", 2, "2", "0", "'0'"),
    ("backoff_at", "0.8", 0.8, "0.8", "1.5", "'1.5'"),
    ("master", "local[1]", "local[1]", '"local[1]"', None, None),
    ("partitions", "3", 3, "3", "1.5", "'1.5'"),
    ("arrow_batch_size", "500", 500, "500", "0", "got 0"),
    ("on_invalid", "error", "error", '"error"', "ignore", "'ignore'"),
    ("output_files", "2", 2, "2", "zero", "'zero'"),
    ("items_format", "orc", "orc", '"orc"', None, None),
    ("labels", "v.csv", "v.csv", '"v.csv"', None, None),
    ("warm_start", "off", "off", '"off"', "yes", "'yes'"),
    ("items_reader", "spark", "spark", '"spark"', "pandas", "'pandas'"),
    ("classes_format", "json", "json", '"json"', None, None),
    ("predictions_table", "db.labels", "db.labels", '"db.labels"', None, None),
    ("experiment", "nightly", "nightly", '"nightly"', None, None),
    ("binary", "wear=a,b", "wear=a,b", '"wear=a,b"', "wear", "'wear'"),
    ("review_below", "0.8", 0.8, "0.8", "1.5", "1.5"),
]
# the arguments each command needs besides its settings
REQUIRED = {
    "fit": ["--items", "i", "--classes", "c", "--views", "image=image_embedding", "--out", "o"],
    "classify": ["--items", "i", "--model", "m", "--out", "o"],
    "evaluate": ["--predictions", "p", "--out", "o"],
    "audit": ["--predictions", "p", "--out", "o"],
    "review": ["--predictions", "p", "--out", "o"],
    "diff": ["--old", "a", "--new", "b", "--out", "o"],
    "run": ["--items", "i", "--classes", "c", "--views", "image=image_embedding", "--out", "o"],
    "embed": ["--items", "i", "--text-col", "t", "--out", "o"],
    "embed-classes": ["--names", "a,b", "--views", "v", "--out", "o"],
}


def _commands_with(flag: str) -> list[str]:
    from pairspark.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return [name for name, p in sub.choices.items() if any(flag in a.option_strings for a in p._actions)]


def _setting(settings, name):
    return getattr(settings, name)


def test_the_table_covers_every_setting():
    assert sorted(row[0] for row in SETTINGS_TABLE) == sorted([snake(p) for p in SETTING_PARAMS] + list(RUN_OPTIONS))


@pytest.mark.parametrize("name, typed, value, toml, bad, said", SETTINGS_TABLE, ids=[r[0] for r in SETTINGS_TABLE])
def test_every_command_takes_each_of_its_flags_typed_as_text(capsys, name, typed, value, toml, bad, said):
    from pairspark.cli import build_parser, settings_from_args

    flag = f"--{name.replace('_', '-')}"
    commands = _commands_with(flag)
    assert commands, f"no command takes {flag}"
    for command in commands:
        args = build_parser().parse_args([command, *REQUIRED[command], flag, typed])
        assert _setting(settings_from_args(args), name) == value, (command, flag)
        if bad is None:
            continue
        if RUN_OPTIONS.get(name) is not None and RUN_OPTIONS[name].metadata["choices"]:  # argparse refuses it: exit 2
            with pytest.raises(SystemExit) as exit_:
                build_parser().parse_args([command, *REQUIRED[command], flag, bad])
            assert exit_.value.code == 2 and flag in capsys.readouterr().err
            continue
        args = build_parser().parse_args([command, *REQUIRED[command], flag, bad])
        with pytest.raises(UsageError) as error:
            settings_from_args(args)
        assert flag in str(error.value) and said in str(error.value), (command, str(error.value))


@pytest.mark.parametrize("name, typed, value, toml, bad, said", SETTINGS_TABLE, ids=[r[0] for r in SETTINGS_TABLE])
def test_each_setting_in_a_config_file_and_a_flag_over_it(tmp_path, name, typed, value, toml, bad, said):
    from pairspark.cli import build_parser, settings_from_args

    conf = tmp_path / "c.toml"
    conf.write_text(f"[pairspark]\n{name} = {toml}\n")
    assert _setting(load_settings(conf), name) == value
    if bad is not None:
        bad_conf = tmp_path / "bad.toml"
        bad_conf.write_text(f"[pairspark]\n{name} = \"{bad}\"\n")
        with pytest.raises(UsageError, match=f"bad.toml: {name}: .*{said}"):
            load_settings(bad_conf)
    # --config + flag: the flag wins over the file
    command = _commands_with(f"--{name.replace('_', '-')}")[0]
    other = {"methods": "base", "master": "local[2]", "min_margin": "10%"}.get(name)
    if other is None and isinstance(value, (int, float)) and not isinstance(value, bool):
        other = str(value + 1) if isinstance(value, int) else str(round(value / 2, 3))
    if other is None:
        other = f"{value}x" if name not in ("on_invalid", "items_reader", "warm_start", "binary") else \
            {"on_invalid": "quarantine", "items_reader": "arrow", "warm_start": "auto", "binary": "g=c"}[name]
    args = build_parser().parse_args([command, *REQUIRED[command], "--config", str(conf), f"--{name.replace('_', '-')}", other])
    got = _setting(settings_from_args(args), name)
    assert got != value and str(got) == str(type(value)(other) if not isinstance(value, str) else other)


PARAM_TABLE = [(r[0], r[2], r[4]) for r in SETTINGS_TABLE if r[0] in {snake(p) for p in SETTING_PARAMS}]


@pytest.mark.parametrize("name, value, bad", PARAM_TABLE, ids=[r[0] for r in PARAM_TABLE])
def test_each_param_on_the_estimator_takes_a_value_and_its_text_and_refuses_a_bad_one(name, value, bad):
    from pairspark import PairwiseTournamentClassifier

    param = next(p for p in SETTING_PARAMS if snake(p) == name)
    for given in (value, str(value)):
        assert PairwiseTournamentClassifier(**{param: given}).getOrDefault(param) == value
    with pytest.raises(TypeError, match=repr(bad).replace("[", r"\[").replace("+", r"\+")):
        PairwiseTournamentClassifier(**{param: bad})


def test_settings_that_contradict_each_other_are_a_usage_error_everywhere(tmp_path):
    from pairspark.cli import build_parser, settings_from_args

    args = build_parser().parse_args(["fit", *REQUIRED["fit"], "--min-dims", "8", "--max-dims", "3"])
    with pytest.raises(UsageError, match=r"min_dims \(8\) is above max_dims \(3\)"):
        settings_from_args(args)
    conf = tmp_path / "c.toml"
    conf.write_text("[pairspark]\nmax_dims = 3\n")
    with pytest.raises(UsageError, match="above max_dims"):
        load_settings(conf, {"min_dims": "4"})
    assert load_settings(conf, {"min_dims": "3"}).params == {"maxDims": 3, "minDims": 3}
    assert load_settings(None, {"min_dims": "20", "max_dims": "0"}).params["minDims"] == 20  # 0: no cap
