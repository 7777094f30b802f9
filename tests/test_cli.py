"""The hapflow command and what every stage's command line shares (hapflow.cli)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import tomllib

import pytest

import hapflow
from hapflow.cli import COMMANDS
from hapflow.command import Command, describe_error, run_command
from hapflow.progress import LineProgress
from tests.conftest import CHR22_VCF, DATA, ROOT, assert_one_error_line

DEMO = ROOT / "configs" / "demo.toml"
EXPR = DATA / "chr22_demo" / "qtltools_geuvadis_chr22_20-21Mb.expr.bed"


def run(*args, timeout=120):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)




def test_version_matches_the_package_metadata():
    out = run("-m", "hapflow.cli", "--version")
    assert out.returncode == 0 and out.stdout.strip() == f"hapflow {hapflow.__version__}"
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["version"] == hapflow.__version__
    assert meta["project"]["scripts"]["hapflow"] == "hapflow.cli:main"
    assert "hapflow" in meta["tool"]["setuptools"]["packages"]


def test_hapflow_lists_every_subcommand_and_suggests_near_names():
    out = run("-m", "hapflow.cli", "--help")
    assert out.returncode == 0
    for name in COMMANDS:
        assert f"  {name} " in out.stdout
    out = run("-m", "hapflow.cli", "shrad")
    assert_one_error_line(out, "unknown subcommand 'shrad'", "did you mean 'shard'")


def test_every_help_is_instant_plain_and_complete():
    """--help of every subcommand: no torch, no Sphinx markup, --quiet, the next step."""
    code = (
        "import sys, time, importlib, contextlib, io\n"
        "name = sys.argv[1]\n"
        "t = time.perf_counter()\n"
        "m = importlib.import_module(name)\n"
        "buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf):\n"
        "    try:\n"
        "        m.main(['--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(round(time.perf_counter() - t, 3), 'torch' in sys.modules)\n"
        "print(buf.getvalue())\n"
    )
    times = {}
    for sub, module in COMMANDS.items():
        out = run("-c", code, module)
        assert out.returncode == 0, out.stderr
        first, _, text = out.stdout.partition("\n")
        seconds, torch_loaded = first.split()
        times[sub] = float(seconds)
        assert torch_loaded == "False", f"{module} --help imports torch"
        assert "``" not in text and ":func:" not in text and ":mod:" not in text, module
        assert "--quiet" in text, module
        assert "Next:" in text, module
    assert max(times.values()) < 1.0, times


@pytest.mark.parametrize("module", list(COMMANDS.values()))
def test_config_and_workdir_where_a_study_is_read(module):
    out = run("-m", module, "--help")
    if module in ("train.convert_weights",):
        return  # works on weights folders, not a study
    assert "--workdir" in out.stdout, module
    if module != "prep.verify":
        assert "--config" in out.stdout and "--set" in out.stdout, module


def test_shard_missing_vcf_is_one_error_line(tmp_path):
    out = run("-m", "prep.shard", "--config", str(DEMO), "--workdir", str(tmp_path),
              "--expression", str(EXPR), "--vcf", "missing.vcf.gz", "--quiet")
    assert_one_error_line(out, "missing.vcf.gz")
    assert not (tmp_path / "shards" / "config.toml").exists()


def test_preview_on_a_gpu_less_build_asks_for_cpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: --device cuda is valid here")
    out = run("-m", "loader.preview", "--config", str(DEMO), "--workdir", str(tmp_path),
              "--device", "cuda")
    assert_one_error_line(out, "--device cuda", "use --device cpu")


def test_os_error_names_the_path_and_cause(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    out = run("-m", "prep.haplotypes", "--config", str(DEMO), "--samples", "HG00097",
              "--length", "1024", "--output", str(blocker / "x.fa"), "--quiet")
    assert_one_error_line(out, str(blocker))


def test_misspelt_override_section_via_the_hapflow_command(tmp_path):
    out = run("-m", "hapflow.cli", "preview", "--config", str(DEMO), "--workdir",
              str(tmp_path), "--set", "loadr.batch_size=4")
    assert_one_error_line(out, "'loadr'", "did you mean 'loader'")


def test_float_for_an_integer_setting_on_the_command_line(tmp_path):
    out = run("-m", "hapflow.cli", "expression", "--config", str(DEMO), "--workdir",
              str(tmp_path), "--set", "expression.n_pcs=5.5")
    assert_one_error_line(out, "n_pcs", "'5.5' is not an integer")
    assert not (tmp_path / "expression").exists()


def test_htslib_header_warning_explained_once(tmp_path):
    """The demo VCF's header makes htslib print [W::bcf_hdr_check_sanity] on every open."""
    out = run("-m", "prep.haplotypes", "--config", str(DEMO), "--samples", "HG00096,HG00097",
              "--length", "1024", "--output", str(tmp_path / "h.fa"))
    assert out.returncode == 0, out.stderr
    assert "[W::bcf_hdr_check_sanity]" not in out.stderr
    assert out.stderr.count("note: htslib") == 1, out.stderr
    assert "GL should be declared as Number=G" in out.stderr


