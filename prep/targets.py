"""The per-(gene, individual) training targets Y, Z and P, and the expression stage.

:func:`run_expression` is the ``prep.expression`` stage: read the expression file
(:func:`prep.expression_files.read_expression`), process it (:mod:`prep.expression_processing`:
the paper's GEUVADIS pipeline, or log1p, or nothing) and write
``DIR/expression/expression.parquet``.

:func:`compute_targets` joins an expression matrix with a split table (:mod:`prep.splits`) into
the long table ``gene, individual, split, Y, Z, P``, and :func:`targets_for` gives those targets
for a fixed list of samples (the shards' manifest): the targets table that ``prep.shard`` and
``prep.retarget`` write beside the shards (shards hold sequences only,
:mod:`prep.target_table`). Several expression sets (e.g. one per tissue) give several column
triples, :func:`target_columns`.

Gene ids match with or without an Ensembl version (``ENSG00000099889.9`` =
``ENSG00000099889``) and case-insensitively, through :func:`hapflow.names.gene_key`; outputs
keep the expression matrix's own spelling.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from hapflow.config import StudyConfig, save_config
from hapflow.layout import Workdir
from hapflow.names import SPLITS, gene_key
from hapflow.sections import ConfigError
from prep.expression_files import (
    ExpressionError,
    matrix_values,
    read_expression,
    validate_matrix,
    write_expression,
)
from prep.expression_processing import log1p_expression, process_geuvadis
from prep.splits import validate_splits

__all__ = [
    "percentile_of",
    "compute_targets",
    "target_columns",
    "targets_for",
    "run_expression",
]

log = logging.getLogger(__name__)


def percentile_of(reference: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``P = 100 * (number of reference values <= value) / n_reference``.

    Example: reference ``[1, 2, 3, 4]``: value 0 → 0, 2 → 50, 2.5 → 50, 4 → 100, 9 → 100.

    Parameters
    ----------
    reference : np.ndarray, shape=(n_reference,), n_reference >= 1
    values : np.ndarray, shape=(n,)

    Returns
    -------
    np.ndarray, shape=(n,), float64 in [0, 100].
    """
    ref = np.sort(np.asarray(reference, dtype=np.float64))
    if ref.size == 0:
        raise ExpressionError("percentile_of needs at least one reference value")
    return (
        100.0 * np.searchsorted(ref, np.asarray(values, dtype=np.float64), side="right") / ref.size
    )


def compute_targets(
    expression: pl.DataFrame,
    splits: pl.DataFrame,
    *,
    reference: Literal["train", "all"] = "train",
) -> pl.DataFrame:
    """The training targets of every (gene, individual) pair present in both tables.

    * ``Y``: the expression value as given (log scale after :func:`process_geuvadis` or
      :func:`log1p_expression`).
    * ``Z``: per-gene z-score, ``(Y - mean) / sd`` with the population sd (ddof=0).
    * ``P``: per-gene percentile, :func:`percentile_of` (``100 * #{reference <= Y} / n``).

    Mean, sd and percentiles come from the gene's *training* individuals only
    (``reference="train"``), so validation and test values never shape their own targets.
    The paper normalised over all individuals, which leaks test information into Z and P;
    ``reference="all"`` reproduces that. A gene without training individuals (an unseen gene,
    all test) uses all its individuals, and this is logged.

    Parameters
    ----------
    expression : pl.DataFrame, shape=(n_genes, 1 + n_individuals)
        Column ``gene`` then one column per individual.
    splits : pl.DataFrame, shape=(n_pairs, 3)
        Columns gene, individual, split (see :mod:`prep.splits`). Genes match by
        :func:`gene_key` (version and case ignored).
    reference : {"train", "all"}

    Returns
    -------
    pl.DataFrame, shape=(n_matched_pairs, 6)
        Columns gene (the expression matrix's id), individual, split, Y, Z, P (Float64); genes
        in matrix order, individuals in matrix column order.

    Raises
    ------
    ExpressionError
        No pair in common, or a gene whose reference values are all equal (Z undefined).
    """
    if reference not in ("train", "all"):
        raise ExpressionError(f"reference={reference!r} must be 'train' or 'all'")
    expression = validate_matrix(expression, "expression matrix")
    splits = validate_splits(splits, "splits")
    pairs = _match_pairs(expression, splits)
    y = pairs["Y"].to_numpy()
    is_ref = (
        (pairs["split"] == "train").to_numpy() if reference == "train" else np.ones(len(y), bool)
    )
    gene_idx = pairs["_g"].to_numpy()
    z = np.empty_like(y)
    p = np.empty_like(y)
    starts = np.flatnonzero(np.r_[True, gene_idx[1:] != gene_idx[:-1]])
    ends = np.r_[starts[1:], len(y)]
    no_train: list[str] = []
    for start, end in zip(starts, ends, strict=True):
        gy = y[start:end]
        ref = gy[is_ref[start:end]]
        if ref.size == 0:
            no_train.append(pairs["gene"][int(start)])
            ref = gy
        sd = ref.std()
        if not sd > 0:
            raise ExpressionError(
                f"gene {pairs['gene'][int(start)]}: its {reference} values are all {ref[0]}, so "
                "the z-score is undefined; drop the gene (e.g. raise min_nonzero_fraction)"
            )
        z[start:end] = (gy - ref.mean()) / sd
        p[start:end] = percentile_of(ref, gy)
    if no_train:
        log.info(
            "%d gene(s) have no training individuals (e.g. %s); their Z and P use all their "
            "individuals",
            len(no_train),
            no_train[0],
        )
    return pairs.select("gene", "individual", "split", "Y").with_columns(
        Z=pl.Series(z), P=pl.Series(p)
    )


