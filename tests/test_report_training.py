"""The report shows how the results came about (issue 15, 6): per fine-tuned run its training
curves (loss and validation r against step and wall time, from metrics.jsonl and its
``wall_seconds``), gene symbols next to the Ensembl ids, and for a simulated study the oracle r as a
reference row. Real data: the chr22 demo shards (symbols from its TSS table) and a chr20 study
simulated and sharded here with ``prep.simulate`` and ``prep.shard``."""

from __future__ import annotations

import dataclasses
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from analysis.evaluate import main
from analysis.evaluation import ORACLE
from analysis.report import run_evaluation
from analysis.training_log import read_training_log
from hapflow.config import StudyConfig, load_config, load_study
from hapflow.sections import EvaluateConfig
from tests.conftest import ROOT
from tests.test_evaluate import make_study
from train.metrics import MetricsLog

CONFIG = ROOT / "configs" / "demo.toml"
OWN = ROOT / "configs" / "chr20_own_study.toml"


def _log_run(run_dir: Path, steps: int = 30, seconds_per_step: float = 3.0) -> None:
    """metrics.jsonl of a run as the trainer writes it (through its MetricsLog, with the
    records' wall_seconds as train.loop sets them): a training record every 5 steps and a
    validation every 10, with a loss that falls and an r that rises."""
    run_dir.mkdir(parents=True, exist_ok=True)
    log = MetricsLog(run_dir, steps, 0, enabled=True, tensorboard=False)
    for step in range(1, steps + 1):
        wall = step * seconds_per_step
        if step % 5 == 0:
            log.train_step({"kind": "train", "step": step, "epoch": 0, "loss": 2.0 / step,
                            "lr": 1e-3, "grad_norm": 1.0, "samples_per_s": 10.0,
                            "data_wait": 0.0, "wall_seconds": wall})
        if step % 10 == 0:
            log.validation({"kind": "val", "step": step, "epoch": 0, "val_loss": 1.0 / step,
                            "val_pearson_r": step / 100, "val_pearson_r_median": 0.1,
                            "val_genes": 26, "seconds": 1.5, "wall_seconds": wall + 1.5})
    log.close()


def _img_count(text: str) -> int:
    return text.count("<img ")


class _Text(HTMLParser):
    def __init__(self):
        super().__init__()
        self.parts: list[str] = []

    def handle_data(self, data):
        self.parts.append(data)


def _text(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    return " ".join(" ".join(parser.parts).split())


# ------------------------------------------------------------------ metrics.jsonl: the reader
def test_training_log_reader_describes_missing_and_broken_files(tmp_path):
    missing = read_training_log(tmp_path / "none", "none")
    assert "does not exist" in missing.problem and missing.train.height == 0
    _log_run(tmp_path / "cut", steps=30)
    path = tmp_path / "cut" / "metrics.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:4]) + "\n" + lines[4][:17] + "\n")  # killed mid-write
    cut = read_training_log(tmp_path / "cut", "cut")
    assert cut.problem.endswith("line 5 is not JSON (cut by a kill?); the curves show the 4 "
                                "record(s) before it")
    assert cut.train["step"].to_list() == [5, 10, 15] and cut.val["step"].to_list() == [10]
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "metrics.jsonl").write_text('{"kind": "train", "step": "5"}\n')
    assert "line 1: train record without an integer step" in read_training_log(
        tmp_path / "odd", "odd").problem
    old = tmp_path / "old"
    old.mkdir()
    (old / "metrics.jsonl").write_text('{"kind": "train", "step": 5, "loss": 1.5}\n'
                                      '{"kind": "val", "step": 5, "val_pearson_r": null, '
                                      '"val_loss": 1.0}\n')
    log = read_training_log(old, "old")  # a log of a run trained before wall_seconds existed
    assert log.problem is None and not log.has_time and np.isnan(log.val["val_pearson_r"][0])


