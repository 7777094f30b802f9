"""train.predict: every test sample once under torchrun; a VCF gives the same predictions as the
shards for the same people."""

from __future__ import annotations

import subprocess
import sys

import polars as pl
import pytest

from tests.conftest import CHR22_REF, CHR22_VCF, ROOT
from tests.test_train_run import _env, _free_port
from tests.train_demo import load_train_study, train_study


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from train.loop import fine_tune

    workdir, config = train_study(tmp_path_factory.mktemp("predict"))
    # 8 bp bins: a tiny random Enformer with 128 bp bins barely depends on its input before
    # training (prediction spread ~1e-6), which would make agreement checks vacuous
    fine_tune(load_train_study(config, {"train": {"max_steps": 2},
                                        "model": {"num_downsamples": 3}}),
              workdir, name="short")
    return workdir, config


def _predict(workdir, config, *extra, nproc=1):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
                "--master-addr", "127.0.0.1", "--master-port", str(_free_port())] \
        if nproc > 1 else [sys.executable]
    cmd = launcher + ["-m", "train.predict", "--config", str(config), "--workdir", str(workdir),
                      "--run-name" if nproc > 1 else "--run", "short", *extra]
    return subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
def test_two_processes_predict_every_test_sample_once(trained):
    workdir, config = trained
    out = _predict(workdir, config, "--split", "test", nproc=2)
    assert out.returncode == 0, out.stderr[-3000:]
    table = pl.read_parquet(workdir / "predictions" / "short" / "test.parquet")
    assert table.columns == ["gene", "individual", "prediction_forward", "prediction_rc",
                             "prediction"]
    manifest = pl.read_parquet(workdir / "shards" / "manifest.parquet").filter(
        pl.col("split") == "test")
    assert table.height == manifest.height
    assert set(zip(table["gene"], table["individual"], strict=True)) == set(
        zip(manifest["gene"], manifest["individual"], strict=True))
    mean = (table["prediction_forward"] + table["prediction_rc"]) / 2
    assert (table["prediction"] - mean).abs().max() < 1e-6
    assert (table["prediction_forward"] - table["prediction_rc"]).abs().max() > 0


@pytest.mark.slow
def test_vcf_predictions_equal_shard_predictions(trained):
    workdir, config = trained
    shards = workdir / "predictions" / "short" / "test.parquet"
    if not shards.exists():
        assert _predict(workdir, config, "--split", "test").returncode == 0
    table = pl.read_parquet(shards)
    people = sorted(set(table["individual"]))[:5]
    out = _predict(workdir, config, "--vcf", str(CHR22_VCF), "--reference", str(CHR22_REF),
                   "--tss", str(workdir / "tss4.tsv"), "--samples", ",".join(people))
    assert out.returncode == 0, out.stderr[-3000:]
    vcf = pl.read_parquet(workdir / "predictions" / "short" / "vcf.parquet")
    assert vcf.height == 4 * len(people)
    both = table.join(vcf, on=["gene", "individual"], suffix="_vcf")
    assert both.height == table.filter(pl.col("individual").is_in(people)).height > 0
    spread = both.group_by("gene").agg(pl.col("prediction").std())["prediction"].max()
    assert spread > 1e-4  # predictions differ between people: the check below means something
    for col in ("prediction_forward", "prediction_rc", "prediction"):
        assert (both[col] - both[f"{col}_vcf"]).abs().max() < 1e-6


def test_predict_errors_are_clear(trained, tmp_path):
    workdir, config = trained
    out = subprocess.run([sys.executable, "-m", "train.predict", "--config", str(config),
                          "--workdir", str(workdir), "--run", "nope"], cwd=ROOT, env=_env(),
                         capture_output=True, text=True)
    assert out.returncode == 2 and "has no exported model" in out.stderr
    out = _predict(workdir, config, "--vcf", str(CHR22_VCF))
    assert out.returncode == 2 and "--vcf needs --reference" in out.stderr
    assert "Traceback" not in out.stderr


def test_pretrained_baseline_predicts_from_a_weights_folder(trained, tmp_path):
    """--weights DIR: the pretrained (here: a tiny random, saved in Hugging Face layout) Enformer's
    track over the centre bins, the paper's not-fine-tuned baseline."""
    import torch

    from train.weights import enformer_hparams, new_enformer, save_hf_directory

    workdir, config = trained
    hparams = enformer_hparams({"dim": 48, "depth": 1, "heads": 1, "attn_dim_key": 16,
                                "dim_divisible_by": 8, "output_heads": {"human": 8},
                                "target_length": 16})
    torch.manual_seed(0)
    save_hf_directory(new_enformer(hparams), hparams, tmp_path / "enformer")
    out = subprocess.run([sys.executable, "-m", "train.predict", "--config", str(config),
                          "--workdir", str(workdir), "--weights", str(tmp_path / "enformer"),
                          "--split", "test"], cwd=ROOT, env=_env(), capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    table = pl.read_parquet(workdir / "predictions" / "pretrained" / "test.parquet")
    manifest = pl.read_parquet(workdir / "shards" / "manifest.parquet")
    assert table.height == manifest.filter(pl.col("split") == "test").height
    assert (table["prediction"] >= 0).all()  # a softplus track: non-negative
