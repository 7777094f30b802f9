"""Expression matrices on disk: read, check and write them.

An expression matrix is a polars DataFrame, genes x individuals: a first column ``gene`` (the
gene id as the source file spells it, str) then one Float64 column per individual. Internally
values are NumPy arrays of shape (n_genes, n_individuals) (:func:`matrix_values`).

* :func:`read_expression` reads a CSV/TSV/Parquet matrix, a QTLtools or FastQTL BED, or the
  GEUVADIS ``GD660.GeneQuantRPKM.txt.gz`` layout (:func:`detect_format` guesses which);
* :func:`validate_matrix` checks a matrix (numeric, finite, one row per gene);
* :func:`write_expression` writes one as Parquet, atomically.

Gene ids are matched with or without an Ensembl version (``ENSG00000099889.9`` =
``ENSG00000099889``) and case-insensitively (:func:`hapflow.names.gene_key`): two rows that are
one gene by that rule are an error.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from hapflow.io import atomic_write_parquet
from hapflow.names import gene_key

__all__ = [
    "ExpressionError",
    "Format",
    "GEUVADIS_RPKM_COLUMNS",
    "detect_format",
    "read_expression",
    "validate_matrix",
    "matrix_values",
    "matrix_from_values",
    "write_expression",
]

Format = Literal["auto", "matrix", "bed", "geuvadis_rpkm"]
"""Layouts of an expression file (``[expression] format``, ``[shard] expression_format``)."""

GEUVADIS_RPKM_COLUMNS = ("TargetID", "Gene_Symbol", "Chr", "Coord")
"""The annotation columns that open ``GD660.GeneQuantRPKM.txt.gz``; samples follow."""


class ExpressionError(ValueError):
    """An expression file or matrix is invalid; the message names the file, gene or sample."""



def _check_unique_keys(genes: list[str], source: str) -> list[str]:
    keys = [gene_key(g) for g in genes]
    first: dict[str, str] = {}
    for gene, key in zip(genes, keys, strict=True):
        if key in first:
            raise ExpressionError(
                f"{source}: genes {first[key]} and {gene} are the same gene once the Ensembl "
                "version is ignored; keep one of them"
            )
        first[key] = gene
    return keys



def _header_fields(path: Path) -> tuple[list[str], str]:
    """The first line's fields and the separator (tab if the line has one, else comma)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as fh:
        line = fh.readline().rstrip("\r\n")
    sep = "\t" if "\t" in line else ","
    return line.split(sep), sep


def _is_parquet(path: Path) -> bool:
    return path.suffix in (".parquet", ".pq")


def detect_format(path: str | os.PathLike) -> Format:
    """Guess an expression file's layout from its name and header line.

    Parquet → ``"matrix"``; a header starting with ``#`` (``#chr``/``#Chr``) → ``"bed"``;
    a header starting ``TargetID, Gene_Symbol, Chr, Coord`` → ``"geuvadis_rpkm"``;
    anything else → ``"matrix"``.
    """
    path = Path(path)
    if _is_parquet(path):
        return "matrix"
    fields, _ = _header_fields(path)
    if fields[0].startswith("#"):
        return "bed"
    if tuple(fields[:4]) == GEUVADIS_RPKM_COLUMNS:
        return "geuvadis_rpkm"
    return "matrix"


def read_expression(path: str | os.PathLike, format: Format = "auto") -> pl.DataFrame:
    """Read a genes × individuals expression file.

    Parameters
    ----------
    path : str or Path
        The file (``.gz`` accepted for text files).
    format : {"auto", "matrix", "bed", "geuvadis_rpkm"}
        ``matrix``: CSV/TSV (separator sniffed) or Parquet, first column the gene id, every
        other column an individual. ``bed``: QTLtools (``#chr start end gene length strand``,
        six annotation columns, recognised by ``strand`` in column 6) or FastQTL
        (``#Chr start end ID``, four) expression BED; individuals follow. ``geuvadis_rpkm``:
        ``TargetID Gene_Symbol Chr Coord`` then individuals. ``auto``: :func:`detect_format`.

    Returns
    -------
    pl.DataFrame, shape=(n_genes, 1 + n_individuals)
        Column ``gene`` (str, as spelled in the file) then one Float64 column per individual.

    Raises
    ------
    ExpressionError
        Missing file, a non-numeric or missing value (named by gene and individual), or two
        ids that are one gene without their version.
    """
    path = Path(path)
    if not path.exists():
        raise ExpressionError(f"expression file {path} does not exist")
    if format == "auto":
        format = detect_format(path)
    if _is_parquet(path):
        table = pl.read_parquet(path)
        n_annot, format = 1, "matrix"
    else:
        fields, sep = _header_fields(path)
        repeated = sorted({f for f in fields if fields.count(f) > 1})
        if repeated:
            raise ExpressionError(
                f"{path}: column(s) {', '.join(repeated[:3])} appear more than once in the "
                "header; each individual needs exactly one column"
            )
        n_annot = _annotation_columns(fields, format, path)
        table = pl.read_csv(
            path, separator=sep, schema_overrides={f: pl.String for f in fields[:n_annot]}
        )
    gene_col = table.columns[3 if format == "bed" else 0]
    samples = table.columns[n_annot:]
    if not samples:
        raise ExpressionError(
            f"{path}: no individual columns after the {n_annot} annotation column(s)"
        )
    out = table.select(pl.col(gene_col).cast(pl.String).alias("gene"), *samples)
    return validate_matrix(out, str(path))