# ------------------------------------------------------------------ the report: curves, symbols
@pytest.fixture(scope="module")
def curves(tmp_path_factory):
    """The evaluate study with three predictors as runs: ``noisy`` logged whole, ``flat_gene``
    cut by a kill, ``permuted`` without metrics.jsonl."""
    study = make_study(tmp_path_factory.getbasetemp(), "curves_study")
    runs = study / "runs"
    if runs.exists():
        shutil.rmtree(runs)
    _log_run(runs / "noisy", steps=40)
    _log_run(runs / "flat_gene", steps=30)
    path = runs / "flat_gene" / "metrics.jsonl"
    path.write_text(path.read_text()[:-20])
    (runs / "permuted").mkdir()
    cfg = dataclasses.replace(load_config(EvaluateConfig, CONFIG, "evaluate"), bootstrap=100)
    result, html = run_evaluation(StudyConfig(evaluate=cfg), study)
    return result, html, html.read_text()


def test_every_run_gets_its_curves_or_one_line(curves):
    result, html, text = curves
    assert [log.run for log in result.training] == [r for r in result.predictors
                                                   if r in ("noisy", "flat_gene", "permuted")]
    words = _text(text)
    assert "How the runs trained" in words
    assert re.search(r"Run permuted No complete training curves: \S+/runs/permuted/metrics"
                     r"\.jsonl does not exist \(the run logged no metrics\)\.", words), words
    assert re.search(r"No complete training curves: \S+/runs/flat_gene/metrics\.jsonl line \d+ "
                     r"is not JSON \(cut by a kill\?\); the curves show the \d+ record\(s\) "
                     r"before it", words)
    for run in ("noisy", "flat_gene"):
        png = html.parent / "figures" / f"training_{run}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f'alt="training curves of {run}"' in text
    assert not (html.parent / "figures" / "training_permuted.png").exists()
    # distributions, best/worst, predictor pairs, published + two runs' curves
    assert _img_count(text) == 6


def test_the_numbers_of_a_run(curves):
    _, _, text = curves
    words = _text(text)
    # noisy: 40 steps, last loss 2/40, best validation r 0.40 at step 40, 4 validations,
    # wall time 40 x 3 s + the last validation's 1.5 s
    assert re.search(r"Run noisy steps final training loss best validation r at step last "
                     r"validation r validations wall time 40 0\.050 0\.400 40 0\.400 4 "
                     r"0:02:02", words), words


def test_gene_symbols_stand_next_to_ids(curves):
    result, html, text = curves
    per_gene = pl.read_parquet(html.parent / "per_gene.parquet")
    assert per_gene.columns[:3] == ["predictor", "gene", "symbol"]
    assert dict(zip(per_gene["gene"], per_gene["symbol"], strict=False))[
        "ENSG00000099889.9"] == "ARVCF"
    assert result.symbols["ENSG00000183597.11"] == "TANGO2"
    # the genes left out of the means: symbol and id in the table
    sparse = per_gene.filter((pl.col("predictor") == "sparse") & pl.col("excluded").is_not_null()
                             & (pl.col("population") == "all")).row(0, named=True)
    assert f"<td>sparse</td><td>{sparse['symbol']}</td><td>{sparse['gene']}</td>" in text


def test_a_report_without_runs_has_no_training_section(tmp_path_factory):
    study = make_study(tmp_path_factory.getbasetemp(), "no_runs_study")
    cfg = dataclasses.replace(load_config(EvaluateConfig, CONFIG, "evaluate"), bootstrap=50)
    result, html = run_evaluation(StudyConfig(evaluate=cfg), study)
    assert result.training == [] and "How the runs trained" not in html.read_text()
    assert result.oracle is None and "oracle" not in html.read_text()


