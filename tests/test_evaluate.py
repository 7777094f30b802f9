"""analysis.evaluate (analysis.evaluation, analysis.report) on the real chr22 demo shards with predictions written here.

Predictors (all from the demo's real test-split expression): ``noisy`` (Y plus seeded noise),
``flat_gene`` (noisier, and one gene predicted the same for everyone), ``permuted`` (Y shuffled,
10 % of the pairs missing) and ``sparse`` (one gene predicted for only 2 individuals).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy.stats import pearsonr, spearmanr

from analysis.evaluate import main
from analysis.evaluation import evaluate
from analysis.evaluation_inputs import EvaluationError, read_gene_class_table
from analysis.report import run_evaluation
from hapflow.config import StudyConfig, load_config
from hapflow.sections import ConfigError, EvaluateConfig
from tests.conftest import ROOT
from tests.loader_demo import demo_shards

CONFIG = ROOT / "configs" / "demo.toml"
PUBLISHED = ROOT / "data" / "paper" / "perf_summary.csv"


def _write(workdir: Path, name: str, frame: pl.DataFrame, split: str = "test") -> Path:
    path = workdir / "predictions" / name / f"{split}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(path)
    return path


def make_study(base: Path, name: str = "evaluate_study") -> Path:
    """A workdir whose shards are the demo's (linked) and whose predictions are written here."""
    shards = demo_shards(base)
    workdir = Path(base) / name
    workdir.mkdir(exist_ok=True)
    if not (workdir / "shards").exists():
        os.symlink(shards, workdir / "shards")
    test = (pl.read_parquet(shards / "manifest.parquet").filter(pl.col("split") == "test")
            .sort("gene", "individual"))
    ids = test.select("gene", "individual")
    y = test["Y"].to_numpy()
    rng = np.random.default_rng(11)
    genes = test["gene"].unique().sort().to_list()
    _write(workdir, "noisy", ids.with_columns(
        prediction=pl.Series(y + rng.normal(0, 0.1, y.size)),
        prediction_forward=pl.Series(y)))  # extra columns are allowed
    flat = y + rng.normal(0, 0.4, y.size)
    flat[(test["gene"] == genes[0]).to_numpy()] = 2.5
    _write(workdir, "flat_gene", ids.with_columns(prediction=pl.Series(flat)))
    _write(workdir, "permuted", ids.with_columns(prediction=pl.Series(rng.permutation(y)))
           .sample(fraction=0.9, seed=3, shuffle=True))
    sparse = ids.with_columns(prediction=pl.Series(y + rng.normal(0, 0.2, y.size)))
    keep = (pl.col("gene") != genes[1]) | (pl.int_range(pl.len()).over("gene") < 2)
    _write(workdir, "sparse", sparse.filter(keep))
    return workdir


def _cfg(**kw) -> EvaluateConfig:
    return dataclasses.replace(load_config(EvaluateConfig, CONFIG, "evaluate"), bootstrap=200,
                               **kw)


