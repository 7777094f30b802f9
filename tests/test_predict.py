"""train.predict: every test sample once under torchrun; a VCF gives the same predictions as the
shards for the same people; a partly phased VCF's policies come from the command line and are
recorded; strands follow the run; run names are checked."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import numpy as np
import polars as pl
import pytest

from tests.conftest import CHR20_REF, CHR20_TSS, CHR20_UNPHASED, CHR22_REF, CHR22_VCF, ROOT
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
    assert out.returncode == 2 and "no run 'nope'" in out.stderr
    out = _predict(workdir, config, "--vcf", str(CHR22_VCF))
    assert out.returncode == 2 and "--vcf needs --reference" in out.stderr
    assert "Traceback" not in out.stderr


def _main(workdir, config, *extra) -> int:
    """train.predict in this process (its log lines reach caplog)."""
    from train.predict import main

    return main(["--config", str(config), "--workdir", str(workdir), *extra])


def test_a_misspelt_run_lists_the_runs_and_never_advises_a_resume_without_checkpoint(
        trained, capsys):
    workdir, config = trained
    assert _main(workdir, config, "--run", "shrot") == 2
    err = capsys.readouterr().err
    assert "no run 'shrot'" in err and "did you mean 'short'" in err and "short (finished)" in err
    (workdir / "runs" / "started").mkdir()
    assert _main(workdir, config, "--run", "started") == 2
    err = capsys.readouterr().err
    assert "no checkpoint" in err and "--resume" not in err and "--name started" in err


def _unphased_windows(tss_table, people, length) -> int:
    """Unphased heterozygous genotypes of ``people`` within each gene's window (an oracle read
    with cyvcf2, not hapflow)."""
    from cyvcf2 import VCF

    genes = pl.read_csv(tss_table, separator="\t")
    vcf = VCF(str(CHR20_UNPHASED), samples=people)
    total = 0
    for tss in genes["tss_hg19"].cast(pl.Int64):
        t = int(tss) - 1  # 0-based
        for rec in vcf(f"20:{t - length // 2 + 1}-{t + length - length // 2}"):
            gt = rec.genotype.array()
            total += int(((gt[:, 0] != gt[:, 1]) & (gt[:, 2] == 0)).sum())
    return total


def test_a_partly_phased_vcf_takes_its_policy_from_the_command_line(trained, tmp_path, capsys,
                                                                    caplog):
    """The 203 people of the partly phased chr20 VCF (phased inside PS blocks only): the run's
    policy ("error") stops naming the flags; --set haplotypes.unphased is honoured, recorded,
    and the genotypes it resolved counted."""
    workdir, config = trained
    tss = tmp_path / "tss.tsv"
    lines = CHR20_TSS.read_text().splitlines()
    tss.write_text("\n".join([lines[0]] + [ln for ln in lines if ln.split("\t")[0] in
                                             ("PSMF1", "PDYN-AS1", "PDYN")]) + "\n")
    people = ["NA12878", "NA06989"]
    vcf = ["--run", "short", "--vcf", str(CHR20_UNPHASED), "--reference", str(CHR20_REF),
           "--tss", str(tss), "--samples", ",".join(people)]
    assert _main(workdir, config, *vcf) == 2
    err = capsys.readouterr().err
    assert "unphased heterozygous genotype" in err
    assert "--unphased random" in err and "--set haplotypes.unphased=" in err
    caplog.set_level(logging.INFO)
    assert _main(workdir, config, *vcf, "--set", "haplotypes.unphased=random") == 0
    record = json.loads((workdir / "predictions" / "short" / "vcf.json").read_text())
    assert record["haplotypes"]["settings"]["unphased"] == "random"
    assert record["haplotypes"]["from"]["unphased"] == "the command line"
    assert record["haplotypes"]["from"]["ref_mismatch"].startswith("the run short")
    expected = _unphased_windows(tss, people, 2048)
    assert expected > 0
    assert record["genotypes"]["unphased_resolved"] == expected
    assert record["rows"] == 3 * len(people) and record["strands"]["rc_average"] is True
    assert f"{expected} unphased heterozygous resolved with 'random'" in caplog.text
    assert "predicting genes: 3/3 genes" in caplog.text
    assert _main(workdir, config, *vcf, "--unphased", "reference", "--set",
                 "haplotypes.seed=3") == 0
    record = json.loads((workdir / "predictions" / "short" / "vcf.json").read_text())
    assert record["haplotypes"]["settings"]["unphased"] == "reference"
    assert record["haplotypes"]["settings"]["seed"] == 3


def test_strands_follow_the_run(trained, caplog):
    """A run trained without reverse complements predicts forward only by default; --rc
    averages; the choice and its reason are written beside the predictions."""
    from train.loop import fine_tune

    workdir, config = trained
    fine_tune(load_train_study(config, {"train": {"max_steps": 1, "tensorboard": False},
                                        "loader": {"rc_prob": 0},
                                        "model": {"num_downsamples": 3}}),
              workdir, name="forward")
    caplog.set_level(logging.INFO)
    assert _main(workdir, config, "--run", "forward", "--split", "test") == 0
    out = workdir / "predictions" / "forward"
    table = pl.read_parquet(out / "test.parquet")
    assert table["prediction_rc"].is_nan().all()
    assert (table["prediction"] == table["prediction_forward"]).all()
    strands = json.loads((out / "test.json").read_text())["strands"]
    assert strands["rc_average"] is False and "rc_prob = 0" in strands["why"]
    assert "Strands: forward only" in caplog.text and "predicting test:" in caplog.text
    assert _main(workdir, config, "--run", "forward", "--split", "test", "--rc") == 0
    table = pl.read_parquet(out / "test.parquet")
    mean = (table["prediction_forward"] + table["prediction_rc"]) / 2
    assert np.allclose(table["prediction"], mean) and not table["prediction_rc"].is_nan().any()
    assert json.loads((out / "test.json").read_text())["strands"] == {
        "rc_average": True, "why": "--rc given"}


def test_a_run_validated_forward_only_predicts_forward_only():
    from hapflow.config import StudyConfig
    from hapflow.sections import LoaderConfig, TrainConfig
    from train.prediction import _run_strands

    assert _run_strands(StudyConfig(train=TrainConfig(val_rc_average=False)))[0] is False
    assert _run_strands(StudyConfig(loader=LoaderConfig(rc_prob=0.0)))[0] is False
    assert _run_strands(StudyConfig())[0] is True


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
