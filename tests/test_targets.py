"""Tests for expression matrices (prep.expression_files), GEUVADIS processing
(prep.expression_processing), the Y/Z/P targets (prep.targets) and prep.expression."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from hapflow.config import StudyConfig, load_toml
from hapflow.names import gene_key, strip_version
from hapflow.sections import ConfigError, ExpressionConfig
from prep.expression import main
from prep.expression_files import (
    ExpressionError,
    detect_format,
    read_expression,
    write_expression,
)
from prep.expression_processing import (
    expressed_genes,
    log1p_expression,
    process_geuvadis,
    remove_top_pcs,
    rpkm_to_tpm,
)
from prep.splits import random_split
from prep.targets import (
    compute_targets,
    percentile_of,
    run_expression,
    target_columns,
    targets_for,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "chr22_demo"
QTLTOOLS = DATA / "qtltools_geuvadis_chr22_20-21Mb.expr.bed"
FASTQTL = DATA / "fastqtl_geuvadis_chr22_20-21Mb.normexpr.bed"


@pytest.fixture(scope="module")
def qtltools() -> pl.DataFrame:
    return read_expression(QTLTOOLS)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------------- gene ids


def test_strip_version():
    assert strip_version("ENSG00000099889.9") == "ENSG00000099889"
    assert strip_version("ENSG00000099889") == "ENSG00000099889"
    assert strip_version("ENSG00000182378.14_PAR_Y") == "ENSG00000182378_PAR_Y"
    assert strip_version("ENSMUSG00000000001.4") == "ENSMUSG00000000001"
    assert strip_version("AC017104.1") == "AC017104.1"  # a clone symbol, not a version
    assert strip_version("arvcf") == "arvcf"


def test_gene_key():
    assert gene_key("ENSG00000099901.12") == gene_key("ENSG00000099901.11") == "ENSG00000099901"
    assert gene_key("abhd10") == "ABHD10"


# ----------------------------------------------------------------------------------- reading


def test_detect_format(tmp_path):
    assert detect_format(QTLTOOLS) == "bed"
    assert detect_format(FASTQTL) == "bed"
    assert detect_format(_write(tmp_path / "m.csv", "gene,a\nENSG1,1\n")) == "matrix"
    rpkm = _write(tmp_path / "r.txt", "TargetID\tGene_Symbol\tChr\tCoord\ta\nENSG1\tX\t22\t5\t1\n")
    assert detect_format(rpkm) == "geuvadis_rpkm"
    assert detect_format(tmp_path / "m.parquet") == "matrix"


def test_read_expression_qtltools_bed(qtltools):
    assert qtltools.shape == (26, 359)  # gene + 358 individuals; 6 annotation columns dropped
    assert qtltools.columns[:3] == ["gene", "HG00096", "HG00097"]
    assert qtltools["gene"][0] == "ENSG00000099889.9"
    assert qtltools["HG00096"][0] == pytest.approx(0.4306028641)
    assert qtltools["HG00097"][1] == pytest.approx(3.64162938)


def test_read_expression_fastqtl_bed():
    fastqtl = read_expression(FASTQTL)
    assert fastqtl.shape == (16, 374)  # 4 annotation columns dropped
    assert fastqtl["gene"][3] == "ENSG00000099901.11"
    assert fastqtl["HG00096"][0] == pytest.approx(0.500272639253194)


def test_read_expression_geuvadis_rpkm_and_matrix(tmp_path):
    text = (
        "TargetID\tGene_Symbol\tChr\tCoord\tHG00096\tHG00097\n"
        "ENSG00000099889.9\tARVCF\t22\t20004331\t0.43\t0.37\n"
        "ENSG00000183597.11\tTANGO2\t22\t20004537\t3\t3.6\n"
    )
    rpkm = read_expression(_write(tmp_path / "GD660.txt", text))
    assert rpkm.columns == ["gene", "HG00096", "HG00097"]
    assert rpkm["gene"].to_list() == ["ENSG00000099889.9", "ENSG00000183597.11"]
    assert rpkm["HG00096"].to_list() == [0.43, 3.0]  # integers read as Float64
    matrix = read_expression(_write(tmp_path / "m.csv", "id,HG00096\nENSG00000099889,2\n"))
    assert matrix.columns == ["gene", "HG00096"]
    assert matrix["HG00096"].dtype == pl.Float64


def test_read_expression_raises_missing_file(tmp_path):
    with pytest.raises(ExpressionError, match="does not exist"):
        read_expression(tmp_path / "absent.bed")


def test_read_expression_raises_non_numeric(tmp_path):
    path = _write(tmp_path / "m.tsv", "gene\tHG00096\nENSG1\t1.5\nENSG2\tNA?\n")
    with pytest.raises(ExpressionError, match=r"individual HG00096 has non-numeric.*ENSG2"):
        read_expression(path)


def test_read_expression_raises_missing_value(tmp_path):
    path = _write(tmp_path / "m.csv", "gene,HG00096,HG00097\nENSG1,1.5,\nENSG2,2,3\n")
    with pytest.raises(ExpressionError, match="gene ENSG1, individual HG00097"):
        read_expression(path)


def test_read_expression_raises_same_gene_two_versions(tmp_path):
    path = _write(tmp_path / "m.csv", "gene,HG00096\nENSG00000099889.9,1\nENSG00000099889.10,2\n")
    with pytest.raises(ExpressionError, match="ENSG00000099889.9 and ENSG00000099889.10"):
        read_expression(path)


def test_read_expression_raises_bed_without_header(tmp_path):
    path = _write(tmp_path / "m.bed", "chr\tstart\tend\tgene\tHG00096\n22\t1\t2\tENSG1\t1\n")
    with pytest.raises(ExpressionError, match="'#chr start end gene' header"):
        read_expression(path, format="bed")


# -------------------------------------------------------------------------------- processing


def test_rpkm_to_tpm():
    tpm = rpkm_to_tpm(np.array([[1.0, 2.0], [3.0, 2.0]]))
    np.testing.assert_allclose(tpm, [[250_000.0, 500_000.0], [750_000.0, 500_000.0]])


def test_rpkm_to_tpm_raises_negative():
    with pytest.raises(ExpressionError, match="non-negative"):
        rpkm_to_tpm(np.array([[1.0, -0.5]]))


def test_expressed_genes():
    values = np.array([[0, 0, 1, 1], [0, 1, 1, 1], [0, 0, 0, 1], [2, 2, 2, 2]], dtype=float)
    # zero in 2/4 (dropped: half or more), 1/4 (kept), 3/4 (dropped), 0/4 (kept)
    assert expressed_genes(values).tolist() == [False, True, False, True]
    assert expressed_genes(values, 0.0).tolist() == [True, True, True, True]


def test_expressed_genes_raises_bad_fraction():
    with pytest.raises(ExpressionError, match=r"must be in \[0, 1\)"):
        expressed_genes(np.ones((2, 2)), 1.0)


def test_remove_top_pcs():
    x = np.array([[3.0, -3.0, 0.0], [1.0, -1.0, 0.0], [0.0, 1.0, -1.0]])
    before = x.copy()
    np.testing.assert_allclose(remove_top_pcs(x, 0), x)
    out = remove_top_pcs(x, 2)
    np.testing.assert_allclose(out, 0.0, atol=1e-12)  # rank 2: nothing left
    np.testing.assert_array_equal(x, before)  # input unchanged


def test_remove_top_pcs_raises_too_many():
    with pytest.raises(ExpressionError, match=r"0 <= n_pcs < 2"):
        remove_top_pcs(np.zeros((3, 2)), 2)


def test_process_geuvadis(qtltools):
    out = process_geuvadis(qtltools, n_pcs=5)
    assert out.shape == (26, 359)  # no demo gene is zero in half the individuals
    assert out["gene"].to_list() == qtltools["gene"].to_list()
    assert out["HG00096"][0] == pytest.approx(7.273831731864265, rel=1e-9)
    # independent reference: regress each standardised gene on the top 5 PCs (eigh) + intercept
    rpkm = qtltools.select(qtltools.columns[1:]).to_numpy()
    logged = np.log(rpkm / rpkm.sum(0) * 1e6 + 0.01)
    mean, sd = logged.mean(1, keepdims=True), logged.std(1, keepdims=True)
    z = (logged - mean) / sd
    w, v = np.linalg.eigh(z.T @ z)
    design = np.c_[np.ones(z.shape[1]), v[:, np.argsort(w)[::-1][:5]]]
    beta, *_ = np.linalg.lstsq(design, z.T, rcond=None)
    expected = (z.T - design @ beta).T * sd + mean
    np.testing.assert_allclose(out.select(out.columns[1:]).to_numpy(), expected, atol=1e-10)


def test_process_geuvadis_drops_unexpressed():
    rpkm = pl.DataFrame(
        {
            "gene": ["g1", "g2", "g3"],
            "a": [1.0, 0.0, 1.0],
            "b": [1.0, 0.0, 3.0],
            "c": [2.0, 5.0, 2.0],
        }
    )
    out = process_geuvadis(rpkm, n_pcs=0)
    assert out["gene"].to_list() == ["g1", "g3"]  # g2 is zero in 2 of 3
    # TPM of a: g1 = 1/2 * 1e6, c: g1 = 2/9 * 1e6
    assert out["a"][0] == pytest.approx(math.log(500_000 + 0.01))
    assert out["c"][0] == pytest.approx(math.log(2 / 9 * 1e6 + 0.01))


def test_process_geuvadis_raises_too_many_pcs(qtltools):
    with pytest.raises(ExpressionError, match="n_pcs=26 is too many for 26 genes"):
        process_geuvadis(qtltools, n_pcs=26)


def test_log1p_expression(qtltools):
    out = log1p_expression(qtltools)
    assert out["HG00096"][0] == pytest.approx(math.log1p(0.4306028641))
    assert qtltools["HG00096"][0] == pytest.approx(0.4306028641)  # input unchanged


def test_log1p_expression_raises_negative():
    with pytest.raises(ExpressionError, match="HG00099 is -0.249.*set log1p = false"):
        log1p_expression(read_expression(FASTQTL))


def test_write_expression(tmp_path, qtltools):
    path = write_expression(qtltools, tmp_path / "out" / "expression.parquet")
    back = pl.read_parquet(path)
    assert back.equals(qtltools)
    assert read_expression(path).equals(qtltools)


# ----------------------------------------------------------------------------------- targets


def test_percentile_of():
    p = percentile_of(np.array([3.0, 1.0, 4.0, 2.0]), np.array([0.0, 2.0, 2.5, 4.0, 9.0]))
    assert p.tolist() == [0.0, 50.0, 50.0, 100.0, 100.0]


def test_percentile_of_raises_empty():
    with pytest.raises(ExpressionError, match="at least one reference value"):
        percentile_of(np.array([]), np.array([1.0]))


def _tiny():
    expression = pl.DataFrame(
        {
            "gene": ["ENSG00000099889.9", "ENSG00000183597.11"],
            "a": [1.0, 5.0],
            "b": [2.0, 6.0],
            "c": [3.0, 7.0],
            "d": [4.0, 8.0],
            "e": [10.0, 9.0],
        }
    )
    splits = pl.DataFrame(
        {
            "gene": ["ENSG00000099889"] * 5 + ["ENSG00000183597.11"] * 2,  # versions differ
            "individual": ["a", "b", "c", "d", "e", "a", "e"],
            "split": ["train", "train", "train", "train", "test", "test", "test"],
        }
    )
    return expression, splits


def test_compute_targets():
    expression, splits = _tiny()
    out = compute_targets(expression, splits)
    assert out.columns == ["gene", "individual", "split", "Y", "Z", "P"]
    first = out.filter(pl.col("gene") == "ENSG00000099889.9")  # the matrix's spelling
    assert first["Y"].to_list() == [1.0, 2.0, 3.0, 4.0, 10.0]
    # train mean 2.5, population sd sqrt(1.25); e is test and does not move them
    sd = math.sqrt(1.25)
    np.testing.assert_allclose(first["Z"], [-1.5 / sd, -0.5 / sd, 0.5 / sd, 1.5 / sd, 7.5 / sd])
    assert first["P"].to_list() == [25.0, 50.0, 75.0, 100.0, 100.0]
    # second gene: no training individuals (unseen), so its own a and e are the reference
    second = out.filter(pl.col("gene") == "ENSG00000183597.11")
    assert second["individual"].to_list() == ["a", "e"]
    np.testing.assert_allclose(second["Z"], [-1.0, 1.0])
    assert second["P"].to_list() == [50.0, 100.0]
    # the paper's (leaky) normalisation over all individuals
    leaky = compute_targets(expression, splits, reference="all").filter(pl.col("individual") == "e")
    assert leaky["P"].to_list() == [100.0, 100.0]
    assert leaky["Z"][0] == pytest.approx((10 - 4) / np.std([1, 2, 3, 4, 10]))


def test_compute_targets_real_data(qtltools):
    fastqtl = read_expression(FASTQTL)
    splits = random_split(fastqtl["gene"].to_list(), fastqtl.columns[1:], n_test=50, seed=7)
    out = compute_targets(log1p_expression(qtltools), splits)
    # 15 of the 16 FastQTL genes are in the QTLtools file, some under another version
    assert out["gene"].n_unique() == 15
    assert "ENSG00000099901.12" in out["gene"].to_list()  # FastQTL spells it .11
    assert out["individual"].n_unique() == 358
    assert out.height == 15 * 358
    train = out.filter(pl.col("split") == "train").group_by("gene").agg(pl.col("Z").mean())
    np.testing.assert_allclose(train["Z"], 0.0, atol=1e-12)
    assert out["P"].min() >= 0.0 and out["P"].max() <= 100.0


def test_compute_targets_raises_no_overlap():
    expression, splits = _tiny()
    symbols = {"ENSG00000099889": "arvcf", "ENSG00000183597.11": "tango2"}
    splits = splits.with_columns(pl.col("gene").replace_strict(symbols))
    with pytest.raises(ExpressionError, match="split genes like arvcf"):
        compute_targets(expression, splits)


def test_compute_targets_raises_two_spellings():
    expression, splits = _tiny()
    twice = pl.DataFrame({"gene": ["ENSG00000099889.9"], "individual": ["a"], "split": ["val"]})
    with pytest.raises(ExpressionError, match="appears under two spellings for individual a"):
        compute_targets(expression, pl.concat([splits, twice]))


def test_compute_targets_raises_constant_train():
    expression, splits = _tiny()
    expression = expression.with_columns(pl.lit(1.0).alias(c) for c in "abcd")
    with pytest.raises(ExpressionError, match="ENSG00000099889.9: its train values are all 1.0"):
        compute_targets(expression, splits)


# -------------------------------------------------------------------------- the stage and CLI


def _config(tmp_path: Path, body: str) -> Path:
    return _write(tmp_path / "study.toml", "[expression]\n" + body)


def test_run_expression(tmp_path):
    config = ExpressionConfig(input=str(QTLTOOLS), process="geuvadis", n_pcs=5)
    path = run_expression(StudyConfig(expression=config), tmp_path / "work")
    assert path == tmp_path / "work" / "expression" / "expression.parquet"
    out = pl.read_parquet(path)
    assert out.shape == (26, 359)
    assert out["HG00096"][0] == pytest.approx(7.273831731864265, rel=1e-9)
    saved = load_toml(tmp_path / "work" / "expression" / "config.toml")["expression"]
    assert saved["n_pcs"] == 5 and saved["process"] == "geuvadis"


def test_main(tmp_path):
    config = _config(tmp_path, f'input = "{QTLTOOLS}"\nlog1p = true\n')
    assert main(["--config", str(config), "--workdir", str(tmp_path / "w")]) == 0
    out = pl.read_parquet(tmp_path / "w" / "expression" / "expression.parquet")
    assert out["HG00096"][0] == pytest.approx(math.log1p(0.4306028641))


def test_main_raises_too_many_pcs_as_exit_code(tmp_path, capsys):
    config = _config(tmp_path, f'input = "{QTLTOOLS}"\nprocess = "geuvadis"\n')
    assert main(["--config", str(config), "--workdir", str(tmp_path), "--n-pcs", "30"]) == 2
    assert "n_pcs=30 is too many" in capsys.readouterr().err


def test_expression_config_raises_log1p_with_geuvadis():
    with pytest.raises(ConfigError, match="log1p = true conflicts"):
        ExpressionConfig(input="x.bed", process="geuvadis", log1p=True)


def test_expression_stage_raises_without_input(tmp_path):
    with pytest.raises(ConfigError, match="input is not set"):
        run_expression(StudyConfig(expression=ExpressionConfig()), tmp_path)


def test_targets_for_keeps_sample_order_and_masks_missing_pairs():
    matrix = pl.DataFrame({"gene": ["ENSG1.2", "ENSG2.1"], "A": [1.0, 5.0], "B": [3.0, 6.0],
                           "C": [2.0, 7.0]})
    samples = pl.DataFrame({"gene": ["ENSG2", "ENSG1", "ENSG1", "ENSG1", "ENSG3", "ENSG1",
                                     "ENSG2"],
                            "individual": ["A", "C", "A", "D", "A", "B", "B"],
                            "split": ["train", "test", "train", "train", "train", "train",
                                      "train"]})
    out = targets_for(samples, matrix, name="lcl")
    assert out.columns == list(target_columns("lcl")) == ["Y:lcl", "Z:lcl", "P:lcl"]
    y = out["Y:lcl"].to_list()
    assert y[:3] == [5.0, 2.0, 1.0] and math.isnan(y[3]) and math.isnan(y[4])
    # ENSG1's training individuals with a value: A (1.0) and B (3.0); D has none
    assert out["Z:lcl"].to_list()[1:3] == [0.0, -1.0] and out["Z:lcl"][5] == 1.0
    assert out["P:lcl"].to_list()[1:3] == [50.0, 50.0]


def test_targets_for_complete_names_the_missing_sample():
    matrix = pl.DataFrame({"gene": ["ENSG1"], "A": [1.0], "B": [3.0]})
    samples = pl.DataFrame({"gene": ["ENSG1", "ENSG1", "ENSG1"], "individual": ["A", "B", "X"],
                            "split": ["train", "train", "val"]})
    with pytest.raises(ExpressionError, match="m.tsv: 1 sample.*gene ENSG1, individual X.*rebuild"):
        targets_for(samples, matrix, source="m.tsv", complete=True)
