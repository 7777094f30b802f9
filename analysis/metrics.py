"""Per-gene correlation metrics, bootstrap intervals and paired tests (numpy + scipy only).

The grouped Pearson r itself lives in :mod:`hapflow.metrics` (training reports it too); the
functions here build on it. Every function takes flat arrays of values grouped contiguously by
gene, described by ``offsets``: group ``g`` is ``values[offsets[g]:offsets[g + 1]]`` (0-based,
half-open), so ``offsets`` has ``n_groups + 1`` increasing entries starting at 0 and ending at
``len(values)``.
Nothing loops in Python over individuals; the few loops left run over genes or resamples.

Conventions, as in Rastogi et al. 2024: a gene whose predictions are constant across its
individuals has no defined correlation; it counts as r = 0 (it predicts nothing). A gene whose
*observed* values are constant (or that has fewer than two individuals) gets r = NaN: there is no
variation to explain, so it is left out of summaries (and the caller counts it).

Pearson r is invariant to any per-gene affine transform ``a * y + b`` (a > 0) of either
argument, and Spearman r to any increasing transform: evaluating against log expression (Y) or
its per-gene z-score (Z) gives identical r.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import wilcoxon

from hapflow.metrics import check_grouped, grouped_pearson

__all__ = [
    "grouped_rank",
    "grouped_spearman",
    "bootstrap_ci",
    "summarize_r",
    "paired_comparison",
]


def grouped_rank(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """1-based ranks within each group, ties given their average rank (as scipy's rankdata).

    Parameters
    ----------
    values : np.ndarray, shape=(n,), float
        Values grouped contiguously by ``offsets``.
    offsets : np.ndarray, shape=(n_groups + 1,), int

    Returns
    -------
    np.ndarray, shape=(n,), float64
        Rank of each value among its own group's values, 1..group size.
    """
    values, offsets = check_grouped(values, offsets, "values")
    n = values.size
    if n == 0:
        return np.zeros(0)
    counts = np.diff(offsets)
    group = np.repeat(np.arange(counts.size), counts)
    order = np.lexsort((values, group))  # by group, then value
    sv, sg = values[order], group[order]
    new_run = np.ones(n, dtype=bool)
    new_run[1:] = (sv[1:] != sv[:-1]) | (sg[1:] != sg[:-1])
    run_id = np.cumsum(new_run) - 1
    run_first = np.flatnonzero(new_run)
    run_last = np.append(run_first[1:], n) - 1
    position = np.arange(n) - offsets[sg]  # 0-based position inside the group, sorted order
    run_rank = (position[run_first] + position[run_last]) / 2.0 + 1.0
    ranks = np.empty(n)
    ranks[order] = run_rank[run_id]
    return ranks


def grouped_spearman(
    prediction: np.ndarray,
    observed: np.ndarray,
    offsets: np.ndarray,
    constant_r: float = 0.0,
) -> np.ndarray:
    """Spearman r within each group: Pearson r of within-group average ranks.

    Same shapes and NaN / constant conventions as :func:`grouped_pearson`; returns r only.
    """
    x, offsets = check_grouped(prediction, offsets, "prediction")
    y, _ = check_grouped(observed, offsets, "observed")
    r, _, _ = grouped_pearson(grouped_rank(x, offsets), grouped_rank(y, offsets), offsets,
                              constant_r)
    return r


def bootstrap_ci(
    values: np.ndarray,
    statistic: str = "mean",
    n_boot: int = 1000,
    seed: int | Sequence[int] = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean or median of ``values`` (resampling values).

    Parameters
    ----------
    values : np.ndarray, shape=(n,), float
        One value per gene (NaNs must be removed by the caller).
    statistic : {"mean", "median"}
    n_boot : int
        Number of resamples (with replacement, each of size n).
    seed : int or sequence of int
        Seed of ``numpy.random.default_rng``: the same seed gives the same interval.
    level : float
        Coverage, e.g. 0.95 for the 2.5 and 97.5 percentiles.

    Returns
    -------
    (low, high) : tuple of float
        NaN, NaN for no values; (v, v) for one value.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {values.shape}")
    if np.isnan(values).any():
        raise ValueError("values contain NaN; drop excluded genes before bootstrapping")
    if statistic not in ("mean", "median"):
        raise ValueError(f"statistic must be 'mean' or 'median', not {statistic!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be between 0 and 1, not {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, not {n_boot}")
    n = values.size
    if n == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    stats = np.empty(n_boot)
    chunk = max(1, 4_000_000 // n)  # bound memory: at most ~4M resampled values at a time
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        sample = values[rng.integers(0, n, size=(stop - start, n))]  # (chunk, n)
        stats[start:stop] = sample.mean(1) if statistic == "mean" else np.median(sample, 1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(low), float(high)


def summarize_r(
    r: np.ndarray, n_boot: int = 1000, seed: int | Sequence[int] = 0, level: float = 0.95
) -> dict[str, float]:
    """Summary of per-gene r over genes: mean, median (with bootstrap CIs), mean |r|, share > 0.

    Parameters
    ----------
    r : np.ndarray, shape=(n_genes,), float
        Per-gene correlations; NaNs (excluded genes) are dropped here.

    Returns
    -------
    dict
        n_genes, mean_r, mean_r_low, mean_r_high, median_r, median_r_low, median_r_high,
        mean_abs_r, share_positive (fraction of genes with r > 0).
    """
    r = np.asarray(r, dtype=np.float64)
    r = r[~np.isnan(r)]
    mean_low, mean_high = bootstrap_ci(r, "mean", n_boot, seed, level)
    med_low, med_high = bootstrap_ci(r, "median", n_boot, seed, level)
    empty = r.size == 0
    return {
        "n_genes": int(r.size),
        "mean_r": float("nan") if empty else float(r.mean()),
        "mean_r_low": mean_low,
        "mean_r_high": mean_high,
        "median_r": float("nan") if empty else float(np.median(r)),
        "median_r_low": med_low,
        "median_r_high": med_high,
        "mean_abs_r": float("nan") if empty else float(np.abs(r).mean()),
        "share_positive": float("nan") if empty else float((r > 0).mean()),
    }


def paired_comparison(
    r_a: np.ndarray,
    r_b: np.ndarray,
    n_boot: int = 1000,
    seed: int | Sequence[int] = 0,
    level: float = 0.95,
) -> dict[str, float]:
    """Compare two predictors on the same genes: mean of r_a - r_b, its CI, Wilcoxon p.

    Parameters
    ----------
    r_a, r_b : np.ndarray, shape=(n_genes,), float
        Per-gene r of predictors A and B, aligned gene by gene; genes where either is NaN are
        dropped.

    Returns
    -------
    dict
        n_genes, mean_diff, diff_low, diff_high (bootstrap over genes), share_a_better
        (fraction of genes with r_a > r_b), wilcoxon_p (two-sided signed-rank test; NaN when
        fewer than 2 genes differ).
    """
    r_a = np.asarray(r_a, dtype=np.float64)
    r_b = np.asarray(r_b, dtype=np.float64)
    if r_a.shape != r_b.shape or r_a.ndim != 1:
        raise ValueError(f"r_a and r_b must be 1-D and aligned, got {r_a.shape} and {r_b.shape}")
    keep = ~(np.isnan(r_a) | np.isnan(r_b))
    d = r_a[keep] - r_b[keep]
    low, high = bootstrap_ci(d, "mean", n_boot, seed, level)
    p = float("nan")
    if np.count_nonzero(d) >= 2:
        p = float(wilcoxon(d).pvalue)
    return {
        "n_genes": int(d.size),
        "mean_diff": float(d.mean()) if d.size else float("nan"),
        "diff_low": low,
        "diff_high": high,
        "share_a_better": float((d > 0).mean()) if d.size else float("nan"),
        "wilcoxon_p": p,
    }