def _annotation_columns(fields: list[str], format: str, path: Path) -> int:
    """How many leading columns are not individuals."""
    if format == "bed":
        if not fields[0].startswith("#"):
            raise ExpressionError(
                f"{path}: a BED expression file starts with a '#chr start end gene' header, "
                f"found {' '.join(fields[:4])!r}; set format to 'matrix' if it is a plain matrix"
            )
        # QTLtools: #chr start end gene length strand; FastQTL: #Chr start end ID
        return 6 if len(fields) > 5 and fields[5].lower() == "strand" else 4
    if format == "geuvadis_rpkm":
        if tuple(fields[:4]) != GEUVADIS_RPKM_COLUMNS:
            raise ExpressionError(
                f"{path}: the GEUVADIS RPKM layout starts with columns "
                f"{', '.join(GEUVADIS_RPKM_COLUMNS)}, found {', '.join(fields[:4])}"
            )
        return 4
    if format == "matrix":
        return 1
    raise ExpressionError(
        f"unknown expression format {format!r}; use auto, matrix, bed or geuvadis_rpkm"
    )


def validate_matrix(matrix: pl.DataFrame, source: str) -> pl.DataFrame:
    """Check a gene + individuals table and cast the individuals to Float64.

    Raises
    ------
    ExpressionError
        A first column other than ``gene``, no genes, a non-numeric, missing or non-finite value
        (named by gene and individual), or two ids that are one gene without their version;
        messages start with ``source``.
    """
    if matrix.columns[0] != "gene":
        raise ExpressionError(
            f"{source}: the first column must be 'gene', found {matrix.columns[0]!r}"
        )
    if matrix.height == 0:
        raise ExpressionError(f"{source}: no genes")
    schema = matrix.schema
    for col in matrix.columns[1:]:
        if not schema[col].is_numeric():
            bad = matrix.filter(
                pl.col(col).cast(pl.Float64, strict=False).is_null() & pl.col(col).is_not_null()
            )
            example = f" (gene {bad['gene'][0]}: {bad[col][0]!r})" if bad.height else ""
            raise ExpressionError(f"{source}: individual {col} has non-numeric values{example}")
    matrix = matrix.with_columns(pl.col(matrix.columns[1:]).cast(pl.Float64))
    if matrix["gene"].null_count():
        raise ExpressionError(f"{source}: {matrix['gene'].null_count()} row(s) have no gene id")
    values = matrix.select(matrix.columns[1:]).to_numpy()  # (n_genes, n_individuals)
    bad = ~np.isfinite(values)
    if bad.any():
        g, s = np.argwhere(bad)[0]
        raise ExpressionError(
            f"{source}: {int(bad.sum())} missing or non-finite value(s), first at gene "
            f"{matrix['gene'][int(g)]}, individual {matrix.columns[1 + int(s)]}; "
            "fill or drop them before preparing targets"
        )
    _check_unique_keys(matrix["gene"].to_list(), source)
    return matrix


def matrix_values(matrix: pl.DataFrame) -> np.ndarray:
    """The matrix's values, shape=(n_genes, n_individuals), float64."""
    return matrix.select(matrix.columns[1:]).to_numpy().astype(np.float64, copy=False)


def matrix_from_values(genes: pl.Series, individuals: list[str], values: np.ndarray
                       ) -> pl.DataFrame:
    """An expression matrix from gene ids, individuals and values, shape (n_genes, n_ind)."""
    assert values.shape == (len(genes), len(individuals)), "values must be genes × individuals"
    return pl.DataFrame({"gene": genes}).hstack(
        pl.DataFrame(values, schema=dict.fromkeys(individuals, pl.Float64), orient="row")
    )



def write_expression(matrix: pl.DataFrame, path: str | os.PathLike) -> Path:
    """Write an expression matrix as Parquet (column ``gene`` first), atomically."""
    path = Path(path)
    atomic_write_parquet(validate_matrix(matrix, "expression matrix to write"), path)
    return path

