"""Variant-based baselines (PrediXcan / FUSION without R or plink), run by ``python -m
analysis.baselines``.

Per gene, on the gene's **training individuals only**, four linear models of the genotype
dosages of the variants inside the model window ``[tss - L // 2, tss + L // 2)`` (0-based
half-open; the window the shards hold), predicting the study's target (Z by default):

* ``elastic_net`` - PrediXcan: :class:`sklearn.linear_model.ElasticNetCV`, ``l1_ratio`` 0.5;
* ``lasso`` - FUSION's LASSO: :class:`~sklearn.linear_model.LassoCV`;
* ``ridge`` - FUSION's BLUP-like ridge: :func:`ridge_cv` (as ``RidgeCV`` computes it);
* ``top_snp`` - FUSION's top1: the variant with the largest marginal |r| with the target, in a
  one-variable least-squares fit.

Variants: MAF >= ``min_maf`` (0.05) among the gene's training individuals; dosages from
:mod:`prep.dosages` (missing genotypes imputed with the training mean), standardised with the
training individuals' mean and sd (population sd). Penalties are chosen by ``folds``-fold
cross-validation on the training individuals (folds shuffled with ``seed``; minimum mean squared
error). A gene without any common variant predicts its training mean (a constant) and is counted
in the summary. BLAS runs single-threaded (parallelism is over genes, in ``n_jobs`` processes),
which also keeps results identical whatever ``n_jobs``. Splits and targets come from the shards
manifest (``DIR/shards/manifest.parquet``), genotypes from ``[haplotypes] vcf`` and the window
from ``[haplotypes] length``.

Writes, per method NAME, in ``DIR/predictions/NAME/``:

* ``val.parquet``, ``test.parquet`` - gene, individual, prediction, Y, Z (manifest order);
* ``weights.parquet`` - gene, variant (``CHROM:POS:REF:ALT``), pos (1-based), ref, alt, maf,
  weight (per standardised dosage), weight_per_allele; non-zero weights only;
* ``genes.parquet`` - per gene: n_train, n_variants, n_nonzero, alpha, intercept, constant,
  r_val, r_test (Pearson r across the split's individuals by :mod:`hapflow.metrics`' rule:
  0 for constant predictions, NaN for constant observations or fewer than 2 individuals; null
  when the gene has no individual in the split);
* ``summary.json`` and ``config.toml`` (the resolved ``[haplotypes]`` and ``[baselines]``).
"""

from __future__ import annotations

import logging
import os
import time
import warnings

import numpy as np
import polars as pl
import scipy.linalg
from joblib import Parallel, delayed
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import ElasticNetCV, LassoCV
from sklearn.model_selection import KFold
from threadpoolctl import threadpool_limits

from hapflow.config import StudyConfig
from hapflow.io import atomic_write_json, atomic_write_parquet
from hapflow.layout import Workdir
from hapflow.metrics import grouped_pearson
from hapflow.names import SPLITS
from hapflow.progress import progress as tqdm  # a bar on a terminal, plain lines in logs
from hapflow.sections import BASELINE_METHODS, BaselinesConfig
from prep.dosages import DosageReader

log = logging.getLogger(__name__)

__all__ = [
    "BaselinesError",
    "standardize",
    "fit_method",
    "ridge_cv",
    "fit_gene",
    "pearson_r",
    "run_baselines",
]

HELD_OUT = tuple(s for s in SPLITS if s != "train")
"""The splits the baselines predict (val, test)."""


class BaselinesError(ValueError):
    """The baselines cannot run as configured; the message says what to fix."""


# ------------------------------------------------------------------------------------ fitting


