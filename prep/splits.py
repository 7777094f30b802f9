"""Which individuals train, validate and test each gene.

Every function here returns the same long table, one row per (gene, individual) pair::

    gene (str) | individual (str) | split (str, one of "train", "val", "test")

A gene may use a different set of individuals from another gene (the paper draws test and
validation individuals per gene); an individual absent for a gene is simply not a row.

Two sources:

* Explicit files, as published with Rastogi et al. 2024 (``data/paper``):
  :func:`read_sample_splits` reads the wide per-gene table (first column gene, one column per
  individual, cells ``train``/``val``/``test``), :func:`read_gene_classes` the gene → class
  table and :func:`read_paper_splits` combines both (``unseen`` genes: every individual in test).
  :func:`read_splits` also reads back what :func:`write_splits` wrote.
* Generated, seeded: :func:`random_split` (per gene, n individuals or a fraction to test),
  :func:`population_split` (one population to test, e.g. YRI) and :func:`unseen_gene_split`
  (genes on held-out chromosomes entirely to test). In each, ``val_fraction`` of the individuals
  not in test go to validation, drawn per gene. The draw for a gene depends only on ``seed`` and
  the gene id string, so adding or removing other genes does not change it.

Validation size is ``round(val_fraction * n_rest)`` (halves round up): 5 % of the paper's 344
non-test individuals is 17, the paper's count.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import polars as pl

from hapflow.io import atomic_write_bytes, atomic_write_parquet
from hapflow.names import SPLITS, contig_key

__all__ = [
    "SplitError",
    "validate_splits",
    "read_sample_splits",
    "read_gene_classes",
    "read_paper_splits",
    "read_splits",
    "read_samples",
    "random_split",
    "population_split",
    "unseen_gene_split",
    "write_splits",
]

_TRAIN, _VAL, _TEST = 0, 1, 2
"""Split codes used internally: positions in :data:`hapflow.names.SPLITS`."""

UNSEEN_CLASS = "unseen"
"""The gene class whose genes go entirely to test in :func:`read_paper_splits`."""


class SplitError(ValueError):
    """A split file or split request is invalid; the message names the file, gene or column."""


# ----------------------------------------------------------------------------------- checks


def validate_splits(splits: pl.DataFrame, source: str = "splits") -> pl.DataFrame:
    """Check a long split table and return it with columns gene, individual, split (strings).

    Parameters
    ----------
    splits : pl.DataFrame, shape=(n_pairs, >=3)
        Columns ``gene``, ``individual``, ``split``; extra columns are dropped.
    source : str
        Where the table came from (a file name), used in error messages.

    Raises
    ------
    SplitError
        A missing column, an empty table, a missing value, a label outside
        ``train``/``val``/``test`` or a (gene, individual) pair listed twice.
    """
    missing = [c for c in ("gene", "individual", "split") if c not in splits.columns]
    if missing:
        raise SplitError(
            f"{source}: missing column(s) {', '.join(missing)}; a split table has columns "
            f"gene, individual, split (found {', '.join(splits.columns) or 'none'})"
        )
    out = splits.select(pl.col("gene", "individual", "split").cast(pl.String))
    if out.height == 0:
        raise SplitError(f"{source}: the split table is empty; it needs at least one gene")
    for col in ("gene", "individual", "split"):
        nulls = out.filter(pl.col(col).is_null())
        if nulls.height:
            raise SplitError(f"{source}: {nulls.height} row(s) have no {col}; fill or drop them")
    bad = out.filter(~pl.col("split").is_in(SPLITS))
    if bad.height:
        gene, ind, label = bad.row(0)
        raise SplitError(
            f"{source}: gene {gene}, individual {ind}: unknown split label {label!r} "
            f"({bad.height} such row(s)); use one of {', '.join(SPLITS)}"
        )
    dup = out.filter(pl.struct("gene", "individual").is_duplicated())
    if dup.height:
        gene, ind, _ = dup.row(0)
        raise SplitError(
            f"{source}: gene {gene}, individual {ind} is listed more than once; "
            "keep one row per (gene, individual)"
        )
    return out


def _check_names(names: Sequence[str], what: str) -> list[str]:
    names = [str(n) for n in names]
    if not names:
        raise SplitError(f"the list of {what} is empty; give at least one")
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise SplitError(f"{what} {n} appears twice in the list; give each once")
        seen.add(n)
    return names


def _check_fraction(value: float, name: str) -> None:
    if not 0.0 <= value < 1.0:
        raise SplitError(f"{name}={value} must be in [0, 1)")


# ------------------------------------------------------------------------------------ files


def _read_table(path: str | os.PathLike) -> pl.DataFrame:
    """Read a CSV/TSV (separator sniffed) or Parquet file with every column as a string."""
    path = Path(path)
    if not path.exists():
        raise SplitError(f"split file {path} does not exist")
    if path.suffix in (".parquet", ".pq"):
        return pl.read_parquet(path).select(pl.all().cast(pl.String))
    with open(path, "rb") as fh:
        first = fh.readline()
    sep = "\t" if b"\t" in first else ","
    return pl.read_csv(path, separator=sep, infer_schema=False)


def read_sample_splits(path: str | os.PathLike) -> pl.DataFrame:
    """Read a wide per-gene split table (the paper's ``sample_splits.csv`` layout).

    The first column holds gene names (its header may be empty); every other column is an
    individual, each cell ``train``, ``val`` or ``test``. An empty cell means the individual is
    not used for that gene (no row in the output).

    Returns
    -------
    pl.DataFrame, shape=(n_pairs, 3)
        Columns gene, individual, split; genes in file order, individuals in column order.

    Raises
    ------
    SplitError
        The file is missing or empty, a gene is listed twice, or a cell is not a split label.
    """
    return _wide_to_long(_read_table(path), path)


def _wide_to_long(wide: pl.DataFrame, path: str | os.PathLike) -> pl.DataFrame:
    if wide.width < 2 or wide.height == 0:
        raise SplitError(
            f"{path}: expected a first column of genes and one column per individual, "
            f"found {wide.height} row(s) × {wide.width} column(s)"
        )
    gene_col = wide.columns[0]
    wide = wide.rename({gene_col: "gene"})
    dups = wide.filter(pl.col("gene").is_duplicated())["gene"]
    if len(dups):
        raise SplitError(f"{path}: gene {dups[0]} has more than one row; keep one per gene")
    long = (
        wide.unpivot(index="gene", variable_name="individual", value_name="split")
        .with_columns(pl.col("split").str.strip_chars())
        .filter(pl.col("split").is_not_null() & (pl.col("split") != ""))
    )
    bad = long.filter(~pl.col("split").is_in(SPLITS))
    if bad.height:
        gene, ind, label = bad.row(0)
        raise SplitError(
            f"{path}: row {gene}, column {ind}: {label!r} is not a split label "
            f"({bad.height} such cell(s)); cells must be {', '.join(SPLITS)} or empty"
        )
    # unpivot emits column by column; restore gene-major order
    order = {g: i for i, g in enumerate(wide["gene"])}
    gene_index = pl.col("gene").replace_strict(order, return_dtype=pl.Int64)
    long = long.sort(gene_index, maintain_order=True)
    return validate_splits(long, str(path))


def _read_keyed_table(path: str | os.PathLike, key: str, value: str, empty_hint: str):
    """Columns ``key``, ``value`` of a CSV/TSV/Parquet table; each key once, none empty."""
    table = _read_table(path)
    missing = [c for c in (key, value) if c not in table.columns]
    if missing:
        raise SplitError(
            f"{path}: missing column(s) {', '.join(missing)}; expected a header {key},{value}"
        )
    table = table.select(key, value)
    if table.height == 0:
        raise SplitError(f"{path}: {empty_hint}")
    empty = table.filter(pl.col(key).is_null() | pl.col(value).is_null())
    if empty.height:
        raise SplitError(f"{path}: {empty.height} row(s) lack a {key} or a {value}; fill them")
    dups = table.filter(pl.col(key).is_duplicated())[key]
    if len(dups):
        raise SplitError(f"{path}: {key} {dups[0]} is listed more than once; keep one row")
    return table


def read_gene_classes(path: str | os.PathLike) -> pl.DataFrame:
    """Read a gene → class table (the paper's ``gene_class.csv``: columns gene, class).

    Classes are free text; :func:`read_paper_splits` treats ``unseen`` specially.

    Returns
    -------
    pl.DataFrame, shape=(n_genes, 2)
        Columns gene, class, in file order.
    """
    return _read_keyed_table(path, "gene", "class", "no genes listed; add rows gene,class")


def read_paper_splits(
    sample_splits_path: str | os.PathLike, gene_class_path: str | os.PathLike
) -> pl.DataFrame:
    """The paper's splits: per-gene individuals for seen genes, every individual for unseen.

    Genes of class ``unseen`` in ``gene_class_path`` get every individual of
    ``sample_splits_path`` (its columns) in test; every other gene must have a row in
    ``sample_splits_path``. With the published files: 400 seen genes × 421 individuals
    (327 train / 17 val / 77 test each) plus 100 unseen genes × 421 test.

    Raises
    ------
    SplitError
        A seen gene without a row in the split table, an unseen gene that has one, or a
        split-table gene missing from the class table.
    """
    wide = _read_table(sample_splits_path)
    seen = _wide_to_long(wide, sample_splits_path)
    classes = read_gene_classes(gene_class_path)
    class_of = dict(classes.iter_rows())
    split_genes = seen["gene"].unique(maintain_order=True).to_list()
    for gene in split_genes:
        if gene not in class_of:
            raise SplitError(
                f"{sample_splits_path}: gene {gene} has no class in {gene_class_path}; "
                "add it there or drop its row"
            )
        if class_of[gene] == UNSEEN_CLASS:
            raise SplitError(
                f"{gene_class_path}: gene {gene} is {UNSEEN_CLASS!r} but has per-individual "
                f"splits in {sample_splits_path}; change its class or drop its row"
            )
    split_set = set(split_genes)
    for gene, cls in class_of.items():
        if cls != UNSEEN_CLASS and gene not in split_set:
            raise SplitError(
                f"{gene_class_path}: gene {gene} is {cls!r} but has no row in "
                f"{sample_splits_path}; add its row or mark it {UNSEEN_CLASS!r}"
            )
    individuals = wide.columns[1:]
    unseen = [g for g, c in class_of.items() if c == UNSEEN_CLASS]
    codes = np.full((len(unseen), len(individuals)), _TEST, dtype=np.uint8)
    return pl.concat([seen, _long_table(unseen, individuals, codes)])


def read_splits(path: str | os.PathLike) -> pl.DataFrame:
    """Read a split table: long (columns gene, individual, split) or wide (as the paper's).

    Parquet, CSV and TSV are accepted; a long table is what :func:`write_splits` writes.
    """
    table = _read_table(path)
    if {"gene", "individual", "split"} <= set(table.columns):
        return validate_splits(table, str(path))
    return read_sample_splits(path)


def read_samples(path: str | os.PathLike) -> pl.DataFrame:
    """Read a samples table with columns sample, population (the paper's ``samples.csv``).

    Returns
    -------
    pl.DataFrame, shape=(n_samples, 2)
        Columns sample, population, in file order.
    """
    return _read_keyed_table(path, "sample", "population", "no samples listed")


def write_splits(splits: pl.DataFrame, path: str | os.PathLike) -> Path:
    """Write a long split table atomically: Parquet for ``.parquet``, else TSV (``.csv``: CSV).

    Parameters
    ----------
    splits : pl.DataFrame, shape=(n_pairs, 3)
        Columns gene, individual, split (validated first).
    path : str or Path
        Output file, e.g. ``DIR/expression/splits.parquet``; folders are created.
    """
    path = Path(path)
    table = validate_splits(splits, "splits to write")
    if path.suffix in (".parquet", ".pq"):
        atomic_write_parquet(table, path)
    else:
        buf = io.BytesIO()
        table.write_csv(buf, separator="," if path.suffix == ".csv" else "\t")
        atomic_write_bytes(path, buf.getvalue())
    return path


# ------------------------------------------------------------------------------- generated


def _gene_rng(seed: int, gene: str) -> np.random.Generator:
    """A generator for one gene, from (seed, gene id) only."""
    digest = hashlib.sha256(gene.encode("utf-8")).digest()
    return np.random.default_rng([int(seed), int.from_bytes(digest[:8], "little")])


def _n_val(val_fraction: float, n_rest: int) -> int:
    return int(np.floor(val_fraction * n_rest + 0.5))


def _long_table(
    genes: Sequence[str], individuals: Sequence[str], codes: np.ndarray
) -> pl.DataFrame:
    """Build the long table from split codes, shape=(n_genes, n_individuals), uint8."""
    assert codes.shape == (len(genes), len(individuals)), "codes must be genes × individuals"
    n_genes, n_ind = codes.shape
    return pl.DataFrame(
        {
            "gene": pl.Series(list(genes), dtype=pl.String).gather(
                np.repeat(np.arange(n_genes), n_ind)
            ),
            "individual": pl.Series(list(individuals), dtype=pl.String).gather(
                np.tile(np.arange(n_ind), n_genes)
            ),
            "split": pl.Series(codes.ravel()).replace_strict(
                list(range(len(SPLITS))), list(SPLITS), return_dtype=pl.String
            ),
        }
    )


def random_split(
    genes: Sequence[str],
    individuals: Sequence[str],
    *,
    n_test: int | None = None,
    test_fraction: float | None = None,
    val_fraction: float = 0.05,
    seed: int = 0,
) -> pl.DataFrame:
    """Per gene, draw test individuals at random, then validation from the rest.

    Parameters
    ----------
    genes : sequence of str, length n_genes
    individuals : sequence of str, length n_individuals
        Every gene uses all of them.
    n_test, test_fraction : int or float
        Give exactly one: the number of test individuals per gene, or their fraction
        (``round(test_fraction * n_individuals)``). The paper: ``n_test=77`` of 421.
    val_fraction : float
        Fraction of the non-test individuals put in validation (paper: 0.05 → 17 of 344).
    seed : int
        With the gene id, the only source of randomness.

    Returns
    -------
    pl.DataFrame, shape=(n_genes * n_individuals, 3)
        Columns gene, individual, split.
    """
    genes = _check_names(genes, "genes")
    individuals = _check_names(individuals, "individuals")
    n = len(individuals)
    if (n_test is None) == (test_fraction is None):
        raise SplitError("give exactly one of n_test and test_fraction")
    if test_fraction is not None:
        _check_fraction(test_fraction, "test_fraction")
        n_test = int(np.floor(test_fraction * n + 0.5))
    _check_fraction(val_fraction, "val_fraction")
    n_val = _n_val(val_fraction, n - n_test)
    if not 0 < n_test or n_test + n_val >= n:
        raise SplitError(
            f"n_test={n_test} with {n_val} validation leaves no training individuals out of "
            f"{n} (or no test ones); choose 0 < n_test < {n - n_val}"
        )
    codes = np.full((len(genes), n), _TRAIN, dtype=np.uint8)
    for g, gene in enumerate(genes):
        perm = _gene_rng(seed, gene).permutation(n)
        codes[g, perm[:n_test]] = _TEST
        codes[g, perm[n_test : n_test + n_val]] = _VAL
    return _long_table(genes, individuals, codes)


def population_split(
    genes: Sequence[str],
    samples: pl.DataFrame,
    test_population: str,
    *,
    individuals: Sequence[str] | None = None,
    val_fraction: float = 0.05,
    seed: int = 0,
) -> pl.DataFrame:
    """Test on every individual of one population; validation drawn per gene from the rest.

    Parameters
    ----------
    genes : sequence of str, length n_genes
    samples : pl.DataFrame
        Columns sample, population (see :func:`read_samples`).
    test_population : str
        E.g. ``"YRI"``: all its individuals are test for every gene.
    individuals : sequence of str, optional
        Restrict to these individuals (each must be in ``samples``); default all samples.
    val_fraction : float
        Fraction of the other individuals put in validation, drawn per gene.
    seed : int

    Returns
    -------
    pl.DataFrame, shape=(n_genes * n_individuals, 3)
    """
    genes = _check_names(genes, "genes")
    _check_fraction(val_fraction, "val_fraction")
    if not {"sample", "population"} <= set(samples.columns):
        raise SplitError("the samples table needs columns sample, population (see read_samples)")
    pop_of = dict(samples.select(pl.col("sample", "population").cast(pl.String)).iter_rows())
    if individuals is None:
        individuals = list(pop_of)
    individuals = _check_names(individuals, "individuals")
    unknown = [i for i in individuals if i not in pop_of]
    if unknown:
        raise SplitError(
            f"individual {unknown[0]} ({len(unknown)} in all) has no population in the samples "
            "table; add it there or leave it out of individuals"
        )
    is_test = np.array([pop_of[i] == test_population for i in individuals])
    if not is_test.any():
        present = sorted({pop_of[i] for i in individuals})
        raise SplitError(
            f"population {test_population!r} has no individual here; "
            f"populations present: {', '.join(present)}"
        )
    if is_test.all():
        raise SplitError(f"every individual is {test_population}; nothing is left to train on")
    rest = np.flatnonzero(~is_test)
    n_val = _n_val(val_fraction, len(rest))
    if n_val >= len(rest):
        raise SplitError(f"val_fraction={val_fraction} leaves no training individuals")
    codes = np.where(is_test, _TEST, _TRAIN).astype(np.uint8)[None, :].repeat(len(genes), 0)
    for g, gene in enumerate(genes):
        codes[g, _gene_rng(seed, gene).permutation(rest)[:n_val]] = _VAL
    return _long_table(genes, individuals, codes)


def unseen_gene_split(
    gene_chroms: Mapping[str, str] | pl.DataFrame,
    test_chroms: Sequence[str],
    individuals: Sequence[str],
    *,
    val_fraction: float = 0.05,
    seed: int = 0,
) -> pl.DataFrame:
    """Genes on held-out chromosomes: every individual test; other genes: train, per-gene val.

    Parameters
    ----------
    gene_chroms : mapping gene → chromosome, or pl.DataFrame with columns gene, chrom
        Chromosome names compare by :func:`hapflow.names.contig_key` (``chr22`` equals ``22``,
        ``chrM`` equals ``MT``).
    test_chroms : sequence of str
        The held-out chromosomes, e.g. ``["22"]``.
    individuals : sequence of str
    val_fraction : float
        Fraction of individuals put in validation for each training gene.
    seed : int

    Returns
    -------
    pl.DataFrame, shape=(n_genes * n_individuals, 3)
    """
    if isinstance(gene_chroms, pl.DataFrame):
        if not {"gene", "chrom"} <= set(gene_chroms.columns):
            raise SplitError("gene_chroms needs columns gene, chrom")
        gene_chroms = dict(gene_chroms.select(pl.col("gene", "chrom").cast(pl.String)).iter_rows())
    genes = _check_names(list(gene_chroms), "genes")
    individuals = _check_names(individuals, "individuals")
    test_chroms = {contig_key(c) for c in _check_names(test_chroms, "test chromosomes")}
    _check_fraction(val_fraction, "val_fraction")
    chrom = [contig_key(gene_chroms[g]) for g in genes]
    absent = sorted(test_chroms - set(chrom))
    if absent:
        raise SplitError(
            f"held-out chromosome(s) {', '.join(absent)} carry none of the genes; "
            f"chromosomes present: {', '.join(sorted(set(chrom)))}"
        )
    held = np.array([c in test_chroms for c in chrom])
    if held.all():
        raise SplitError("every gene is on a held-out chromosome; nothing is left to train on")
    n = len(individuals)
    n_val = _n_val(val_fraction, n)
    if n_val >= n:
        raise SplitError(f"val_fraction={val_fraction} leaves no training individuals")
    codes = np.full((len(genes), n), _TRAIN, dtype=np.uint8)
    codes[held] = _TEST
    for g in np.flatnonzero(~held):
        codes[g, _gene_rng(seed, genes[g]).permutation(n)[:n_val]] = _VAL
    return _long_table(genes, individuals, codes)
