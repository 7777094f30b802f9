"""Variant-based baselines (PrediXcan / FUSION without R or plink): ``python -m analysis.baselines``.

Per gene, on the gene's **training individuals only**, four linear models of the genotype
dosages of the variants inside the model window ``[tss - L // 2, tss + L // 2)`` (0-based
half-open; the window the shards hold), predicting the study's target (Z by default):

* ``elastic_net`` - PrediXcan: :class:`sklearn.linear_model.ElasticNetCV`, ``l1_ratio`` 0.5;
* ``lasso`` - FUSION's LASSO: :class:`~sklearn.linear_model.LassoCV`;
* ``ridge`` - FUSION's BLUP-like ridge: :class:`~sklearn.linear_model.RidgeCV`;
* ``top_snp`` - FUSION's top1: the variant with the largest marginal |r| with the target, in a
  one-variable least-squares fit.

Variants: MAF >= ``min_maf`` (0.05) among the gene's training individuals; dosages from
:mod:`prep.dosages` (missing genotypes imputed with the training mean), standardised with the
training individuals' mean and sd (population sd). Penalties are chosen by ``folds``-fold
cross-validation on the training individuals (folds shuffled with ``seed``; minimum mean squared
error). A gene without any common variant predicts its training mean (a constant) and is counted
in the summary. BLAS runs single-threaded (parallelism is over genes, in ``n_jobs`` processes),
which also keeps results identical whatever ``n_jobs``. Splits and targets come from the shards
manifest (``DIR/shards/manifest.parquet``),
genotypes from ``[haplotypes] vcf`` and the window from ``[haplotypes] length``.

Example::

    python -m analysis.baselines --config configs/chr20_sim.toml --workdir work/chr20_sim

Writes, per method NAME, in ``DIR/predictions/NAME/``:

* ``val.parquet``, ``test.parquet`` - gene, individual, prediction, Y, Z (manifest order);
* ``weights.parquet`` - gene, variant (``CHROM:POS:REF:ALT``), pos (1-based), ref, alt, maf,
  weight (per standardised dosage), weight_per_allele; non-zero weights only;
* ``genes.parquet`` - per gene: n_train, n_variants, n_nonzero, alpha, intercept, constant,
  r_val, r_test (Pearson r across the split's individuals; null when undefined);
* ``summary.json`` and ``config.toml`` (the resolved ``[haplotypes]`` and ``[baselines]``).
"""

from __future__ import annotations

import argparse
import logging
import sys

import numpy as np

from hapflow.sections import BaselinesConfig

log = logging.getLogger(__name__)

__all__ = [
    "METHODS",
    "BaselinesError",
    "standardize",
    "fit_method",
    "fit_gene",
    "pearson_r",
    "run_baselines",
    "main",
]

METHODS = ("elastic_net", "lasso", "ridge", "top_snp")
"""The baseline methods, as named in ``[baselines] methods`` and ``DIR/predictions/NAME``."""


class BaselinesError(ValueError):
    """The baselines cannot run as configured; the message says what to fix."""


def _default_ridge_alphas() -> list[float]:
    return [float(10.0 ** (k / 2)) for k in range(-4, 11)]  # 0.01 ... 1e5, half-decades


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


def _kfold(config: BaselinesConfig, n: int):
    from sklearn.model_selection import KFold

    return KFold(n_splits=min(config.folds, n), shuffle=True, random_state=config.seed)