# ------------------------------------------------------------------ a simulated study's oracle
@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """configs/chr20_own_study.toml simulated and sharded (real chr20 genotypes), with one
    predictor: the test split's simulated expression plus seeded noise."""
    from prep.sharding import run_shard
    from prep.simulation import run_simulate

    workdir = tmp_path_factory.mktemp("simulated")
    study = load_study(OWN, need=("haplotypes", "simulate", "shard", "evaluate"))
    run_simulate(study, workdir)
    run_shard(study, workdir)
    test = pl.read_parquet(workdir / "shards" / "manifest.parquet").filter(
        pl.col("split") == "test")
    rng = np.random.default_rng(5)
    path = workdir / "predictions" / "noisy" / "test.parquet"
    path.parent.mkdir(parents=True)
    test.select("gene", "individual", prediction=pl.col("Y") + rng.normal(0, 1, test.height)
                ).write_parquet(path)
    return workdir, study


def test_simulated_study_shows_the_oracle_as_a_reference_row(simulated, capsys):
    workdir, study = simulated
    assert main(["--config", str(OWN), "--workdir", str(workdir)]) == 0
    printed = capsys.readouterr().out
    genes = pl.read_parquet(workdir / "expression" / "simulation_genes.parquet")
    test_genes = pl.read_parquet(workdir / "shards" / "manifest.parquet").filter(
        pl.col("split") == "test")["gene"].unique()
    expected = genes.filter(pl.col("gene").is_in(test_genes.implode()))["oracle_r"].mean()
    oracle = pl.read_parquet(workdir / "report" / "oracle.parquet")
    assert oracle["predictor"].unique().to_list() == [ORACLE]
    assert oracle["class"].to_list()[0] == "all" and oracle["n_genes"][0] == test_genes.len()
    assert oracle["mean_r"][0] == pytest.approx(expected)
    assert oracle["mean_r_low"][0] < expected < oracle["mean_r_high"][0]
    assert f"Oracle r of this simulated study (the best any predictor can reach): " \
           f"{expected:.3f}" in printed
    text = (workdir / "report" / "report.html").read_text()
    assert f"<td>{ORACLE}</td><td>all</td><td>{test_genes.len()}</td><td>{expected:.3f}</td>" \
        in text
    assert f"oracle r {expected:.3f}</b>" in text
    # the predictors' own summary is not changed by the reference rows
    summary = pl.read_parquet(workdir / "report" / "summary.parquet")
    assert ORACLE not in summary["predictor"].to_list()


def test_an_oracle_table_of_another_simulation_is_an_error(simulated, tmp_path):
    workdir, study = simulated
    other = tmp_path / "w"
    shutil.copytree(workdir / "shards", other / "shards")
    shutil.copytree(workdir / "predictions", other / "predictions")
    (other / "expression").mkdir()
    pl.DataFrame({"gene": ["ENSG00000000001"], "oracle_r": [0.5]}).write_parquet(
        other / "expression" / "simulation_genes.parquet")
    from analysis.evaluation_inputs import EvaluationError

    with pytest.raises(EvaluationError, match="names none of the split's"):
        run_evaluation(study, other)


def test_curves_against_wall_time_when_logged(tmp_path):
    """Two rows of panels (step, then wall time) for a log with wall_seconds, one for an older
    log without; a simulated study's oracle r is drawn over the validation r."""
    import io

    import matplotlib.image

    from analysis.report_figures import figure_training_curves

    _log_run(tmp_path / "new", steps=20)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "metrics.jsonl").write_text(
        "".join(line.replace(', "wall_seconds"', ', "x"') + "\n" for line in
                (tmp_path / "new" / "metrics.jsonl").read_text().splitlines()))
    new, old = (read_training_log(tmp_path / n, n) for n in ("new", "old"))
    assert new.has_time and not old.has_time

    def height(png: bytes) -> int:
        return matplotlib.image.imread(io.BytesIO(png), format="png").shape[0]

    assert height(figure_training_curves(new)) > 1.7 * height(figure_training_curves(old))
    assert figure_training_curves(new, 0.71) != figure_training_curves(new)
