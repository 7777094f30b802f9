"""Per-gene Pearson r over values grouped contiguously by gene (numpy only).

The one implementation of the per-gene correlation every stage reports: training's validation
r (:func:`train.inference.per_gene_pearson`), the learning-sanity benchmark and
:mod:`analysis.metrics` (which adds Spearman r, bootstrap intervals and paired tests on top).

Values are grouped by ``offsets``: group ``g`` is ``values[offsets[g]:offsets[g + 1]]``
(0-based, half-open), so ``offsets`` has ``n_groups + 1`` non-decreasing entries from 0 to
``len(values)``. Conventions, as in Rastogi et al. 2024: a gene whose predictions are constant
across its individuals counts as r = 0 (it predicts nothing); a gene whose *observed* values are
constant, or that has fewer than two individuals, gets r = NaN (nothing to explain).
"""

from __future__ import annotations

import numpy as np

__all__ = ["offsets_from_counts", "grouped_pearson", "group_sums", "group_constant",
           "check_grouped"]


def offsets_from_counts(counts: np.ndarray) -> np.ndarray:
    """Offsets (int64, shape=(n_groups + 1,)) of groups of the given sizes, starting at 0."""
    counts = np.asarray(counts, dtype=np.int64)
    if counts.ndim != 1 or (counts < 0).any():
        raise ValueError("counts must be a 1-D array of non-negative group sizes")
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def check_grouped(values: np.ndarray, offsets: np.ndarray,
                  name: str) -> tuple[np.ndarray, np.ndarray]:
    """``values`` as float64 and ``offsets`` as int64, checked against each other."""
    values = np.asarray(values, dtype=np.float64)
    offsets = np.asarray(offsets, dtype=np.int64)
    if values.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {values.shape}")
    if offsets.ndim != 1 or offsets.size < 1 or offsets[0] != 0 or offsets[-1] != values.size:
        raise ValueError(f"offsets must start at 0 and end at len({name}) = {values.size}")
    if (np.diff(offsets) < 0).any():
        raise ValueError("offsets must be non-decreasing")
    return values, offsets


def group_sums(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Sum of each group (float64, shape=(n_groups,)); empty groups sum to 0."""
    csum = np.concatenate([[0.0], np.cumsum(values)])
    return csum[offsets[1:]] - csum[offsets[:-1]]


def group_constant(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """True for groups whose values are all exactly equal (and for groups of size <= 1)."""
    counts = np.diff(offsets)
    out = np.ones(counts.size, dtype=bool)
    nonempty = counts > 0
    if nonempty.any():
        starts = offsets[:-1][nonempty]
        out[nonempty] = np.maximum.reduceat(values, starts) == np.minimum.reduceat(values, starts)
    return out


def grouped_pearson(
    prediction: np.ndarray,
    observed: np.ndarray,
    offsets: np.ndarray,
    constant_r: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pearson r between predictions and observations within each group (gene).

    Parameters
    ----------
    prediction, observed : np.ndarray, shape=(n,), float
        Paired values, grouped contiguously by ``offsets`` (one row per individual).
    offsets : np.ndarray, shape=(n_groups + 1,), int
    constant_r : float
        The r given to groups whose predictions are constant (the paper's convention: 0).

    Returns
    -------
    r : np.ndarray, shape=(n_groups,), float64
        NaN where the group has fewer than 2 values or its observations are constant;
        ``constant_r`` where its predictions are constant (and observations vary).
    prediction_constant : np.ndarray, shape=(n_groups,), bool
    observed_constant : np.ndarray, shape=(n_groups,), bool
    """
    if np.size(prediction) != np.size(observed):
        raise ValueError(f"prediction has {np.size(prediction)} values, observed "
                         f"{np.size(observed)}")
    x, offsets = check_grouped(prediction, offsets, "prediction")
    y, _ = check_grouped(observed, offsets, "observed")
    counts = np.diff(offsets)
    safe = np.maximum(counts, 1)
    # two passes (centre, then sum products) keep precision for large, nearly equal values
    xc = x - np.repeat(group_sums(x, offsets) / safe, counts)
    yc = y - np.repeat(group_sums(y, offsets) / safe, counts)
    sxy = group_sums(xc * yc, offsets)
    sxx = group_sums(xc * xc, offsets)
    syy = group_sums(yc * yc, offsets)
    x_const = group_constant(x, offsets)
    y_const = group_constant(y, offsets)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = sxy / np.sqrt(sxx * syy)
    r = np.clip(r, -1.0, 1.0)
    r[x_const] = constant_r
    r[y_const | (counts < 2)] = np.nan
    return r, x_const & (counts >= 2), y_const & (counts >= 2)