def _match_pairs(expression: pl.DataFrame, splits: pl.DataFrame) -> pl.DataFrame:
    """The splits' pairs found in the matrix, with Y, sorted by matrix gene then individual.

    Returns columns gene (matrix spelling), individual, split, Y, _g (matrix row) and _i
    (matrix individual), without building the long matrix: Y is ``values[_g, _i]``.
    """
    genes = expression["gene"].to_list()
    individuals = expression.columns[1:]
    row_of_key = {gene_key(g): row for row, g in enumerate(genes)}
    split_genes = splits["gene"].unique(maintain_order=True).to_list()
    row_of_gene = {g: row_of_key.get(gene_key(g)) for g in split_genes}
    pairs = splits.with_columns(
        _g=pl.col("gene").replace_strict(row_of_gene, default=None, return_dtype=pl.Int64),
        _i=pl.col("individual").replace_strict(
            {s: i for i, s in enumerate(individuals)}, default=None, return_dtype=pl.Int64
        ),
    ).drop_nulls(["_g", "_i"])
    if pairs.height == 0:
        raise ExpressionError(
            "no (gene, individual) pair is in both the expression matrix and the splits: "
            f"matrix genes look like {genes[0]}, split genes like {splits['gene'][0]}; matrix "
            f"individuals look like {individuals[0]}, split individuals like "
            f"{splits['individual'][0]}. Map gene symbols to the matrix's ids first"
        )
    matched_rows = [r for r in row_of_gene.values() if r is not None]
    if len(set(matched_rows)) < len(matched_rows):  # two spellings of one gene, e.g. .9 and .10
        clash = pairs.filter(pl.struct("_g", "_i").is_duplicated())
        if clash.height:
            raise ExpressionError(
                f"splits: gene {clash['gene'][0]} appears under two spellings for individual "
                f"{clash['individual'][0]} once the Ensembl version is ignored; keep one"
            )
    pairs = pairs.sort("_g", "_i")
    rows, cols = pairs["_g"].to_numpy(), pairs["_i"].to_numpy()
    pairs = pairs.with_columns(
        gene=expression["gene"].gather(rows), Y=pl.Series(matrix_values(expression)[rows, cols])
    )
    n_genes = pairs["_g"].n_unique()
    log.info(
        "Matched %d (gene, individual) pairs: %d of %d matrix genes, %d of %d split genes",
        pairs.height,
        n_genes,
        len(genes),
        sum(r is not None for r in row_of_gene.values()),
        len(split_genes),
    )
    assert set(pairs["split"].unique()) <= set(SPLITS), "validated split labels"
    return pairs


def target_columns(name: str | None = None) -> tuple[str, str, str]:
    """Manifest columns of a target set's Y, Z and P.

    ``("Y", "Z", "P")`` for the primary set (``name=None``), ``("Y:NAME", "Z:NAME", "P:NAME")``
    for a further set.
    """
    return ("Y", "Z", "P") if name is None else (f"Y:{name}", f"Z:{name}", f"P:{name}")


