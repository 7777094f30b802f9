from dataclasses import dataclass, field

import pytest

from hapflow.config import load_config, load_toml, save_config
from hapflow.sections import ConfigError


@dataclass(frozen=True)
class Demo:
    path: str | None = field(default=None, metadata={"path": True})
    length: int = 10
    flag: bool = False
    names: list[str] | None = None


def test_load_config_reads_section_and_resolves_paths(tmp_path):
    cfg = tmp_path / "study.toml"
    cfg.write_text('[demo]\npath = "data/x.fa"\nlength = 128\n')
    c = load_config(Demo, cfg, "demo")
    assert c.length == 128
    assert c.path == str((tmp_path / "data" / "x.fa").resolve())


def test_load_config_overrides_win_and_coerce_strings(tmp_path):
    cfg = tmp_path / "study.toml"
    cfg.write_text("[demo]\nlength = 128\n")
    c = load_config(Demo, cfg, "demo", {"length": "256", "flag": "true", "names": "a,b"})
    assert (c.length, c.flag, c.names) == (256, True, ["a", "b"])


def test_load_config_raises_on_unknown_key(tmp_path):
    cfg = tmp_path / "study.toml"
    cfg.write_text("[demo]\nlenght = 1\n")
    with pytest.raises(ConfigError, match="unknown key.*lenght"):
        load_config(Demo, cfg, "demo")


def test_a_removed_setting_says_why_it_went_and_what_to_do(tmp_path):
    from hapflow.sections import ShardConfig

    cfg = tmp_path / "study.toml"
    cfg.write_text("[shard]\ngroup_size = 256\n")
    with pytest.raises(ConfigError, match=r"\[shard\]: group_size is no longer a setting: shard "
                                          r"format 3 .* delete the line"):
        load_config(ShardConfig, cfg, "shard")


def test_load_config_raises_on_bad_type(tmp_path):
    cfg = tmp_path / "study.toml"
    cfg.write_text('[demo]\nlength = "many"\n')
    with pytest.raises(ConfigError, match="length.*not an integer"):
        load_config(Demo, cfg, "demo")


def test_save_config_round_trips(tmp_path):
    out = tmp_path / "resolved.toml"
    save_config({"demo": Demo(path="/x", length=3, names=["a"])}, out)
    assert load_toml(out)["demo"] == {"path": "/x", "length": 3, "flag": False, "names": ["a"]}


# --- the whole study file (hapflow.config): real bundled configs, edited one setting at a time

import re  # noqa: E402

from hapflow.config import StudyConfig, load_study, split_overrides  # noqa: E402
from tests.conftest import ROOT  # noqa: E402

DEMO = ROOT / "configs" / "demo.toml"


def demo_study(tmp_path, *edits, append=""):
    """configs/demo.toml with absolute data paths, ``(pattern, replacement)`` edits applied."""
    text = DEMO.read_text().replace('"../data/', f'"{ROOT / "data"}/')
    for pattern, repl in edits:
        text, n = re.subn(pattern, repl, text, count=1, flags=re.MULTILINE)
        assert n == 1, pattern
    path = tmp_path / "study.toml"
    path.write_text(text + append)
    return path


@pytest.mark.parametrize("name", ["demo", "geuvadis", "chr20_sim", "chr20_sanity"])
def test_every_bundled_study_loads_whole(name):
    study = load_study(ROOT / "configs" / f"{name}.toml")
    assert isinstance(study, StudyConfig)
    assert {"haplotypes", "shard", "loader"} <= set(study.sections())


@pytest.mark.parametrize(("edit", "message"), [
    ((r"^length = 49152$", "length = 49152.5"), r"\[haplotypes\]: length: 49152.5 is not an "
                                                  "integer"),
    ((r"^batch_size = 8$", "batch_size = 8.5"), r"\[loader\]: batch_size: 8.5 is not an integer"),
    ((r"^batch_size = 8$", "batch_size = true"), r"batch_size: True is not an integer"),
    ((r"^snps_only = false$", "snps_only = 0"), r"snps_only: 0 is not a boolean"),
    ((r"^seed = 0$", 'seed = "0"'), r"seed: '0' is not an integer"),
])
def test_exact_types_never_truncate(tmp_path, edit, message):
    with pytest.raises(ConfigError, match=message):
        load_study(demo_study(tmp_path, edit))


def test_n_pcs_float_is_an_error_in_its_own_section(tmp_path):
    from hapflow.sections import ExpressionConfig

    path = demo_study(tmp_path, (r"^n_pcs = 5$", "n_pcs = 5.5"))
    with pytest.raises(ConfigError, match="n_pcs: 5.5 is not an integer"):
        load_config(ExpressionConfig, path, "expression")


def test_float_setting_takes_an_integer(tmp_path):
    study = load_study(demo_study(tmp_path, (r"^rc_prob = 0.5 ", "rc_prob = 1 ")))
    assert study.loader.rc_prob == 1.0 and isinstance(study.loader.rc_prob, float)


def test_misspelt_section_is_an_error_with_a_suggestion(tmp_path):
    from hapflow.sections import LoaderConfig

    path = demo_study(tmp_path, (r"^\[loader\]$", "[loadr]"))
    with pytest.raises(ConfigError, match=r"unknown section \[loadr\] \(did you mean 'loader'"):
        load_config(LoaderConfig, path, "loader")  # the per-stage reader sees it too
    with pytest.raises(ConfigError, match=r"unknown section \[loadr\]"):
        load_study(path)


def test_misspelt_key_suggests_the_setting(tmp_path):
    path = demo_study(tmp_path, (r"^max_shift = 3 ", "max_shfit = 3 "))
    with pytest.raises(ConfigError, match=r"max_shfit \(did you mean 'max_shift'\?\)"):
        load_study(path)


