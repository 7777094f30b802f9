"""Expression matrices and the per-(gene, individual) training targets Y, Z and P.

An expression matrix is a polars DataFrame, genes × individuals: a first column ``gene`` (the
gene id as the source file spells it, str) then one Float64 column per individual. Internally
values are NumPy arrays of shape (n_genes, n_individuals).

The steps, as :func:`run_expression` runs them for ``python -m prep.expression``:

1. :func:`read_expression` a CSV/TSV/Parquet matrix, a QTLtools or FastQTL BED, or the
   GEUVADIS ``GD660.GeneQuantRPKM.txt.gz`` layout;
2. either :func:`process_geuvadis` (the paper's RPKM → corrected log TPM) or
   :func:`log1p_expression` (values already comparable, e.g. the chr22 demo's RPKM) or nothing;
3. :func:`write_expression` to ``DIR/expression/expression.parquet``.

Later, :func:`compute_targets` joins the matrix with a split table (:mod:`prep.splits`) into the
long table ``gene, individual, split, Y, Z, P``, and :func:`targets_for` gives those targets for a
fixed list of samples (the shards' manifest): the targets table that ``prep.shard`` and
``prep.retarget`` write beside the shards (shards hold sequences only). Several expression sets
(e.g. one per tissue) give several column triples, :func:`target_columns`.

Gene ids match with or without an Ensembl version (``ENSG00000099889.9`` ↔
``ENSG00000099889``) and case-insensitively, through :func:`gene_key`; outputs keep the
expression matrix's own spelling.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from hapflow.config import save_config
from hapflow.io import atomic_write_bytes
from hapflow.layout import Workdir
from hapflow.sections import ConfigError
from prep.splits import SPLIT_LABELS, validate_splits

__all__ = [
    "ExpressionError",
    "strip_version",
    "gene_key",
    "detect_format",
    "read_expression",
    "rpkm_to_tpm",
    "expressed_genes",
    "remove_top_pcs",
    "process_geuvadis",
    "log1p_expression",
    "write_expression",
    "percentile_of",
    "compute_targets",
    "target_columns",
    "targets_for",
    "run_expression",
]

log = logging.getLogger(__name__)

Format = Literal["auto", "matrix", "bed", "geuvadis_rpkm"]

GEUVADIS_RPKM_COLUMNS = ("TargetID", "Gene_Symbol", "Chr", "Coord")
"""The annotation columns that open ``GD660.GeneQuantRPKM.txt.gz``; samples follow."""

_ENSEMBL_VERSION = re.compile(r"^(ENS[A-Z]*\d+)\.\d+", re.IGNORECASE)


class ExpressionError(ValueError):
    """An expression file or matrix is invalid; the message names the file, gene or sample."""


# -------------------------------------------------------------------------------- gene ids


def strip_version(gene_id: str) -> str:
    """Drop an Ensembl version suffix: ``ENSG00000099889.9`` → ``ENSG00000099889``.

    Only Ensembl-style ids (``ENS...`` + digits) lose their ``.N``; other names keep their dots,
    since in clone-based symbols such as ``AC017104.1`` the dot is part of the name. Anything
    after the version (``ENSG00000182378.14_PAR_Y`` → ``ENSG00000182378_PAR_Y``) is kept.
    """
    return _ENSEMBL_VERSION.sub(r"\1", str(gene_id))


def gene_key(gene_id: str) -> str:
    """The id genes are matched on: :func:`strip_version`, then upper case."""
    return strip_version(gene_id).upper()


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


# ----------------------------------------------------------------------------------- reading


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
    return _validate_matrix(out, str(path))


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


def _validate_matrix(matrix: pl.DataFrame, source: str) -> pl.DataFrame:
    """Check a gene + individuals table and cast the individuals to Float64."""
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


def _values(matrix: pl.DataFrame) -> np.ndarray:
    """The matrix's values, shape=(n_genes, n_individuals), float64."""
    return matrix.select(matrix.columns[1:]).to_numpy().astype(np.float64, copy=False)


def _with_values(genes: pl.Series, individuals: list[str], values: np.ndarray) -> pl.DataFrame:
    assert values.shape == (len(genes), len(individuals)), "values must be genes × individuals"
    return pl.DataFrame({"gene": genes}).hstack(
        pl.DataFrame(values, schema=dict.fromkeys(individuals, pl.Float64), orient="row")
    )