def standardize(x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training mean and sd of each column, and which columns vary.

    Parameters
    ----------
    x_train : np.ndarray, shape (n_train, p)

    Returns
    -------
    mean, sd : np.ndarray, shape (p,), float64 (population sd, ddof=0)
    keep : np.ndarray, shape (p,), bool - columns with sd > 0
    """
    x = np.asarray(x_train, dtype=np.float64)
    mean, sd = x.mean(axis=0), x.std(axis=0)
    return mean, sd, sd > 0


def _kfold(config: BaselinesConfig, n: int) -> KFold:
    return KFold(n_splits=min(config.folds, n), shuffle=True, random_state=config.seed)


def fit_method(method: str, xs: np.ndarray, y: np.ndarray, config: BaselinesConfig):
    """Fit one method on standardised training dosages.

    Parameters
    ----------
    method : str
        One of :data:`hapflow.sections.BASELINE_METHODS`.
    xs : np.ndarray, shape (n_train, p), float64, p >= 1
        Standardised dosages (training mean 0, sd 1 per column).
    y : np.ndarray, shape (n_train,)
        Target.

    Returns
    -------
    coef : np.ndarray, shape (p,), float64 - weight per standardised dosage
    intercept : float
    alpha : float - the penalty chosen by cross-validation (NaN for top_snp)
    """
    cv = _kfold(config, xs.shape[0])
    if method == "elastic_net":
        m = ElasticNetCV(l1_ratio=config.l1_ratio, alphas=config.n_alphas, eps=config.eps,
                         cv=cv, max_iter=config.max_iter, tol=config.tol).fit(xs, y)
    elif method == "lasso":
        m = LassoCV(alphas=config.n_alphas, eps=config.eps, cv=cv, max_iter=config.max_iter,
                    tol=config.tol).fit(xs, y)
    elif method == "ridge":
        return ridge_cv(xs, y, config.ridge_alphas, cv)
    elif method == "top_snp":
        yc = y - y.mean()
        score = np.abs(xs.T @ yc)  # |r| up to a common factor (columns have sd 1)
        j = int(np.argmax(score))
        coef = np.zeros(xs.shape[1])
        coef[j] = xs[:, j] @ yc / xs.shape[0]  # least-squares slope on a sd-1 column
        return coef, float(y.mean()), float("nan")
    else:
        raise BaselinesError(f"unknown method {method!r}; choose from "
                             f"{', '.join(BASELINE_METHODS)}")
    return np.asarray(m.coef_, dtype=np.float64), float(m.intercept_), float(m.alpha_)


def _svd(a: np.ndarray):
    """Thin SVD of ``a`` (n, p): u (n, r), s (r,), vt (r, p). LAPACK's divide-and-conquer
    driver (gesdd, numpy's) fails to converge on some rank-deficient dosage matrices (many SNPs
    in perfect LD: on chr20 a 216 x 139 matrix of rank 45); the slower gesvd then decides."""
    try:
        return np.linalg.svd(a, full_matrices=False)
    except np.linalg.LinAlgError:
        return scipy.linalg.svd(a, full_matrices=False, lapack_driver="gesvd")


def _ridge_path(x: np.ndarray, y: np.ndarray, alphas: np.ndarray):
    """Ridge (with intercept) for every alpha from one SVD: coef (n_alphas, p), intercepts."""
    mx, my = x.mean(axis=0), y.mean()
    u, s, vt = _svd(x - mx)  # (n, r), (r,), (r, p)
    uty = u.T @ (y - my)  # (r,)
    d = s / (s**2 + alphas[:, None])  # (n_alphas, r)
    coef = (d * uty) @ vt  # (n_alphas, p)
    return coef, my - coef @ mx


def ridge_cv(xs: np.ndarray, y: np.ndarray, alphas, cv):
    """K-fold cross-validated ridge, as ``RidgeCV(alphas, cv=cv,
    scoring="neg_mean_squared_error")`` computes it, with one SVD per fold for all alphas.

    The alpha with the lowest mean (over folds) test mean squared error wins (ties: the first
    in ``alphas``); the model is refitted on all rows with it.

    Parameters
    ----------
    xs : np.ndarray, shape (n, p), float64
    y : np.ndarray, shape (n,), float64
    alphas : sequence of float, length n_alphas
    cv : a scikit-learn splitter (``KFold``)

    Returns
    -------
    coef (p,), intercept, alpha - as :func:`fit_method`.
    """
    alphas = np.asarray(alphas, dtype=np.float64)
    mse = np.zeros(alphas.shape[0])
    for train, test in cv.split(xs):
        coef, b = _ridge_path(xs[train], y[train], alphas)
        resid = y[test][None, :] - (coef @ xs[test].T + b[:, None])  # (n_alphas, n_test)
        mse += (resid**2).mean(axis=1)
    best = int(np.argmin(mse))
    coef, b = _ridge_path(xs, y, alphas[best : best + 1])
    return coef[0], float(b[0]), float(alphas[best])


def fit_gene(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_eval: dict[str, np.ndarray],
    config: BaselinesConfig,
) -> dict[str, dict]:
    """Fit every configured method on one gene and predict held-out individuals.

    Parameters
    ----------
    x_train : np.ndarray, shape (n_train, p), float32/64
        Dosages of the training individuals (p may be 0).
    y_train : np.ndarray, shape (n_train,)
    x_eval : dict split -> np.ndarray, shape (n_split, p)
    config : BaselinesConfig

    Returns
    -------
    dict method -> dict
        ``predictions`` (split -> (n_split,) float64), ``coef`` (p,) per standardised dosage
        (0 for constant columns), ``sd`` (p,), ``intercept``, ``alpha``, ``constant`` (True when
        no variable column exists and the training mean is predicted).
    """
    y = np.asarray(y_train, dtype=np.float64)
    mean, sd, keep = standardize(x_train)
    p = mean.shape[0]
    out = {}
    if not keep.any():
        for method in config.methods:
            out[method] = {
                "predictions": {s: np.full(x.shape[0], y.mean()) for s, x in x_eval.items()},
                "coef": np.zeros(p), "sd": sd, "intercept": float(y.mean()),
                "alpha": float("nan"), "constant": True,
            }
        return out
    scale = np.where(keep, sd, 1.0)
    xs = ((np.asarray(x_train, np.float64) - mean) / scale)[:, keep]  # (n_train, p_keep)
    xe = {s: ((np.asarray(x, np.float64) - mean) / scale)[:, keep] for s, x in x_eval.items()}
    for method in config.methods:
        c, b, alpha = fit_method(method, xs, y, config)
        coef = np.zeros(p)
        coef[keep] = c
        out[method] = {
            "predictions": {s: x @ c + b for s, x in xe.items()},
            "coef": coef, "sd": sd, "intercept": b, "alpha": alpha, "constant": False,
        }
    return out


def pearson_r(prediction: np.ndarray, observed: np.ndarray) -> float:
    """Pearson r of one gene's predictions and observations, by :mod:`hapflow.metrics`' rule.

    Parameters
    ----------
    prediction, observed : array-like, shape (n,), float

    Returns
    -------
    float
        0 when the predictions are constant (the paper's rule: they explain nothing); NaN when
        the observations are constant or there are fewer than 2 values.
    """
    prediction = np.asarray(prediction, np.float64)
    r, _, _ = grouped_pearson(prediction, observed, np.array([0, prediction.size]))
    return float(r[0])


# -------------------------------------------------------------------------------------- stage


def _read_manifest(layout: Workdir) -> pl.DataFrame:
    path = layout.manifest
    if not path.exists():
        raise BaselinesError(f"shards manifest {path} does not exist: run `python -m prep.shard` "
                             "with the same --config and --workdir first")
    need = ["split", "gene", "individual", "chrom", "tss", "Y", "Z"]
    try:
        return pl.read_parquet(path, columns=need)
    except Exception as err:  # polars raises several error types for bad files/columns
        raise BaselinesError(f"cannot read {path} (columns {', '.join(need)}): {err}") from None


def _gene_tasks(manifest: pl.DataFrame, config: BaselinesConfig):
    """Per gene: sample rows, splits, target, Y, Z; genes without training rows are skipped.

    Returns
    -------
    individuals : list of str
        Every individual of the manifest (rows of the dosage matrices), in manifest order.
    genes : pl.DataFrame
        gene, chrom, tss (0-based) of the genes with training individuals.
    rows : dict gene -> dict
        ``row`` (int64 rows into ``individuals``), ``split`` (str), ``individual``, ``y``
        (the target, float64), ``Y``, ``Z``: one entry per manifest row of the gene.
    no_train : list of str
        Genes without training individuals.
    """
    individuals = manifest["individual"].unique(maintain_order=True).to_list()
    row_of = {s: i for i, s in enumerate(individuals)}
    m = manifest.with_columns(
        _row=pl.col("individual").replace_strict(row_of, return_dtype=pl.Int64))
    genes = m.select("gene", "chrom", "tss").unique(subset="gene", maintain_order=True)
    rows, no_train = {}, []
    for (gene,), part in m.group_by("gene", maintain_order=True):
        split = part["split"].to_numpy()
        if not (split == "train").any():
            no_train.append(gene)
            continue
        rows[gene] = {
            "row": part["_row"].to_numpy(), "split": split,
            "individual": part["individual"].to_list(),
            "y": part[config.target].to_numpy().astype(np.float64),
            "Y": part["Y"].to_numpy(), "Z": part["Z"].to_numpy(),
        }
    genes = genes.filter(pl.col("gene").is_in(list(rows)))
    return individuals, genes, rows, no_train


def _fit_task(gd, r, config):
    """Fit one gene (in a worker): its dosages ``gd``, its manifest rows ``r``."""
    with warnings.catch_warnings(), threadpool_limits(1):  # also in worker processes
        warnings.simplefilter("ignore", ConvergenceWarning)
        split = r["split"]
        train = split == "train"
        x = gd.dosages[r["row"]]  # (n_gene_individuals, p)
        evals = {s: x[split == s] for s in HELD_OUT if (split == s).any()}
        return gd, r, fit_gene(x[train], r["y"][train], evals, config)


def run_baselines(study: StudyConfig, workdir: str | os.PathLike | Workdir, *,
                  progress: bool = True) -> dict:
    """The ``analysis.baselines`` stage: fit every gene of the shards manifest, write outputs.

    Parameters
    ----------
    study : StudyConfig
        Reads ``[haplotypes]`` (``vcf``, ``length``) and ``[baselines]``.
    workdir : Workdir or path
        Reads ``DIR/shards/manifest.parquet``; writes ``DIR/predictions/NAME/``.
    progress : bool
        Show a progress bar (or log lines) over genes.

    Returns
    -------
    dict
        method -> summary (genes, constant genes, mean r on val/test, paths), plus ``seconds``
        and ``genes_without_training``.
    """
    hcfg, config = study.haplotypes, study.baselines
    layout = Workdir(workdir)
    if hcfg.vcf is None:
        raise BaselinesError("[haplotypes] vcf is needed for the baselines' genotypes")
    t0 = time.perf_counter()
    manifest = _read_manifest(layout)
    individuals, genes, rows, no_train = _gene_tasks(manifest, config)
    if no_train:
        log.info("Skipped %d gene(s) without training individuals (e.g. %s): nothing to fit",
                 len(no_train), no_train[0])
    if not rows:
        raise BaselinesError(f"{layout.manifest}: no gene has training individuals")
    acc = {m: _Collector(m) for m in config.methods}
    _fit_genes(hcfg.vcf, hcfg.length, config, individuals, genes, rows, acc, progress)
    seconds = time.perf_counter() - t0
    gene_order = genes["gene"].to_list()
    summary = {m: acc[m].write(layout, study, gene_order) for m in acc}
    summary["seconds"] = round(seconds, 3)
    summary["genes_without_training"] = len(no_train)
    for m in config.methods:
        s = summary[m]
        log.info(
            "%s: %d genes (%d without a common variant predict their training mean); mean "
            "Pearson r val %.3f, test %.3f -> %s",
            m, s["genes"], s["constant_genes"], s["mean_r_val"], s["mean_r_test"], s["dir"])
    log.info("Fitted %d genes x %d method(s) in %.1f s (%.2f genes/s)", genes.height,
             len(config.methods), seconds, genes.height / seconds)
    return summary


def _fit_genes(vcf, length: int, config: BaselinesConfig, individuals: list[str],
               genes: pl.DataFrame, rows: dict, acc: dict, progress: bool) -> None:
    """Read the genes' dosages ``batch_genes`` at a time and fit them in ``n_jobs`` workers;
    every fit goes to its method's collector in ``acc``."""
    maf_rows = {g: r["row"][r["split"] == "train"] for g, r in rows.items()}
    bar = tqdm(total=genes.height, desc="baselines", unit="gene", disable=not progress)
    backend = "loky" if config.backend == "processes" and config.n_jobs > 1 else "threading"
    with DosageReader(vcf, individuals, length=length, snps_only=config.snps_only,
                      min_maf=config.min_maf) as reader, \
            Parallel(n_jobs=config.n_jobs, backend=backend) as parallel, \
            threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        batch = []
        for gd in reader.genes(genes, maf_rows):
            batch.append(gd)
            if len(batch) == config.batch_genes:
                _run_batch(parallel, batch, rows, config, acc, bar)
                batch = []
        if batch:
            _run_batch(parallel, batch, rows, config, acc, bar)
    bar.close()


def _run_batch(parallel, batch, rows, config, acc, bar) -> None:
    for gd, r, fits in parallel(delayed(_fit_task)(gd, rows[gd.gene], config) for gd in batch):
        for method, fit in fits.items():
            acc[method].add(gd, r, fit)
        bar.update(1)


_PREDICTION_SCHEMA = {"gene": pl.String, "individual": pl.String, "prediction": pl.Float64,
                      "Y": pl.Float64, "Z": pl.Float64}
_WEIGHT_SCHEMA = {"gene": pl.String, "variant": pl.String, "pos": pl.Int64, "ref": pl.String,
                  "alt": pl.String, "maf": pl.Float64, "weight": pl.Float64,
                  "weight_per_allele": pl.Float64}


class _Collector:
    """Predictions, weights and per-gene figures of one method, gathered gene by gene."""

    def __init__(self, method: str):
        self.method = method
        self.preds = {s: [] for s in HELD_OUT}
        self.weights = []
        self.genes = []

    def add(self, gd, r, fit) -> None:
        rec = {"gene": gd.gene, "n_train": int((r["split"] == "train").sum()),
               "n_variants": gd.n_variants, "n_nonzero": int((fit["coef"] != 0).sum()),
               "alpha": fit["alpha"], "intercept": fit["intercept"],
               "constant": fit["constant"]}
        for split in HELD_OUT:
            mask = r["split"] == split
            pred = fit["predictions"].get(split)
            rec[f"r_{split}"] = pearson_r(pred, r["y"][mask]) if pred is not None else None
            if pred is None:
                continue
            self.preds[split].append(pl.DataFrame({
                "gene": [gd.gene] * int(mask.sum()),
                "individual": [s for s, k in zip(r["individual"], mask, strict=True) if k],
                "prediction": pred, "Y": r["Y"][mask], "Z": r["Z"][mask]}))
        self.genes.append(rec)
        nz = np.flatnonzero(fit["coef"])
        if nz.size:
            ids = gd.variant_ids()
            self.weights.append(pl.DataFrame({
                "gene": [gd.gene] * nz.size, "variant": [ids[i] for i in nz.tolist()],
                "pos": gd.pos[nz].astype(np.int64), "ref": [gd.ref[i] for i in nz.tolist()],
                "alt": [gd.alt[i] for i in nz.tolist()], "maf": gd.maf[nz],
                "weight": fit["coef"][nz], "weight_per_allele": fit["coef"][nz] / fit["sd"][nz],
            }))

    def write(self, layout: Workdir, study: StudyConfig, gene_order: list[str]) -> dict:
        """Write ``DIR/predictions/METHOD/`` (genes in ``gene_order``); return the summary."""
        out = layout.predictor(self.method)
        rank = {g: i for i, g in enumerate(gene_order)}
        by_gene = pl.col("gene").replace_strict(rank, return_dtype=pl.Int64)
        for split, frames in self.preds.items():
            df = pl.concat(frames) if frames else pl.DataFrame(schema=_PREDICTION_SCHEMA)
            atomic_write_parquet(df.sort(by_gene, maintain_order=True),
                                 out / f"{split}.parquet")
        weights = pl.concat(self.weights) if self.weights else pl.DataFrame(schema=_WEIGHT_SCHEMA)
        atomic_write_parquet(weights.sort(by_gene, maintain_order=True),
                             out / "weights.parquet")
        genes = pl.DataFrame(self.genes, schema_overrides={"r_val": pl.Float64,
                                                           "r_test": pl.Float64})
        genes = genes.sort(by_gene)
        atomic_write_parquet(genes, out / "genes.parquet")
        constant = genes.filter(pl.col("constant"))["gene"].to_list()
        summary = {
            "method": self.method, "genes": genes.height, "constant_genes": len(constant),
            "constant_gene_ids": constant,
            "mean_r_val": _mean(genes["r_val"]), "mean_r_test": _mean(genes["r_test"]),
            "genes_with_r_test": int(genes["r_test"].drop_nans().drop_nulls().len()),
            "target": study.baselines.target, "dir": str(out),
        }
        atomic_write_json(out / "summary.json", summary)
        study.save(out / "config.toml", ("haplotypes", "baselines"))
        return summary


def _mean(series: pl.Series) -> float:
    v = series.drop_nulls().drop_nans()
    return float(v.mean()) if v.len() else float("nan")