def test_htslib_filter_passes_other_output_through(capfd):
    """In-process: C-level writes to fd 2 that are not htslib's reach stderr unchanged."""
    code = (
        "import os, sys\n"
        "from hapflow.command import Command, run_command\n"
        "def fn(call):\n"
        "    import cyvcf2\n"
        f"    cyvcf2.VCF({str(CHR22_VCF)!r}); cyvcf2.VCF({str(CHR22_VCF)!r})\n"
        "    os.write(2, b'plain C-level line\\n')\n"
        "    print('python line', file=sys.stderr)\n"
        "    return 3\n"
        "sys.exit(run_command(Command(prog='t', summary='t', config='none'), fn, []))\n"
    )
    out = run("-c", code)
    assert out.returncode == 3
    assert "plain C-level line" in out.stderr and "python line" in out.stderr
    assert out.stderr.count("note: htslib") == 1


BARE = Command(prog="t", summary="a command that reads no study", config="none")


def test_run_command_reports_ours_and_raises_bugs(capsys):
    from prep.contigs import ContigError

    def missing_contig(call):
        raise ContigError("contig 'chr9' is in neither the FASTA nor the VCF")

    assert run_command(BARE, missing_contig, []) == 2
    assert capsys.readouterr().err == ("error: contig 'chr9' is in neither the FASTA nor the "
                                       "VCF\n")

    def bug(call):
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError):
        run_command(BARE, bug, [])


def test_describe_error_of_os_errors(tmp_path):
    try:
        open(tmp_path / "nope.txt")
    except OSError as err:
        assert describe_error(err) == f"{tmp_path / 'nope.txt'}: no such file or directory"
    assert describe_error(FileNotFoundError("sample file x does not exist")) == (
        "sample file x does not exist")


def test_describe_error_keeps_every_line_of_a_long_message():
    """A long message of several lines becomes one line, its last line kept (it used to be cut
    to its first line, so a list after a colon and the fix at its end were lost)."""
    text = "shards cannot be resumed:\n  - " + "\n  - ".join(["x" * 150] * 3) + "\nuse --overwrite"
    line = describe_error(ValueError(text))
    assert "\n" not in line and line.endswith("use --overwrite") and line.count("x" * 150) == 3


def test_line_progress_writes_plain_lines(caplog):
    caplog.set_level(logging.INFO, logger="hapflow.progress")
    with LineProgress(total=4, desc="shards", unit="gene", every_s=0.0) as bar:
        for _ in range(4):
            bar.update(1)
            time.sleep(0.001)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("shards: 1/4 genes (25%) after 0 s")
    assert lines[-1].startswith("shards: 4/4 genes (100%)")
