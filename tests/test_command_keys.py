"""A ``--set`` a command does not read is an error, never ignored (hapflow.command.Keys), and every
log line carries its time."""

from __future__ import annotations

import dataclasses
import importlib
import os
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest

from hapflow.cli import COMMANDS
from hapflow.command import Command, Keys, build_parser, parse_command
from hapflow.sections import SECTIONS
from tests.conftest import ROOT

DEMO = ROOT / "configs" / "demo.toml"
TIMED = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (INFO|WARNING|ERROR) ")


def _command(module: str) -> Command:
    return importlib.import_module(module).COMMAND


def _main(module: str, argv: list[str], capsys) -> tuple[int, str]:
    code = importlib.import_module(module).main(argv)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("module", list(COMMANDS.values()))
def test_every_rule_names_real_settings_and_options(module):
    command = _command(module)
    options = {o.name for o in command.options}
    for rule in command.keys:
        assert rule.section in command.reads, (module, rule)
        fields = {f.name for f in dataclasses.fields(SECTIONS[rule.section])}
        assert set(rule.only or ()) <= fields and set(rule.skips) <= fields, (module, rule)
        assert (rule.only is None) != (not rule.skips) or rule.only == (), (module, rule)
        for name in (rule.when, rule.unless):
            assert name is None or name in options, (module, name)
    for option in command.options:  # a flag with a setting is read (at least with some flags)
        if option.setting:
            section, _, key = option.setting.partition(".")
            assert command.reads_key(section, key), (module, option.setting)


@pytest.mark.parametrize("argv,needles", [
    (["--run", "r", "--vcf", "x.vcf.gz", "--set", "haplotypes.snps_only=true"],
     ["train.predict does not read [haplotypes] snps_only", "training windows",
      "it reads [haplotypes] unphased, ref_mismatch, seed"]),
    (["--run", "r", "--unphased", "random"],
     ["--unphased: train.predict does not read [haplotypes] unphased without --vcf"]),
    (["--run", "r", "--set", "model.dim=8"],
     ["[model] dim", "exported model"]),
    (["--run", "r", "--set", "model.track=3"],
     ["[model] track with --run", "exported model"]),
    (["--run", "r", "--set", "loader.rc_prob=0"],
     ["[loader] rc_prob", "training-only"]),
    (["--run", "r", "--set", "loader.length=1024"],
     ["[loader] length with --run"]),
])
def test_predict_refuses_settings_it_does_not_read(tmp_path, capsys, argv, needles):
    code, err = _main("train.predict", ["--config", str(DEMO), "--workdir", str(tmp_path),
                                        *argv], capsys)
    assert code == 2 and "Traceback" not in err
    line = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(line) == 1, err
    for needle in needles:
        assert needle in line[0], line[0]


def test_predict_reads_the_vcf_policies_it_is_given(tmp_path):
    call = parse_command(_command("train.predict"), [
        "--config", str(DEMO), "--workdir", str(tmp_path), "--run", "r", "--vcf", "x.vcf.gz",
        "--unphased", "random", "--set", "haplotypes.seed=3", "--set", "loader.batch_size=2"])
    assert call.given("haplotypes") == {"unphased": "random", "seed": 3}
    assert call.given("loader") == {"batch_size": 2}


@pytest.mark.parametrize("module,argv,needle", [
    ("train.convert_weights", ["--set", "model.dim=8", "out"],
     "train.convert_weights does not read [model] dim"),
    ("prep.retarget", ["--set", "shard.seed=3"], "prep.retarget does not read [shard] seed"),
    ("prep.retarget", ["--set", "expression.n_pcs=3"],
     "[expression] n_pcs without --expression"),
    ("prep.shard", ["--set", "haplotypes.bed=x.bed"], "[haplotypes] bed: shards hold fixed"),
    ("prep.simulate", ["--set", "haplotypes.unphased=random"],
     "prep.simulate does not read [haplotypes] unphased"),
    ("analysis.baselines", ["--set", "haplotypes.snps_only=true"],
     "analysis.baselines does not read [haplotypes] snps_only"),
    ("analysis.attribute", ["--run", "r", "--gene", "g", "--set", "haplotypes.unphased=random"],
     "analysis.attribute does not read [haplotypes] unphased"),
    ("prep.enformer_data", ["--set", "haplotypes.vcf=x.vcf.gz"],
     "prep.enformer_data does not read [haplotypes] vcf"),
])
def test_other_commands_refuse_what_they_do_not_read(tmp_path, capsys, module, argv, needle):
    code, err = _main(module, ["--config", str(DEMO), "--workdir", str(tmp_path), *argv]
                      if _command(module).workdir else ["--config", str(DEMO), *argv], capsys)
    assert code == 2 and needle in err, err


def test_retarget_reads_expression_with_the_flag():
    command = _command("prep.retarget")
    with_flag = SimpleNamespace(expression=True)
    assert command.reads_key("expression", "n_pcs", with_flag)
    assert not command.reads_key("expression", "n_pcs", SimpleNamespace(expression=False))


def test_help_says_which_keys_are_read():
    text = build_parser(_command("train.predict")).format_help()
    assert "only unphased, ref_mismatch, seed; none without --vcf" in " ".join(text.split())


def test_a_key_never_read_is_explained_by_the_general_rule():
    command = Command(prog="python -m x.y", summary="s", reads=("model",), options=(), keys=(
        Keys("model", only=("track",), why="general"),
        Keys("model", only=(), when="run", why="with a run")))
    assert command.refusal("model", "dim", SimpleNamespace(run="r")).endswith(": general")
    assert command.refusal("model", "track", SimpleNamespace(run="r")) == (
        "x.y does not read [model] track with --run: with a run")
    assert "general (it reads [model] track)" in command.refusal("model", "dim",
                                                                 SimpleNamespace(run=None))
    assert command.reads_key("model", "track", SimpleNamespace(run=None))


def test_the_demo_passes_each_stage_only_what_it_reads(tmp_path):
    from analysis.whole_path import _check_sets_reach_a_stage, _stage_sets
    from hapflow.config import ConfigError

    predict = importlib.import_module("train.predict")
    sets = ["haplotypes.snps_only=true", "loader.batch_size=4", "model.dim=8"]
    argv = ["--config", str(DEMO), "--workdir", str(tmp_path), "--run", "demo"]
    assert _stage_sets(predict, sets, argv) == ["--set", "loader.batch_size=4"]
    _check_sets_reach_a_stage(sets)
    with pytest.raises(ConfigError, match=r"no stage of the demo reads \[simulate\] h2"):
        _check_sets_reach_a_stage(["simulate.h2=0.3"])


def test_every_log_line_of_a_command_is_timed(tmp_path):
    """prep.haplotypes on the demo VCF, whose header makes htslib warn: every line timed."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "prep.haplotypes", "--config", str(DEMO),
                          "--samples", "HG00096", "--length", "1024", "--output",
                          str(tmp_path / "h.fa")], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    assert any("note: htslib" in ln for ln in lines), out.stderr
    assert lines and all(TIMED.match(ln) for ln in lines), out.stderr