def targets_for(
    samples: pl.DataFrame,
    expression: pl.DataFrame,
    *,
    reference: Literal["train", "all"] = "train",
    name: str | None = None,
    source: str = "expression matrix",
    complete: bool = False,
) -> pl.DataFrame:
    """Y, Z and P of one expression matrix for a fixed list of samples.

    Z and P use the statistics of the samples this matrix has values for (the training ones with
    ``reference="train"``), as :func:`compute_targets`.

    Parameters
    ----------
    samples : pl.DataFrame, shape=(n, >= 3)
        Columns gene, individual, split (the manifest's spelling; genes match the matrix by
        :func:`gene_key`).
    expression : pl.DataFrame
        Column ``gene`` then one column per individual.
    reference : {"train", "all"}
    name : str, optional
        The set's name: output columns :func:`target_columns` (name).
    source : str
        Names the matrix in errors (its file).
    complete : bool
        Every sample must have a value (the primary set): otherwise an error naming the first
        missing (gene, individual). Else missing pairs are NaN (masked in batches).

    Returns
    -------
    pl.DataFrame, shape=(n, 3)
        The three target columns, Float64, in the order of ``samples`` (NaN where missing).

    Raises
    ------
    ExpressionError
        No sample in the matrix, a constant gene (Z undefined), or with ``complete`` a missing
        sample; messages name ``source``.
    """
    cols = target_columns(name)
    keyed = samples.select(
        pl.col("gene").map_elements(gene_key, return_dtype=pl.Utf8).alias("_k"),
        pl.col("individual"),
    )
    try:
        t = compute_targets(expression, samples.select("gene", "individual", "split"),
                            reference=reference)
    except ExpressionError as err:
        raise ExpressionError(f"{source}: {err}") from None
    t = t.select(
        pl.col("gene").map_elements(gene_key, return_dtype=pl.Utf8).alias("_k"),
        pl.col("individual"),
        pl.col("Y").alias(cols[0]), pl.col("Z").alias(cols[1]), pl.col("P").alias(cols[2]),
    )
    out = keyed.join(t, on=["_k", "individual"], how="left", maintain_order="left")
    missing = out.filter(pl.col(cols[0]).is_null())
    if complete and missing.height:
        first = samples.filter(pl.col("individual") == missing["individual"][0]).filter(
            pl.col("gene").map_elements(gene_key, return_dtype=pl.Utf8) == missing["_k"][0])
        raise ExpressionError(
            f"{source}: {missing.height} sample(s) of the shards have no value, first gene "
            f"{first['gene'][0]}, individual {first['individual'][0]}; a re-target can change "
            "the values of existing samples only: rebuild the shards "
            "(`python -m prep.shard ... --overwrite`) to drop or add samples"
        )
    return out.select(pl.col(c).fill_null(float("nan")) for c in cols)


def run_expression(study: StudyConfig, workdir: str | os.PathLike | Workdir) -> Path:
    """The ``prep.expression`` stage: read, process, write the matrix and the resolved config.

    Parameters
    ----------
    study : StudyConfig
        Its ``[expression]`` section says what to read and how to process it.
    workdir : Workdir, str or Path
        Outputs go to ``DIR/expression/expression.parquet`` and ``DIR/expression/config.toml``.

    Returns
    -------
    Path of the written Parquet file.

    Raises
    ------
    ConfigError
        ``[expression] input`` is not set.
    ExpressionError
        An unreadable file or values the processing cannot take.
    """
    config = study.expression
    if config.input is None:
        raise ConfigError("[expression] input is not set: give the expression file in the "
                          "config or with --input")
    workdir = Workdir(workdir)
    matrix = read_expression(config.input, config.format)
    log.info(
        "Read %d genes × %d individuals from %s", matrix.height, matrix.width - 1, config.input
    )
    if config.process == "geuvadis":
        matrix = process_geuvadis(
            matrix,
            n_pcs=config.n_pcs,
            min_nonzero_fraction=config.min_nonzero_fraction,
            pseudocount=config.pseudocount,
        )
    elif config.log1p:
        matrix = log1p_expression(matrix)
        log.info("Took log1p of every value")
    else:
        log.info("Kept the values as given (process = none, log1p = false)")
    path = write_expression(matrix, workdir.expression_matrix)
    save_config({"expression": config}, workdir.expression / "config.toml")
    log.info("Wrote %d genes × %d individuals to %s", matrix.height, matrix.width - 1, path)
    return path
