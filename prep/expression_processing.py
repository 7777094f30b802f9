"""Expression processing: the paper's GEUVADIS pipeline (RPKM -> corrected log TPM) and log1p.

Every function takes and returns expression matrices (column ``gene`` then one Float64 column
per individual, :mod:`prep.expression_files`) or their values, shape (n_genes, n_individuals).
``[expression] process = "geuvadis"`` runs :func:`process_geuvadis`, ``log1p = true``
:func:`log1p_expression` (:func:`prep.targets.run_expression`).
"""

from __future__ import annotations

import logging

import numpy as np
import polars as pl

from prep.expression_files import ExpressionError, matrix_from_values, matrix_values

__all__ = [
    "rpkm_to_tpm",
    "expressed_genes",
    "remove_top_pcs",
    "process_geuvadis",
    "log1p_expression",
]

log = logging.getLogger(__name__)


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
            f"individual column {int(np.flatnonzero(totals == 0)[0])} has no expression at all; "
            "drop it"
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
    tpm = rpkm_to_tpm(matrix_values(rpkm))
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
        "Removed the top %d principal components of %d genes × %d individuals", n_pcs,
        *logged.shape
    )
    return matrix_from_values(rpkm["gene"].filter(pl.Series(keep)), rpkm.columns[1:],
                              corrected)


def log1p_expression(matrix: pl.DataFrame) -> pl.DataFrame:
    """``ln(1 + value)`` of every value (for non-negative RPKM/TPM-like matrices)."""
    values = matrix_values(matrix)
    if (values < 0).any():
        g, s = np.argwhere(values < 0)[0]
        raise ExpressionError(
            f"log1p needs non-negative values, but gene {matrix['gene'][int(g)]}, individual "
            f"{matrix.columns[1 + int(s)]} is {values[g, s]}; the matrix looks already "
            "normalised: set log1p = false"
        )
    return matrix_from_values(matrix["gene"], matrix.columns[1:], np.log1p(values))

