"""Tests for prep.splits, on the paper's published split files."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from prep.splits import (
    SplitError,
    population_split,
    random_split,
    read_gene_classes,
    read_paper_splits,
    read_sample_splits,
    read_samples,
    read_splits,
    unseen_gene_split,
    validate_splits,
    write_splits,
)

PAPER = Path(__file__).resolve().parents[1] / "data" / "paper"
SAMPLE_SPLITS = PAPER / "sample_splits.csv"
GENE_CLASS = PAPER / "gene_class.csv"
SAMPLES = PAPER / "samples.csv"


@pytest.fixture(scope="module")
def samples() -> pl.DataFrame:
    return read_samples(SAMPLES)


def _counts(splits: pl.DataFrame, gene: str) -> dict[str, int]:
    sub = splits.filter(pl.col("gene") == gene)
    return dict(sub.group_by("split").len().iter_rows())


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_validate_splits():
    table = pl.DataFrame({"split": ["train"], "gene": ["g"], "individual": ["i"], "x": [1]})
    assert validate_splits(table).columns == ["gene", "individual", "split"]


def test_validate_splits_raises_unknown_label():
    table = pl.DataFrame(
        {"gene": ["g", "g"], "individual": ["i", "j"], "split": ["train", "valid"]}
    )
    with pytest.raises(SplitError, match="gene g, individual j: unknown split label 'valid'"):
        validate_splits(table, "my.tsv")


def test_validate_splits_raises_duplicate_pair():
    table = pl.DataFrame({"gene": ["g", "g"], "individual": ["i", "i"], "split": ["train", "test"]})
    with pytest.raises(SplitError, match="gene g, individual i is listed more than once"):
        validate_splits(table)


def test_validate_splits_raises_missing_column():
    with pytest.raises(SplitError, match="missing column.*individual"):
        validate_splits(pl.DataFrame({"gene": ["g"], "split": ["train"]}))


def test_validate_splits_raises_empty():
    empty = pl.DataFrame(schema={"gene": pl.String, "individual": pl.String, "split": pl.String})
    with pytest.raises(SplitError, match="empty"):
        validate_splits(empty)


def test_read_sample_splits():
    splits = read_sample_splits(SAMPLE_SPLITS)
    assert splits.shape == (400 * 421, 3)
    assert splits.row(0) == ("abhd10", "HG00096", "train")
    assert splits.row(21) == ("abhd10", "HG00122", "val")  # the 22nd individual column
    assert _counts(splits, "abhd10") == {"train": 327, "val": 17, "test": 77}


def test_read_sample_splits_empty_cell_means_unused(tmp_path):
    path = _write(tmp_path / "s.csv", ",HG00096,HG00097\narvcf,train,\ndgcr8,val,test\n")
    assert read_sample_splits(path).rows() == [
        ("arvcf", "HG00096", "train"),
        ("dgcr8", "HG00096", "val"),
        ("dgcr8", "HG00097", "test"),
    ]


def test_read_sample_splits_raises_unknown_label(tmp_path):
    path = _write(tmp_path / "s.csv", ",HG00096,HG00097\narvcf,train,tset\n")
    with pytest.raises(SplitError, match=r"s.csv: row arvcf, column HG00097: 'tset'"):
        read_sample_splits(path)


def test_read_sample_splits_raises_duplicate_gene(tmp_path):
    path = _write(tmp_path / "s.tsv", "gene\tHG00096\narvcf\ttrain\narvcf\ttest\n")
    with pytest.raises(SplitError, match="gene arvcf has more than one row"):
        read_sample_splits(path)


def test_read_sample_splits_raises_missing_file(tmp_path):
    with pytest.raises(SplitError, match="does not exist"):
        read_sample_splits(tmp_path / "absent.csv")


def test_read_gene_classes():
    classes = read_gene_classes(GENE_CLASS)
    assert classes.row(0) == ("znf83", "random_split")
    assert dict(classes.group_by("class").len().iter_rows()) == {
        "random_split": 200,
        "yri_split": 200,
        "unseen": 100,
    }


def test_read_gene_classes_raises_missing_column(tmp_path):
    with pytest.raises(SplitError, match="missing column.*class"):
        read_gene_classes(_write(tmp_path / "c.csv", "gene,kind\narvcf,unseen\n"))


def test_read_paper_splits(samples):
    splits = read_paper_splits(SAMPLE_SPLITS, GENE_CLASS)
    assert splits.shape == (500 * 421, 3)
    classes = read_gene_classes(GENE_CLASS)
    unseen = classes.filter(pl.col("class") == "unseen")["gene"][0]
    assert _counts(splits, unseen) == {"test": 421}
    # a yri_split gene tests exactly the 77 YRI individuals
    yri_gene = classes.filter(pl.col("class") == "yri_split")["gene"][0]
    test = set(
        splits.filter((pl.col("gene") == yri_gene) & (pl.col("split") == "test"))["individual"]
    )
    yri = set(samples.filter(pl.col("population") == "YRI")["sample"])
    assert test == yri and len(yri) == 77


def test_read_paper_splits_raises_seen_gene_without_row(tmp_path):
    splits = _write(tmp_path / "s.csv", ",HG00096,HG00097\nabhd10,train,test\n")
    classes = _write(tmp_path / "c.csv", "gene,class\nabhd10,random_split\nnewgene,yri_split\n")
    with pytest.raises(SplitError, match="gene newgene is 'yri_split' but has no row"):
        read_paper_splits(splits, classes)


def test_read_paper_splits_raises_unseen_gene_with_row(tmp_path):
    splits = _write(tmp_path / "s.csv", ",HG00096,HG00097\nabhd10,train,test\n")
    classes = _write(tmp_path / "c.csv", "gene,class\nabhd10,unseen\n")
    with pytest.raises(SplitError, match="gene abhd10 is 'unseen' but has per-individual splits"):
        read_paper_splits(splits, classes)


def test_read_samples(samples):
    assert samples.height == 421
    assert samples.row(0) == ("NA19099", "YRI")
    assert dict(samples.group_by("population").len().iter_rows()) == {"YRI": 77, "Non-YRI": 344}


def test_read_samples_raises_duplicate(tmp_path):
    path = _write(tmp_path / "s.csv", "sample,population\nNA19099,YRI\nNA19099,YRI\n")
    with pytest.raises(SplitError, match="sample NA19099 is listed more than once"):
        read_samples(path)


def test_random_split(samples):
    individuals = samples["sample"].to_list()
    splits = random_split(["abhd10", "arvcf"], individuals, n_test=77, seed=1)
    assert splits.height == 2 * 421
    assert _counts(splits, "abhd10") == {"train": 327, "val": 17, "test": 77}  # as the paper
    # seeded, and a gene's draw does not depend on the other genes
    alone = random_split(["arvcf"], individuals, n_test=77, seed=1)
    assert alone.equals(splits.filter(pl.col("gene") == "arvcf"))
    other_seed = random_split(["arvcf"], individuals, n_test=77, seed=2)
    assert not other_seed.equals(alone)
    # the two genes test different individuals
    tests = [
        set(splits.filter((pl.col("gene") == g) & (pl.col("split") == "test"))["individual"])
        for g in ("abhd10", "arvcf")
    ]
    assert tests[0] != tests[1]
    by_fraction = random_split(
        ["g"], ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"], test_fraction=0.2
    )
    assert _counts(by_fraction, "g") == {"train": 8, "test": 2}  # round(0.05 * 8) = 0 val


def test_random_split_raises_both_sizes():
    with pytest.raises(SplitError, match="exactly one of n_test and test_fraction"):
        random_split(["g"], ["a", "b"], n_test=1, test_fraction=0.5)


def test_random_split_raises_too_many_test():
    with pytest.raises(SplitError, match="leaves no training individuals out of 3"):
        random_split(["g"], ["a", "b", "c"], n_test=3)


def test_random_split_raises_empty_genes():
    with pytest.raises(SplitError, match="list of genes is empty"):
        random_split([], ["a", "b"], n_test=1)


def test_population_split(samples):
    splits = population_split(["abhd10", "arvcf"], samples, "YRI", seed=0)
    assert _counts(splits, "abhd10") == {"train": 327, "val": 17, "test": 77}
    yri = set(samples.filter(pl.col("population") == "YRI")["sample"])
    for gene in ("abhd10", "arvcf"):
        sub = splits.filter(pl.col("gene") == gene)
        assert set(sub.filter(pl.col("split") == "test")["individual"]) == yri
    vals = [
        set(splits.filter((pl.col("gene") == g) & (pl.col("split") == "val"))["individual"])
        for g in ("abhd10", "arvcf")
    ]
    assert vals[0] != vals[1] and not (vals[0] & yri)  # drawn per gene, never from YRI


def test_population_split_raises_unknown_population(samples):
    with pytest.raises(
        SplitError, match="'CEU' has no individual here; populations present: Non-YRI, YRI"
    ):
        population_split(["abhd10"], samples, "CEU")


def test_population_split_raises_individual_without_population(samples):
    with pytest.raises(SplitError, match="individual HG99999 .* has no population"):
        population_split(["abhd10"], samples, "YRI", individuals=["NA19099", "HG99999"])


def test_unseen_gene_split(samples):
    egenes = pl.read_csv(
        PAPER / "eur_egenes_hg19.csv",
        has_header=False,
        new_columns=["gene", "chrom", "tss", "symbol", "strand"],
    )
    individuals = samples["sample"].to_list()[:40]
    splits = unseen_gene_split(egenes.select("gene", "chrom"), ["chr22"], individuals, seed=3)
    assert splits.height == 3259 * 40
    per_gene = splits.group_by("gene").agg((pl.col("split") == "test").all().alias("held"))
    assert per_gene["held"].sum() == 96  # the 96 eGenes on chromosome 22 ("chr22" matches 22)
    assert _counts(splits, "ENSG00000000457") == {"train": 38, "val": 2}  # chr1; 5 % of 40


def test_unseen_gene_split_raises_absent_chromosome():
    with pytest.raises(
        SplitError, match="chromosome.* 23 carry none of the genes; chromosomes present: 22"
    ):
        unseen_gene_split({"ENSG00000099889": "chr22", "ENSG00000183597": "22"}, ["23"], ["a", "b"])


def test_write_splits(tmp_path):
    splits = read_sample_splits(SAMPLE_SPLITS).head(1000)
    for name in ("splits.parquet", "splits.tsv"):
        path = write_splits(splits, tmp_path / "out" / name)
        assert read_splits(path).equals(splits)