def test_setting_outside_any_section_is_an_error(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text("length = 4096\n" + demo_study(tmp_path).read_text())
    with pytest.raises(ConfigError, match="length = 4096 is outside any section"):
        load_study(path)


def test_none_survives_save_and_load(tmp_path):
    from hapflow.sections import LoaderConfig, ShardConfig

    shard = ShardConfig(test_fraction=None, n_test=5)  # default test_fraction is 0.2
    loader_cfg = LoaderConfig(min_percentile_diff=None, lanes=3)
    out = tmp_path / "saved.toml"
    save_config({"shard": shard, "loader": loader_cfg}, out)
    assert load_toml(out)["shard"]["test_fraction"] == "none"
    assert load_config(ShardConfig, out, "shard") == shard
    assert load_config(LoaderConfig, out, "loader") == loader_cfg


@pytest.mark.parametrize(("edit", "message"), [
    ((r"^max_shift = 3 ", "max_shift = 9 "), r"max_shift = 9 needs .* \[shard\] flank = 8"),
    ((r"^length = 49152$", "length = 49000"), r"length = 49000 must be a positive multiple of "
                                                "128"),
    ((r"^splits = .*$", 'splits = "paper"'), r'splits = "paper" needs \[shard\] splits_file'),
    ((r"^splits = .*$", 'splits = "file"\nsplits_file = "no_such_splits.csv"'),
     r"splits_file = .*no_such_splits.csv does not exist"),
    ((r"^strategy = .*$", 'strategy = "pairwise_classification"'),
     r"needs \[model\] head = 'track', but head = 'attention_pool'"),
])
def test_cross_section_rules_at_load(tmp_path, edit, message):
    with pytest.raises(ConfigError, match=message):
        load_study(demo_study(tmp_path, edit))


def test_shift_fill_n_needs_no_flank(tmp_path):
    path = demo_study(tmp_path, (r"^max_shift = 3 ", "max_shift = 9 "),
                      (r'^shift_fill = "flank"', 'shift_fill = "N"'))
    assert load_study(path).loader.max_shift == 9


def test_loader_longer_than_windows_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"\[loader\] length = 4096 is longer .* 1024"):
        load_study(demo_study(tmp_path, (r"^length = 49152$", "length = 1024")))


def test_overrides_are_held_only_against_the_stage_sections(tmp_path):
    sets = split_overrides(["haplotypes.length=1024"], ("haplotypes",))
    study = load_study(DEMO, sets, need=("haplotypes",))  # e.g. prep.haplotypes --length 1024
    assert study.haplotypes.length == 1024
    with pytest.raises(ConfigError, match="longer than the stored windows"):
        load_study(DEMO, sets)  # every section in play: the loader's 4096 cannot be cropped


def test_cli_strings_are_parsed_strictly():
    with pytest.raises(ConfigError, match="'8.5' is not an integer"):
        load_study(DEMO, {"loader": {"batch_size": "8.5"}})
    study = load_study(DEMO, {"loader": {"lanes": "none", "batch_size": "4"}})
    assert (study.loader.lanes, study.loader.batch_size) == (None, 4)


def test_split_overrides_errors_name_the_item():
    with pytest.raises(ConfigError, match=r"not 'loadr' \(did you mean 'loader'"):
        split_overrides(["loadr.batch_size=4"], ("loader", "train"))
    with pytest.raises(ConfigError, match="write SECTION.KEY=VALUE"):
        split_overrides(["batch_size=4"], ("loader",))


def test_one_home_for_the_configuration():
    """Every section class lives in hapflow.sections; no stage keeps a config module of its own."""
    import importlib.util

    import hapflow.config
    from hapflow import sections

    assert hapflow.config.ConfigError is sections.ConfigError
    for module in ("prep.config", "loader.config", "train.config"):
        assert importlib.util.find_spec(module) is None, module
    assert set(hapflow.config.SECTIONS) == {"haplotypes", "expression", "simulate", "shard",
                                            "loader", "model", "train", "baselines", "evaluate",
                                            "attribute", "enformer_data", "mpra"}


def test_docs_config_md_is_generated_from_the_sections():
    """docs/config.md lists every section and key; regenerate it after changing a section with
    `python -m hapflow.config_doc > docs/config.md`."""
    from hapflow.config_doc import render
    from hapflow.sections import SECTIONS

    text = (ROOT / "docs" / "config.md").read_text()
    assert text == render(), "docs/config.md is out of date: python -m hapflow.config_doc > " \
                             "docs/config.md"
    for section, cls in SECTIONS.items():
        assert f"## [{section}]" in text
        for name in cls.__dataclass_fields__:
            assert f"| `{name}` |" in text, (section, name)


def test_split_fractions_say_what_they_apply_to():
    """Issue 15, 7: val_fraction is taken of the individuals left after test (0.1 of 300 with
    test_fraction 0.2 gives 24, not 30); its text says so, with the numbers a split gives."""
    from hapflow.config_doc import field_docs
    from hapflow.sections import ShardConfig
    from prep.splits import random_split

    docs = field_docs(ShardConfig)
    assert "left after test is taken out" in docs["val_fraction"]
    assert "of all the study's individuals" in docs["test_fraction"]
    assert "of all the study's individuals" in docs["n_test"]
    people = [f"S{i:03d}" for i in range(300)]
    split = random_split(["G1"], people, test_fraction=0.2, val_fraction=0.1)
    counts = dict(split.group_by("split").len().iter_rows())
    assert counts == {"test": 60, "val": 24, "train": 216}
    assert "60 test, 24 validation (0.1 of 240), 216 train" in docs["val_fraction"]
