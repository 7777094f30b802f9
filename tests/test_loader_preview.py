"""python -m loader.preview on the real demo shards."""

import pytest

from loader.preview import main
from tests.loader_demo import demo_shards


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return demo_shards(tmp_path_factory.getbasetemp()).parent


@pytest.mark.parametrize("mode", ["train", "pairwise", "eval"])
def test_preview_streams_each_mode(workdir, mode, capsys):
    rc = main(["--workdir", str(workdir), "--mode", mode, "--batches", "3",
               "--num-workers", "0"])
    assert rc == 0
    out = capsys.readouterr().out
    assert f"Streamed 3 {mode} batches" in out and "one-hot [8, 2, 49152, 4]" in out


def test_preview_reports_missing_shards(tmp_path, capsys):
    assert main(["--workdir", str(tmp_path)]) == 2
    assert "error:" in capsys.readouterr().err