def fit_method(method: str, xs: np.ndarray, y: np.ndarray, config: BaselinesConfig):
    """Fit one method on standardised training dosages.

    Parameters
    ----------
    method : str
        One of :data:`METHODS`.
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
    from sklearn.linear_model import ElasticNetCV, LassoCV

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
        raise BaselinesError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    return np.asarray(m.coef_, dtype=np.float64), float(m.intercept_), float(m.alpha_)


def _ridge_path(x: np.ndarray, y: np.ndarray, alphas: np.ndarray):
    """Ridge (with intercept) for every alpha from one SVD: coef (n_alphas, p), intercepts."""
    mx, my = x.mean(axis=0), y.mean()
    u, s, vt = np.linalg.svd(x - mx, full_matrices=False)  # (n, r), (r,), (r, p)
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


def pearson_r(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r of two vectors; NaN when fewer than 2 values or either is constant."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.size < 2:
        return float("nan")
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a @ a) * (b @ b))
    return float(a @ b / den) if den > 0 else float("nan")


# -------------------------------------------------------------------------------------- stage


def _read_manifest(workdir):
    import polars as pl

    from hapflow.layout import Workdir

    path = Workdir(workdir).shards / "manifest.parquet"
    if not path.exists():
        raise BaselinesError(f"shards manifest {path} does not exist: run `python -m prep.shard` "
                             "with the same --config and --workdir first")
    need = ["split", "gene", "individual", "chrom", "tss", "Y", "Z"]
    try:
        m = pl.read_parquet(path, columns=need)
    except Exception as err:  # polars raises several error types for bad files/columns
        raise BaselinesError(f"cannot read {path} (columns {', '.join(need)}): {err}") from None
    return path, m


def _gene_tasks(manifest, config: BaselinesConfig):
    """Per gene: sample rows, splits, target, Y, Z; genes without training rows are skipped."""
    import polars as pl

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
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    with warnings.catch_warnings(), threadpool_limits(1):  # also in worker processes
        warnings.simplefilter("ignore", ConvergenceWarning)
        return _fit_task_inner(gd, r, config)


def _fit_task_inner(gd, r, config):
    train = r["split"] == "train"
    x = gd.dosages[r["row"]]  # (n_gene_individuals, p)
    evals = {s: x[r["split"] == s] for s in ("val", "test") if (r["split"] == s).any()}
    return gd, r, fit_gene(x[train], r["y"][train], evals, config)


def run_baselines(hcfg, config: BaselinesConfig, workdir, *, progress: bool = True) -> dict:
    """The ``analysis.baselines`` stage: fit every gene of the shards manifest, write outputs.

    Parameters
    ----------
    hcfg : hapflow.sections.HaplotypesConfig
        ``vcf`` and ``length`` of the study.
    config : BaselinesConfig
    workdir : str or Path
        Reads ``DIR/shards/manifest.parquet``; writes ``DIR/predictions/NAME/``.

    Returns
    -------
    dict
        method -> summary (genes, constant genes, mean r on val/test, paths), plus ``seconds``.
    """
    import time
    import warnings

    from joblib import Parallel
    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    from hapflow.progress import progress as tqdm  # a bar on a terminal, plain lines in logs
    from prep.dosages import DosageReader

    if hcfg.vcf is None:
        raise BaselinesError("[haplotypes] vcf is needed for the baselines' genotypes")
    length = hcfg.length
    t0 = time.perf_counter()
    manifest_path, manifest = _read_manifest(workdir)
    individuals, genes, rows, no_train = _gene_tasks(manifest, config)
    if no_train:
        log.info("Skipped %d gene(s) without training individuals (e.g. %s): nothing to fit",
                 len(no_train), no_train[0])
    if not rows:
        raise BaselinesError(f"{manifest_path}: no gene has training individuals")
    maf_rows = {g: r["row"][r["split"] == "train"] for g, r in rows.items()}
    acc = {m: _Collector(m) for m in config.methods}
    bar = tqdm(total=genes.height, desc="baselines", unit="gene", disable=not progress)
    with DosageReader(hcfg.vcf, individuals, length=length, snps_only=config.snps_only,
                      min_maf=config.min_maf) as reader, \
            Parallel(n_jobs=config.n_jobs, backend="loky" if config.backend == "processes"
                     and config.n_jobs > 1 else "threading") as parallel, \
            threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        batch = []
        stream = reader.genes(genes, maf_rows)
        for gd in stream:
            batch.append(gd)
            if len(batch) == config.batch_genes:
                _run_batch(parallel, batch, rows, config, acc, bar)
                batch = []
        if batch:
            _run_batch(parallel, batch, rows, config, acc, bar)
    bar.close()
    seconds = time.perf_counter() - t0
    summary = {m: acc[m].write(workdir, hcfg, config, genes["gene"].to_list()) for m in acc}
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


def _run_batch(parallel, batch, rows, config, acc, bar):
    from joblib import delayed

    for gd, r, fits in parallel(delayed(_fit_task)(gd, rows[gd.gene], config) for gd in batch):
        for method, fit in fits.items():
            acc[method].add(gd, r, fit)
        bar.update(1)


class _Collector:
    """Predictions, weights and per-gene figures of one method, gathered gene by gene."""

    def __init__(self, method: str):
        self.method = method
        self.preds = {"val": [], "test": []}
        self.weights = []
        self.genes = []

    def add(self, gd, r, fit):
        import polars as pl

        rec = {"gene": gd.gene, "n_train": int((r["split"] == "train").sum()),
               "n_variants": gd.n_variants, "n_nonzero": int((fit["coef"] != 0).sum()),
               "alpha": fit["alpha"], "intercept": fit["intercept"],
               "constant": fit["constant"]}
        for split in ("val", "test"):
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

    def write(self, workdir, hcfg, config, gene_order) -> dict:
        import json

        import polars as pl

        from hapflow.config import save_config
        from hapflow.io import atomic_write_text
        from hapflow.layout import Workdir

        out = Workdir(workdir).predictions / self.method
        rank = {g: i for i, g in enumerate(gene_order)}
        schema = {"gene": pl.String, "individual": pl.String, "prediction": pl.Float64,
                  "Y": pl.Float64, "Z": pl.Float64}
        for split, frames in self.preds.items():
            df = pl.concat(frames) if frames else pl.DataFrame(schema=schema)
            df = df.sort(pl.col("gene").replace_strict(rank, return_dtype=pl.Int64),
                         maintain_order=True)
            _write_parquet(df, out / f"{split}.parquet")
        wschema = {"gene": pl.String, "variant": pl.String, "pos": pl.Int64, "ref": pl.String,
                   "alt": pl.String, "maf": pl.Float64, "weight": pl.Float64,
                   "weight_per_allele": pl.Float64}
        weights = pl.concat(self.weights) if self.weights else pl.DataFrame(schema=wschema)
        weights = weights.sort(pl.col("gene").replace_strict(rank, return_dtype=pl.Int64),
                               maintain_order=True)
        _write_parquet(weights, out / "weights.parquet")
        genes = pl.DataFrame(self.genes, schema_overrides={"r_val": pl.Float64,
                                                           "r_test": pl.Float64})
        genes = genes.sort(pl.col("gene").replace_strict(rank, return_dtype=pl.Int64))
        _write_parquet(genes, out / "genes.parquet")
        constant = genes.filter(pl.col("constant"))["gene"].to_list()
        summary = {
            "method": self.method, "genes": genes.height, "constant_genes": len(constant),
            "constant_gene_ids": constant,
            "mean_r_val": _mean(genes["r_val"]), "mean_r_test": _mean(genes["r_test"]),
            "genes_with_r_test": int(genes["r_test"].drop_nans().drop_nulls().len()),
            "target": config.target, "dir": str(out),
        }
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")
        save_config({"haplotypes": hcfg, "baselines": config}, out / "config.toml")
        return summary


def _mean(series) -> float:
    v = series.drop_nulls().drop_nans()
    return float(v.mean()) if v.len() else float("nan")


def _write_parquet(df, path) -> None:
    import io

    from hapflow.io import atomic_write_bytes

    buf = io.BytesIO()
    df.write_parquet(buf)
    atomic_write_bytes(path, buf.getvalue())


# ---------------------------------------------------------------------------------------- CLI


def parse_args(argv=None) -> argparse.Namespace:
    from hapflow.cli import add_common_arguments, make_parser

    p = make_parser("python -m analysis.baselines",
                    "Fit PrediXcan/FUSION-style variant baselines (elastic net, LASSO, ridge, "
                    "top SNP) per gene on the study's training individuals; writes "
                    "DIR/predictions/NAME/.",
                    next_step="python -m analysis.evaluate --config C --workdir DIR")
    add_common_arguments(p, ("haplotypes", "baselines"), workdir_help="study working directory "
                         "(reads DIR/shards, writes DIR/predictions)")
    p.add_argument("--vcf", help="override [haplotypes] vcf")
    p.add_argument("--length", type=int, metavar="L", help="override [haplotypes] length")
    p.add_argument("--methods", help="override [baselines] methods (comma-separated)")
    p.add_argument("--min-maf", type=float, metavar="X", help="override [baselines] min_maf")
    p.add_argument("--folds", type=int, metavar="N", help="override [baselines] folds")
    p.add_argument("--seed", type=int, metavar="N", help="override [baselines] seed")
    p.add_argument("--n-jobs", type=int, metavar="N", help="override [baselines] n_jobs")
    p.add_argument("--target", choices=("Z", "Y"), help="override [baselines] target")
    return p.parse_args(argv)


def _main(argv=None) -> int:
    args = parse_args(argv)
    from hapflow.cli import setup_logging

    setup_logging(args.quiet)
    from hapflow.config import load_study, split_overrides

    sets = split_overrides(args.set, ("haplotypes", "baselines"))
    for section, names in (("haplotypes", ("vcf", "length")),
                           ("baselines", ("methods", "min_maf", "folds", "seed", "n_jobs",
                                          "target"))):
        for name in names:
            if getattr(args, name) is not None:
                sets[section][name] = getattr(args, name)
    study = load_study(args.config, sets, need=("haplotypes", "baselines"))
    run_baselines(study.haplotypes, study.baselines, args.workdir, progress=not args.quiet)
    return 0


def main(argv=None) -> int:
    """``python -m analysis.baselines``: see the module docstring; exit 2 on bad input."""
    from hapflow.cli import run_cli

    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
