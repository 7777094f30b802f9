"""python -m loader.preview on the real demo shards."""

import pytest

from loader.preview import main
from tests.loader_demo import demo_shards


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return demo_shards(tmp_path_factory.getbasetemp()).parent


@pytest.mark.parametrize("mode", ["train", "pairwise", "eval", "gene"])
def test_preview_streams_each_mode(workdir, mode, capsys):
    rc = main(["--workdir", str(workdir), "--mode", mode, "--batches", "3",
               "--num-workers", "0"])
    assert rc == 0
    out = capsys.readouterr().out
    assert f"Streamed 3 {mode} batches" in out and "one-hot [8, 2, 49152, 4]" in out


def test_preview_reports_missing_shards(tmp_path, capsys):
    assert main(["--workdir", str(tmp_path)]) == 2
    assert "error:" in capsys.readouterr().err


def test_preview_reports_genes_per_batch_and_takes_overrides(workdir, capsys):
    args = ["--workdir", str(workdir), "--batches", "4", "--num-workers", "0", "--quiet"]
    assert main(args + ["--mode", "gene"]) == 0
    assert "1.0 distinct genes per batch" in capsys.readouterr().out
    assert main(args + ["--set", "loader.lanes=1", "--set", "loader.length=1024"]) == 0
    out = capsys.readouterr().out
    assert "one-hot [8, 2, 1024, 4]" in out and "distinct genes per batch" in out
    assert main(args + ["--set", "loader.lanes=0"]) == 2
    assert "lanes must be > 0" in capsys.readouterr().err