# ------------------------------------------------------------------------------- processing


def rpkm_to_tpm(rpkm: np.ndarray) -> np.ndarray:
    """Convert RPKM to TPM per individual: ``TPM = RPKM / sum(RPKM of the individual) * 1e6``.

    Parameters
    ----------
    rpkm : np.ndarray, shape=(n_genes, n_individuals), non-negative

    Returns
    -------
    np.ndarray, shape=(n_genes, n_individuals), float64; every column sums to 1e6.
    """
    rpkm = np.asarray(rpkm, dtype=np.float64)
    if rpkm.ndim != 2:
        raise ExpressionError(f"rpkm must be genes × individuals (2-D), got shape {rpkm.shape}")
    if (rpkm < 0).any():
        raise ExpressionError("RPKM values must be non-negative; is the matrix already log-scaled?")
    totals = rpkm.sum(axis=0)  # (n_individuals,)
    if (totals == 0).any():
        raise ExpressionError(
            f"individual column {int(np.flatnonzero(totals == 0)[0])} has no expression at all; drop it"
        )
    return rpkm / totals * 1e6


def expressed_genes(values: np.ndarray, min_nonzero_fraction: float = 0.5) -> np.ndarray:
    """Which genes are expressed (> 0) in more than ``min_nonzero_fraction`` of individuals.

    With the default 0.5 this drops genes with zero expression in half or more of the
    individuals, as in the paper.

    Parameters
    ----------
    values : np.ndarray, shape=(n_genes, n_individuals)
    min_nonzero_fraction : float in [0, 1)

    Returns
    -------
    np.ndarray, shape=(n_genes,), bool — True for genes to keep.
    """
    if not 0.0 <= min_nonzero_fraction < 1.0:
        raise ExpressionError(f"min_nonzero_fraction={min_nonzero_fraction} must be in [0, 1)")
    return (np.asarray(values) > 0).mean(axis=1) > min_nonzero_fraction


def remove_top_pcs(standardized: np.ndarray, k: int) -> np.ndarray:
    """Remove the top ``k`` principal components of the individuals from every gene.

    Equivalent to regressing each gene on the first ``k`` PCs of the individuals (with an
    intercept) and keeping the residuals, computed as ``X - U_k S_k V_kᵀ`` from a NumPy SVD.

    Parameters
    ----------
    standardized : np.ndarray, shape=(n_genes, n_individuals)
        Each gene centred (mean 0 across individuals), usually also scaled to sd 1.
    k : int
        Components to remove; ``0 <= k < min(n_genes, n_individuals)``.

    Returns
    -------
    np.ndarray, shape=(n_genes, n_individuals), float64 — a new array.
    """
    x = np.asarray(standardized, dtype=np.float64)
    limit = min(x.shape)
    if not 0 <= k < limit:
        raise ExpressionError(
            f"cannot remove {k} principal components from {x.shape[0]} genes × {x.shape[1]} "
            f"individuals; use 0 <= n_pcs < {limit} (the smaller dimension)"
        )
    if k == 0:
        return x.copy()
    u, s, vt = np.linalg.svd(x, full_matrices=False)  # u (G, r), s (r,), vt (r, N)
    return x - (u[:, :k] * s[:k]) @ vt[:k]