def _study(**kw) -> StudyConfig:
    """The study whose [evaluate] is :func:`_cfg`'s."""
    return StudyConfig(evaluate=_cfg(**kw))


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    return make_study(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def result(study):
    return evaluate(_study(), study)


@pytest.fixture(scope="module")
def test_split(study) -> pl.DataFrame:
    return pl.read_parquet(study / "shards" / "manifest.parquet").filter(
        pl.col("split") == "test").sort("gene", "individual")


def test_every_test_individual_of_every_gene_is_scored_once(result, test_split):
    assert sorted(result.predictors) == ["flat_gene", "noisy", "permuted", "sparse"]
    joined = result.joined
    assert joined.filter(pl.struct("predictor", "gene", "individual").is_duplicated()).height == 0
    expected = test_split.group_by("gene").len().rename({"len": "expected"})
    for name in ("noisy", "flat_gene"):
        got = joined.filter(pl.col("predictor") == name).group_by("gene").len()
        both = expected.join(got, on="gene", how="full", coalesce=True)
        assert both.height == 26 and (both["expected"] == both["len"]).all()
        pg = result.per_gene.filter((pl.col("predictor") == name) & (pl.col("population") == "all"))
        assert pg.height == 26 and (pg["n"] == pg["n_split"]).all()
    assert set(joined["individual"]) <= set(test_split["individual"])


def test_per_gene_r_matches_scipy(result, test_split):
    pg = result.per_gene.filter(pl.col("predictor") == "noisy").sort("gene")
    joined = result.joined.filter(pl.col("predictor") == "noisy")
    for row in pg.iter_rows(named=True):
        pts = joined.filter(pl.col("gene") == row["gene"])
        obs = test_split.filter(pl.col("gene") == row["gene"])["Y"].to_numpy()
        np.testing.assert_array_equal(pts["observed"].to_numpy(), obs)
        p = pts["prediction"].to_numpy()
        assert row["pearson_r"] == pytest.approx(pearsonr(p, obs).statistic, abs=1e-12)
        assert row["spearman_r"] == pytest.approx(spearmanr(p, obs).statistic, abs=1e-12)
    assert pg["class"].unique().to_list() == ["seen"]  # random split: every gene has training


def test_constant_gene_counts_as_zero(result):
    pg = result.per_gene.filter((pl.col("predictor") == "flat_gene")
                                & (pl.col("population") == "all")).sort("gene")
    assert pg["prediction_constant"].to_list() == [True] + [False] * 25
    assert pg["pearson_r"][0] == 0.0 and pg["spearman_r"][0] == 0.0
    s = result.summary.filter((pl.col("predictor") == "flat_gene") & (pl.col("class") == "all"))
    assert s["n_constant"][0] == 1 and s["n_genes"][0] == 26
    assert s["mean_r"][0] == pytest.approx(pg["pearson_r"].mean())
    cov = result.coverage.filter(pl.col("predictor") == "flat_gene")
    assert cov["genes_constant"][0] == 1
    assert any("flat_gene: 1 gene(s) have the same prediction" in w for w in result.warnings)


def test_partial_coverage_is_scored_and_reported(result):
    cov = result.coverage.filter(pl.col("predictor") == "permuted").row(0, named=True)
    assert cov["pairs_expected"] == 832 and cov["pairs_predicted"] == 748  # int(0.9 * 832)
    assert cov["coverage"] == pytest.approx(cov["pairs_predicted"] / 832)
    assert result.joined.filter(pl.col("predictor") == "permuted").height == cov["pairs_predicted"]
    pg = result.per_gene.filter((pl.col("predictor") == "permuted") & (pl.col("population") == "all"))
    assert pg["n"].sum() == cov["pairs_predicted"] and pg["n_split"].sum() == 832
    assert any("permuted: predictions cover 748 of 832" in w for w in result.warnings)


def test_gene_with_too_few_individuals_is_listed_not_crashed(result):
    pg = result.per_gene.filter((pl.col("predictor") == "sparse") & (pl.col("population") == "all"))
    bad = pg.filter(pl.col("excluded").is_not_null())
    assert bad.height == 1 and bad["n"][0] == 2 and np.isnan(bad["pearson_r"][0])
    assert "fewer than 3" in bad["excluded"][0]
    s = result.summary.filter((pl.col("predictor") == "sparse") & (pl.col("class") == "all"))
    assert s["n_genes"][0] == 25 and s["n_excluded"][0] == 1
    assert not np.isnan(s["mean_r"][0])


def test_ranking_summary_and_paired_comparison(result):
    assert result.predictors[0] == "noisy" and result.predictors[-1] == "permuted"
    s = result.summary.filter(pl.col("class") == "all")
    assert (s["mean_r_low"] <= s["mean_r"]).all() and (s["mean_r"] <= s["mean_r_high"]).all()
    pair = result.paired.filter((pl.col("predictor_a") == "noisy")
                                & (pl.col("predictor_b") == "permuted")
                                & (pl.col("class") == "all")).row(0, named=True)
    assert pair["n_genes"] == 26 and pair["mean_diff"] > 0.3 and pair["wilcoxon_p"] < 1e-4
    assert pair["diff_low"] < pair["mean_diff"] < pair["diff_high"]
    n = len(result.predictors)
    assert result.paired.filter(pl.col("class") == "all").height == n * (n - 1) // 2


def test_seeded_and_target_invariant(study, result):
    again = evaluate(_study(), study)
    assert again.summary.equals(result.summary) and again.paired.equals(result.paired)
    z = evaluate(_study(target="Z", predictions=["noisy"]), study)
    a = result.per_gene.filter(pl.col("predictor") == "noisy")["pearson_r"].to_numpy()
    np.testing.assert_allclose(z.per_gene["pearson_r"].to_numpy(), a, atol=1e-10)
    other = evaluate(_study(seed=5, predictions=["noisy"]), study)
    row = other.summary.filter(pl.col("class") == "all")
    assert row["mean_r"][0] == pytest.approx(z.summary.filter(pl.col("class") == "all")["mean_r"][0])
    assert row["mean_r_low"][0] != z.summary.filter(pl.col("class") == "all")["mean_r_low"][0]


def test_gene_class_table_matches_ids_without_versions(study, tmp_path, test_split):
    genes = test_split["gene"].unique().sort().to_list()
    rows = [(g.split(".")[0].lower(), "random_split") for g in genes[:10]]
    rows += [(g, "unseen") for g in genes[10:20]]
    path = tmp_path / "classes.csv"
    path.write_text("gene,class\n" + "".join(f"{g},{c}\n" for g, c in rows))
    res = evaluate(_study(gene_classes=str(path), predictions=["noisy"]), study)
    counts = dict(res.summary.filter(pl.col("class") != "all").select("class", "n_genes")
                  .iter_rows())
    assert counts == {"random_split": 10, "unseen": 10, "unlisted": 6}
    assert any("6 of 26 genes are not in" in w for w in res.warnings)
    pair_classes = set(res.paired["class"]) if res.paired.height else set()
    assert pair_classes <= {"all", "random_split", "unseen", "unlisted"}
    classes, unlisted = read_gene_class_table(path, genes)
    assert unlisted == 6 and classes.height == 26
    with pytest.raises(EvaluationError, match="none of the split's 26 genes"):
        read_gene_class_table(ROOT / "data" / "paper" / "gene_class.csv", genes)


def test_own_classes_and_population_breakdown(tmp_path_factory, study):
    """Edge case the random demo split lacks: genes without training individuals, and two
    populations (assigned here to the real individuals, alternately by name)."""
    base = tmp_path_factory.mktemp("pops")
    (base / "shards").mkdir()
    manifest = pl.read_parquet(study / "shards" / "manifest.parquet")
    people = sorted(manifest["individual"].unique().to_list())
    pop = {p: ("YRI" if i % 2 else "Non-YRI") for i, p in enumerate(people)}
    unseen = sorted(manifest["gene"].unique().to_list())[:3]
    manifest = manifest.filter(~(pl.col("gene").is_in(unseen) & (pl.col("split") == "train")))
    manifest = manifest.with_columns(pl.col("individual").replace_strict(pop).alias("population"))
    manifest.write_parquet(base / "shards" / "manifest.parquet")
    preds = pl.read_parquet(study / "predictions" / "noisy" / "test.parquet")
    _write(base, "noisy", preds)
    res = evaluate(_study(), base)
    assert res.populations == ["Non-YRI", "YRI"]
    pg = res.per_gene
    classes = dict(pg.filter(pl.col("population") == "all").select("gene", "class").iter_rows())
    assert sorted(g for g, c in classes.items() if c == "unseen") == unseen
    per_pop = pg.filter(pl.col("population") != "all").group_by("gene").agg(pl.col("n").sum())
    total = pg.filter(pl.col("population") == "all").select("gene", "n")
    assert per_pop.join(total, on="gene").filter(pl.col("n") != pl.col("n_right")).height == 0
    s = res.summary
    assert set(s["population"]) == {"all", "Non-YRI", "YRI"}
    assert s.filter((pl.col("class") == "unseen") & (pl.col("population") == "all"))[
        "n_genes"][0] == 3


@pytest.mark.parametrize("case, message", [
    ("missing_column", "missing column\\(s\\) prediction"),
    ("duplicate", "is predicted more than once"),
    ("nan", "missing, NaN or infinite"),
    ("stray_gene", "gene\\(s\\) are not in the 'test' split, e.g. ENSG_NOT_A_GENE"),
    ("train_individual", "it is a 'train' individual of that gene"),
    ("unknown_individual", "it is not in the study"),
    ("text", "expected numbers"),
    ("empty", "no predictions \\(0 rows\\)"),
])
def test_bad_predictions_are_errors_naming_the_file(tmp_path_factory, study, test_split, case,
                                                    message):
    base = tmp_path_factory.mktemp(case)
    os.symlink(study / "shards", base / "shards")
    good = pl.read_parquet(study / "predictions" / "noisy" / "test.parquet").select(
        "gene", "individual", "prediction")
    train = pl.read_parquet(study / "shards" / "manifest.parquet").filter(
        pl.col("split") == "train").row(0, named=True)
    bad = {
        "missing_column": good.drop("prediction"),
        "duplicate": pl.concat([good, good.head(1)]),
        "nan": good.with_columns(pl.when(pl.int_range(pl.len()) == 5).then(float("nan"))
                                 .otherwise(pl.col("prediction")).alias("prediction")),
        "stray_gene": pl.concat([good, pl.DataFrame({"gene": ["ENSG_NOT_A_GENE"],
                                                     "individual": ["HG00096"],
                                                     "prediction": [1.0]})]),
        "train_individual": pl.concat([good, pl.DataFrame({
            "gene": [train["gene"]], "individual": [train["individual"]], "prediction": [1.0]})]),
        "unknown_individual": pl.concat([good, pl.DataFrame({
            "gene": [train["gene"]], "individual": ["NOBODY"], "prediction": [1.0]})]),
        "text": good.with_columns(pl.col("prediction").cast(pl.Utf8)),
        "empty": good.head(0),
    }[case]
    path = _write(base, "broken", bad)
    with pytest.raises(EvaluationError, match=message) as err:
        evaluate(_study(), base)
    assert str(path) in str(err.value)


def test_study_level_errors(tmp_path, study):
    with pytest.raises(EvaluationError, match="shard manifest .* not found"):
        evaluate(_study(), tmp_path)
    with pytest.raises(EvaluationError, match="no rows of split 'holdout'"):
        evaluate(_study(split="holdout"), study)
    empty = tmp_path / "empty"
    empty.mkdir()
    os.symlink(study / "shards", empty / "shards")
    with pytest.raises(EvaluationError, match="no predictions for split 'test'"):
        evaluate(_study(), empty)
    with pytest.raises(EvaluationError, match="not found"):
        evaluate(_study(predictions=["nonexistent"]), study)
    # value checks of [evaluate] live in the section (hapflow.sections): ConfigError
    with pytest.raises(ConfigError, match="bootstrap = 0"):
        evaluate(StudyConfig(evaluate=dataclasses.replace(_cfg(), bootstrap=0)), study)
    with pytest.raises(ConfigError, match="min_individuals = 1"):
        evaluate(_study(min_individuals=1), study)


def test_cli_writes_outputs_and_reruns_give_the_same_bytes(study, tmp_path, capsys):
    out = tmp_path / "report"
    argv = ["--config", str(CONFIG), "--workdir", str(study), "--out", str(out),
            "--predictions", "noisy", "permuted", "--set", "evaluate.bootstrap=100", "--quiet"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"Report: {out / 'report.html'}" in printed
    assert "Best predictor on the test split: noisy" in printed and "seen:" in printed
    names = ["per_gene.parquet", "summary.parquet", "paired.parquet", "coverage.parquet",
             "config.toml", "report.html", "figures/r_distributions.png"]
    first = {n: (out / n).read_bytes() for n in names}
    assert "bootstrap = 100" in first["config.toml"].decode()
    assert pl.read_parquet(out / "per_gene.parquet")["predictor"].unique().sort().to_list() == [
        "noisy", "permuted"]
    assert main(argv) == 0
    assert {n: (out / n).read_bytes() for n in names} == first
    assert main(["--config", str(CONFIG), "--workdir", str(tmp_path / "none")]) == 2
    assert "error:" in capsys.readouterr().err


def test_run_evaluation_defaults_to_workdir_report(study):
    res, html = run_evaluation(_study(predictions=["noisy"], published=str(PUBLISHED)), study)
    assert html == study / "report" / "report.html" and html.exists()
    assert (study / "report" / "figures" / "published.png").exists()
    assert res.predictors == ["noisy"]