def process_geuvadis(
    rpkm: pl.DataFrame,
    *,
    n_pcs: int = 10,
    min_nonzero_fraction: float = 0.5,
    pseudocount: float = 0.01,
) -> pl.DataFrame:
    """The paper's GEUVADIS processing: RPKM → PC-corrected log TPM.

    Steps, per Rastogi et al. 2024:

    1. TPM per individual from RPKM (:func:`rpkm_to_tpm`), over all genes of the matrix;
    2. drop genes with zero expression in half or more of the individuals
       (:func:`expressed_genes` with ``min_nonzero_fraction``);
    3. ``ln(TPM + pseudocount)``;
    4. standardise each gene across individuals (mean 0, sd 1; population sd, ddof=0);
    5. remove the top ``n_pcs`` principal components (:func:`remove_top_pcs`);
    6. un-standardise (times the gene's sd, plus its mean), so values stay on the log scale.

    Parameters
    ----------
    rpkm : pl.DataFrame, shape=(n_genes, 1 + n_individuals)
        An expression matrix (column ``gene`` then individuals) of non-negative RPKM.
    n_pcs : int
        Components to remove; must be below the smaller of the kept genes and individuals.
    min_nonzero_fraction : float
    pseudocount : float
        Added before the log; must be > 0.

    Returns
    -------
    pl.DataFrame, shape=(n_kept_genes, 1 + n_individuals) — same layout, kept genes only.
    """
    if pseudocount <= 0:
        raise ExpressionError(f"pseudocount={pseudocount} must be > 0 (log of zero TPM)")
    tpm = rpkm_to_tpm(_values(rpkm))
    keep = expressed_genes(tpm, min_nonzero_fraction)
    n_dropped = int((~keep).sum())
    log.info(
        "Dropped %d of %d genes with zero expression in %d%% or more of individuals",
        n_dropped,
        len(keep),
        round(100 * (1 - min_nonzero_fraction)),
    )
    if not keep.any():
        raise ExpressionError(
            "no gene is expressed in enough individuals; lower min_nonzero_fraction"
        )
    if not n_pcs < min(int(keep.sum()), tpm.shape[1]):
        raise ExpressionError(
            f"n_pcs={n_pcs} is too many for {int(keep.sum())} genes × {tpm.shape[1]} "
            f"individuals left after filtering; set n_pcs below "
            f"{min(int(keep.sum()), tpm.shape[1])} (0 skips the correction)"
        )
    logged = np.log(tpm[keep] + pseudocount)  # (G, N)
    mean = logged.mean(axis=1, keepdims=True)
    sd = logged.std(axis=1, keepdims=True)
    sd = np.where(sd > 0, sd, 1.0)  # a constant gene stays at its mean
    corrected = remove_top_pcs((logged - mean) / sd, n_pcs) * sd + mean
    log.info(
        "Removed the top %d principal components of %d genes × %d individuals", n_pcs, *logged.shape
    )
    return _with_values(rpkm["gene"].filter(pl.Series(keep)), rpkm.columns[1:], corrected)


def log1p_expression(matrix: pl.DataFrame) -> pl.DataFrame:
    """``ln(1 + value)`` of every value (for non-negative RPKM/TPM-like matrices)."""
    values = _values(matrix)
    if (values < 0).any():
        g, s = np.argwhere(values < 0)[0]
        raise ExpressionError(
            f"log1p needs non-negative values, but gene {matrix['gene'][int(g)]}, individual "
            f"{matrix.columns[1 + int(s)]} is {values[g, s]}; the matrix looks already "
            "normalised: set log1p = false"
        )
    return _with_values(matrix["gene"], matrix.columns[1:], np.log1p(values))


def write_expression(matrix: pl.DataFrame, path: str | os.PathLike) -> Path:
    """Write an expression matrix as Parquet (column ``gene`` first), atomically."""
    path = Path(path)
    buf = io.BytesIO()
    _validate_matrix(matrix, "expression matrix to write").write_parquet(buf)
    atomic_write_bytes(path, buf.getvalue())
    return path


# ----------------------------------------------------------------------------------- targets


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
    expression = _validate_matrix(expression, "expression matrix")
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
        gene=expression["gene"].gather(rows), Y=pl.Series(_values(expression)[rows, cols])
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
    assert set(pairs["split"].unique()) <= set(SPLIT_LABELS), "validated split labels"
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


# ------------------------------------------------------------------------------------ stage


def run_expression(config: Any, workdir: str | os.PathLike) -> Path:
    """The ``prep.expression`` stage: read, process, write matrix and resolved config.

    Parameters
    ----------
    config : prep.expression.ExpressionConfig
    workdir : str or Path
        Outputs go to ``DIR/expression/expression.parquet`` and ``DIR/expression/config.toml``.

    Returns
    -------
    Path of the written Parquet file.
    """
    if config.input is None:
        raise ConfigError("[expression] input is not set: give the expression file in the "
                          "config or with --input")
    out_dir = Workdir(workdir).expression
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
    path = write_expression(matrix, out_dir / "expression.parquet")
    save_config({"expression": config}, out_dir / "config.toml")
    log.info("Wrote %d genes × %d individuals to %s", matrix.height, matrix.width - 1, path)
    return path
