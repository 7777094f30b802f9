"""Score predictors per gene across held-out individuals: ``python -m analysis.evaluate``.

Example (after ``prep.shard`` and one or more predictors)::

    python -m analysis.evaluate --config configs/demo.toml --workdir work/demo
    python -m analysis.evaluate --config configs/demo.toml --workdir work/demo \\
        --predictions ridge lasso --split test --target Y

Inputs. Every predictor writes ``DIR/predictions/NAME/SPLIT.parquet`` with columns gene,
individual, prediction (extra columns are ignored). Observed values and the split come from
``DIR/shards/manifest.parquet``. By default every folder of ``DIR/predictions`` holding the
split's parquet is evaluated.

What is measured, as in Rastogi et al. 2024: for each gene, the Pearson (and Spearman)
correlation between predicted and observed expression across the split's individuals; a gene
with constant predictions counts as r = 0. Per-gene r is then summarised over genes per gene
class (mean, median, mean |r|, share of genes with r > 0, seeded bootstrap 95 % intervals over
genes) and predictors are compared gene by gene (mean difference, bootstrap interval, Wilcoxon
signed-rank test). Pearson r does not change under a per-gene affine rescaling of the target, so
log expression (Y) and its per-gene z-score (Z) give the same r; ``target`` exists for
completeness.

Gene classes: the paper's ``gene_class.csv`` (gene, class: random_split / yri_split / unseen)
when ``[evaluate] gene_classes`` names it, else the split's own: ``seen`` (the gene has training
individuals) and ``unseen`` (it has none). When the manifest records two or more populations
among the split's individuals, every metric is also computed within each population.

Outputs in ``DIR/report`` (or ``--out``): per_gene.parquet, summary.parquet, paired.parquet,
coverage.parquet, PNG figures, report.html (self-contained) and config.toml. When
``python -m analysis.attribute`` has written ``DIR/attribution/NAME/GENE.json`` and ``GENE.png``
for an evaluated predictor NAME (a fine-tuned run), the report adds a section "Variant
attribution" with them (a broken file is an error naming it).
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from analysis.metrics import (
    grouped_pearson,
    grouped_spearman,
    offsets_from_counts,
    paired_comparison,
    summarize_r,
)
from hapflow.sections import EvaluateConfig

__all__ = [
    "EvaluationError",
    "EvaluationResult",
    "load_split",
    "split_gene_classes",
    "read_gene_class_table",
    "discover_predictions",
    "read_predictions",
    "per_gene_metrics",
    "summarize",
    "compare_predictors",
    "evaluate",
    "write_outputs",
    "run_evaluation",
    "main",
]

log = logging.getLogger("analysis.evaluate")

ALL = "all"
"""Label of the rows that pool every class or every population."""

UNLISTED = "unlisted"
"""Class of genes missing from a gene class table."""


class EvaluationError(ValueError):
    """Bad evaluation input; the message names the file, the record and the fix."""


@dataclass
class EvaluationResult:
    """Everything :func:`evaluate` computed; :func:`write_outputs` and the report read it."""

    config: EvaluateConfig
    manifest: Path
    predictors: list[str]
    """Predictor names, best first (by mean Pearson r over all scored genes)."""
    per_gene: pl.DataFrame
    summary: pl.DataFrame
    paired: pl.DataFrame
    coverage: pl.DataFrame
    joined: pl.DataFrame
    """predictor, gene, individual, population, observed, prediction: the scored pairs."""
    class_source: str
    """Where the gene classes came from, in words."""
    populations: list[str]
    warnings: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    """Predictors that are fine-tuned runs of the study (``DIR/runs/NAME``), best first."""
    attribution: list = field(default_factory=list)
    """:class:`analysis.report.Attribution` of the evaluated predictors, from
    ``DIR/attribution/NAME/*.json`` (+ ``.png``), in predictor order; empty without files."""


# --------------------------------------------------------------------------------------------
# inputs


def _read_parquet(path: Path, what: str) -> pl.DataFrame:
    if not path.exists():
        raise EvaluationError(f"{path}: {what} not found")
    try:
        return pl.read_parquet(path)
    except Exception as err:  # polars raises several types for corrupt files
        raise EvaluationError(f"{path}: cannot read {what} as Parquet ({err})") from None


def load_split(manifest: str | os.PathLike, split: str, target: str = "Y") -> pl.DataFrame:
    """The split's (gene, individual) pairs and their observed values.

    Parameters
    ----------
    manifest : path
        ``DIR/shards/manifest.parquet`` written by ``prep.shard``.
    split : str
        e.g. ``"test"``.
    target : {"Y", "Z"}
        Manifest column used as the observed value.

    Returns
    -------
    pl.DataFrame
        Columns gene, individual, population (str; null when unknown), observed (float64),
        sorted by gene then individual, one row per pair.
    """
    path = Path(manifest)
    table = _read_parquet(path, "shard manifest (run python -m prep.shard first)")
    need = {"split", "gene", "individual", target}
    missing = sorted(need - set(table.columns))
    if missing:
        raise EvaluationError(f"{path}: missing column(s) {', '.join(missing)}; rebuild the "
                              "shards with python -m prep.shard")
    splits = sorted(table["split"].unique().to_list())
    rows = table.filter(pl.col("split") == split)
    if rows.height == 0:
        raise EvaluationError(f"{path}: no rows of split {split!r}; the manifest has "
                              f"{', '.join(map(repr, splits))}")
    population = (pl.col("population").cast(pl.Utf8) if "population" in rows.columns
                  else pl.lit(None, dtype=pl.Utf8))
    out = rows.select(
        pl.col("gene").cast(pl.Utf8),
        pl.col("individual").cast(pl.Utf8),
        population.replace("NA", None).alias("population"),
        pl.col(target).cast(pl.Float64).alias("observed"),
    ).sort("gene", "individual")
    dups = out.filter(pl.struct("gene", "individual").is_duplicated())
    if dups.height:
        g, i = dups.row(0)[:2]
        raise EvaluationError(f"{path}: gene {g}, individual {i} appears more than once in split "
                              f"{split!r}; rebuild the shards")
    bad = out.filter(pl.col("observed").is_null() | ~pl.col("observed").is_finite())
    if bad.height:
        g, i = bad.row(0)[:2]
        raise EvaluationError(f"{path}: {bad.height} observed {target} value(s) of split "
                              f"{split!r} are missing or not finite, first gene {g}, individual "
                              f"{i}; rebuild the expression targets")
    return out


def split_gene_classes(manifest: str | os.PathLike, split: str) -> pl.DataFrame:
    """The split's own classes: ``seen`` genes have training individuals, ``unseen`` none.

    Returns
    -------
    pl.DataFrame
        Columns gene, class for every gene of ``split``, sorted by gene.
    """
    table = pl.read_parquet(manifest, columns=["split", "gene"])
    trained = table.filter(pl.col("split") == "train")["gene"].unique().implode()
    genes = table.filter(pl.col("split") == split).select("gene").unique()
    return genes.with_columns(
        pl.when(pl.col("gene").is_in(trained)).then(pl.lit("seen")).otherwise(pl.lit("unseen"))
        .alias("class")
    ).sort("gene")


def _gene_key(gene: str) -> str:
    """Match key of a gene name: case-insensitive, Ensembl version suffix dropped."""
    key = gene.strip().lower()
    return key.split(".")[0] if key.startswith("ens") else key


def read_gene_class_table(path: str | os.PathLike, genes: list[str]) -> tuple[pl.DataFrame, int]:
    """Classes of ``genes`` from a table gene,class (CSV/TSV/Parquet, e.g. gene_class.csv).

    Genes match exactly, else case-insensitively with Ensembl version suffixes ignored
    (``ENSG00000099889.9`` matches ``ENSG00000099889``). Genes absent from the table get the
    class ``unlisted``.

    Returns
    -------
    (pl.DataFrame, int)
        Columns gene, class for every gene in ``genes``; and how many were unlisted.

    Raises
    ------
    EvaluationError
        The table is unreadable, lacks a column, or none of ``genes`` is in it.
    """
    from prep.splits import SplitError, read_gene_classes

    try:
        table = read_gene_classes(path)
    except SplitError as err:
        raise EvaluationError(str(err)) from None
    except (OSError, pl.exceptions.PolarsError) as err:
        raise EvaluationError(f"{path}: cannot read the gene class table ({err})") from None
    exact = dict(zip(table["gene"].cast(pl.Utf8), table["class"].cast(pl.Utf8), strict=True))
    loose = {_gene_key(g): c for g, c in exact.items()}
    classes = [exact.get(g, loose.get(_gene_key(g), UNLISTED)) for g in genes]
    unlisted = sum(c == UNLISTED for c in classes)
    if genes and unlisted == len(genes):
        raise EvaluationError(
            f"{path}: none of the split's {len(genes)} genes (e.g. {genes[0]}) is listed; the "
            "table must name genes as the manifest does (Ensembl ids, version optional)")
    return pl.DataFrame({"gene": genes, "class": classes}, schema={"gene": pl.Utf8,
                                                                   "class": pl.Utf8}), unlisted


def discover_predictions(predictions_dir: str | os.PathLike, split: str) -> list[str]:
    """Names of the folders under ``predictions_dir`` that hold ``SPLIT.parquet``, sorted."""
    root = Path(predictions_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / f"{split}.parquet").is_file())


def read_predictions(path: str | os.PathLike, split_table: pl.DataFrame,
                     split: str = "test", manifest: str | os.PathLike | None = None) -> pl.DataFrame:
    """Read and validate one predictor's ``SPLIT.parquet``.

    Parameters
    ----------
    path : path
        Parquet with columns gene, individual, prediction (others ignored).
    split_table : pl.DataFrame
        :func:`load_split` output: the pairs predictions may name.
    split : str
        The split's name, for messages.
    manifest : path, optional
        The manifest, to say in which split a stray (gene, individual) actually is.

    Returns
    -------
    pl.DataFrame
        Columns gene, individual, prediction (float64), sorted by gene then individual.

    Raises
    ------
    EvaluationError
        Missing columns, no rows, non-numeric, null, NaN or infinite predictions, duplicate
        (gene, individual) rows, genes or individuals that are not in the split.
    """
    path = Path(path)
    table = _read_parquet(path, "predictions")
    missing = [c for c in ("gene", "individual", "prediction") if c not in table.columns]
    if missing:
        raise EvaluationError(f"{path}: missing column(s) {', '.join(missing)} (it has "
                              f"{', '.join(table.columns) or 'none'}); predictors write gene, "
                              "individual, prediction")
    if table.height == 0:
        raise EvaluationError(f"{path}: no predictions (0 rows)")
    if not table.schema["prediction"].is_numeric():
        raise EvaluationError(f"{path}: column prediction is {table.schema['prediction']}, "
                              "expected numbers")
    table = table.select(pl.col("gene").cast(pl.Utf8), pl.col("individual").cast(pl.Utf8),
                         pl.col("prediction").cast(pl.Float64))
    no_id = table.filter(pl.col("gene").is_null() | pl.col("individual").is_null())
    if no_id.height:
        raise EvaluationError(f"{path}: {no_id.height} row(s) lack a gene or an individual")
    bad = table.filter(pl.col("prediction").is_null() | ~pl.col("prediction").is_finite())
    if bad.height:
        g, i, v = bad.row(0)
        raise EvaluationError(f"{path}: {bad.height} prediction(s) are missing, NaN or infinite, "
                              f"first gene {g}, individual {i} ({v}); fix the predictor or drop "
                              "those rows")
    dups = table.filter(pl.struct("gene", "individual").is_duplicated())
    if dups.height:
        g, i, _ = dups.row(0)
        raise EvaluationError(f"{path}: gene {g}, individual {i} is predicted more than once "
                              f"({dups.height} duplicate rows); write one prediction per pair "
                              "(e.g. average forward and reverse-complement first)")
    stray_genes = table.join(split_table.select("gene").unique(), on="gene", how="anti")
    if stray_genes.height:
        genes = stray_genes["gene"].unique(maintain_order=True).to_list()
        raise EvaluationError(f"{path}: {len(genes)} gene(s) are not in the {split!r} split, "
                              f"e.g. {genes[0]}; predict only that split's genes")
    stray = table.join(split_table, on=["gene", "individual"], how="anti")
    if stray.height:
        g, i, _ = stray.row(0)
        where = ""
        if manifest is not None:
            hit = pl.read_parquet(manifest, columns=["split", "gene", "individual"]).filter(
                (pl.col("gene") == g) & (pl.col("individual") == i))
            where = (f" (it is a {hit['split'][0]!r} individual of that gene)" if hit.height
                     else " (it is not in the study)")
        raise EvaluationError(f"{path}: {stray.height} row(s) name individuals outside the "
                              f"{split!r} split, first gene {g}, individual {i}{where}; "
                              f"predict only the {split!r} individuals of each gene")
    return table.sort("gene", "individual")


# --------------------------------------------------------------------------------------------
# metrics


def per_gene_metrics(
    predictor: str,
    predictions: pl.DataFrame,
    split_table: pl.DataFrame,
    classes: pl.DataFrame,
    min_individuals: int = 3,
    populations: list[str] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Per-gene Pearson and Spearman r of one predictor, overall and per population.

    Parameters
    ----------
    predictor : str
    predictions : pl.DataFrame
        :func:`read_predictions` output (gene, individual, prediction).
    split_table : pl.DataFrame
        :func:`load_split` output (gene, individual, population, observed).
    classes : pl.DataFrame
        gene, class for every gene of the split.
    min_individuals : int
        Genes with fewer scored individuals get r = NaN and an ``excluded`` reason.
    populations : list of str, optional
        Also compute r within each of these populations (rows with that ``population``).

    Returns
    -------
    per_gene : pl.DataFrame
        One row per (population, gene): predictor, gene, class, population ("all" or a name),
        n_split (the split's individuals of the gene), n (those predicted and scored),
        pearson_r, spearman_r (float64; NaN when excluded), prediction_constant (r set to 0),
        observed_constant, excluded (null, or why the gene is not scored).
    joined : pl.DataFrame
        The scored pairs: predictor, gene, individual, population, observed, prediction.
    """
    joined = split_table.join(predictions, on=["gene", "individual"], how="left")
    frames = []
    for population in [ALL, *(populations or [])]:
        rows = joined if population == ALL else joined.filter(pl.col("population") == population)
        expected = rows.group_by("gene").agg(pl.len().alias("n_split"))
        scored = rows.filter(pl.col("prediction").is_not_null()).sort("gene", "individual")
        counts = scored.group_by("gene", maintain_order=True).agg(pl.len().alias("n"))
        offsets = offsets_from_counts(counts["n"].to_numpy())
        pred = scored["prediction"].to_numpy()
        obs = scored["observed"].to_numpy()
        r, pred_const, obs_const = grouped_pearson(pred, obs, offsets)
        rho = grouped_spearman(pred, obs, offsets)
        metrics = counts.with_columns(
            pl.Series("pearson_r", r), pl.Series("spearman_r", rho),
            pl.Series("prediction_constant", pred_const),
            pl.Series("observed_constant", obs_const),
        )
        frame = (expected.join(metrics, on="gene", how="left")
                 .join(classes, on="gene", how="left")
                 .with_columns(pl.col("n").fill_null(0),
                               pl.col("prediction_constant").fill_null(False),
                               pl.col("observed_constant").fill_null(False)))
        few = pl.col("n") < min_individuals
        frame = frame.with_columns(
            pl.when(pl.col("n") == 0).then(pl.lit("no predictions"))
            .when(few).then(pl.format("only {} individual(s) scored, fewer than "
                                      f"{min_individuals}", pl.col("n")))
            .when(pl.col("observed_constant")).then(pl.lit("observed expression is constant"))
            .otherwise(None).alias("excluded"),
        ).with_columns(
            *(pl.when(pl.col("excluded").is_null()).then(pl.col(c)).otherwise(float("nan"))
              .fill_null(float("nan")).alias(c) for c in ("pearson_r", "spearman_r")),
            pl.col("prediction_constant") & pl.col("excluded").is_null(),
            pl.lit(predictor).alias("predictor"),
            pl.lit(population).alias("population"),
        )
        frames.append(frame)
    columns = ["predictor", "gene", "class", "population", "n_split", "n", "pearson_r",
               "spearman_r", "prediction_constant", "observed_constant", "excluded"]
    per_gene = pl.concat([f.select(columns) for f in frames]).with_columns(
        pl.col("n_split").cast(pl.Int64), pl.col("n").cast(pl.Int64)).sort("population", "gene")
    scored = joined.filter(pl.col("prediction").is_not_null()).select(
        pl.lit(predictor).alias("predictor"), "gene", "individual", "population", "observed",
        "prediction")
    return per_gene, scored


def _seed(seed: int, *labels: str) -> list[int]:
    """A bootstrap seed that depends on the labels, not on the order cells are computed in.

    Classes are not among the labels: the same genes then get the same interval, so a study
    with a single class shows the same interval for that class and for "all".
    """
    return [seed, *(zlib.crc32(label.encode()) for label in labels)]


def summarize(per_gene: pl.DataFrame, cfg: EvaluateConfig) -> pl.DataFrame:
    """Per (predictor, class, population) summary of per-gene r (class "all" pools classes).

    Returns
    -------
    pl.DataFrame
        predictor, class, population, n_genes (scored), n_excluded, n_constant (scored genes
        with constant predictions, r = 0), pairs_expected, pairs_scored, coverage, mean_r,
        mean_r_low, mean_r_high, median_r, median_r_low, median_r_high, mean_abs_r,
        share_positive, mean_spearman_r.
    """
    rows = []
    pooled = per_gene.with_columns(pl.lit(ALL).alias("class"))
    for frame in (per_gene, pooled):
        for (predictor, cls, population), g in frame.group_by(
                ["predictor", "class", "population"], maintain_order=True):
            r = g["pearson_r"].to_numpy()
            stats = summarize_r(r, cfg.bootstrap, _seed(cfg.seed, predictor, population),
                                cfg.ci_level)
            rho = g["spearman_r"].to_numpy()
            rho = rho[~np.isnan(rho)]
            expected, scored = int(g["n_split"].sum()), int(g["n"].sum())
            rows.append({
                "predictor": predictor, "class": cls, "population": population,
                "n_genes": stats.pop("n_genes"),
                "n_excluded": int(g["excluded"].is_not_null().sum()),
                "n_constant": int(g["prediction_constant"].sum()),
                "pairs_expected": expected, "pairs_scored": scored,
                "coverage": scored / expected if expected else float("nan"),
                **stats,
                "mean_spearman_r": float(rho.mean()) if rho.size else float("nan"),
            })
    order = {ALL: ""}  # "all" first within a predictor
    return pl.DataFrame(rows).sort(
        "predictor", pl.col("population").replace(order), pl.col("class").replace(order))


def compare_predictors(per_gene: pl.DataFrame, predictors: list[str],
                       cfg: EvaluateConfig) -> pl.DataFrame:
    """Paired comparison of every two predictors on the genes both scored (all individuals).

    Parameters
    ----------
    predictors : list of str
        Best first; each pair (a, b) has a ranked above b.

    Returns
    -------
    pl.DataFrame
        predictor_a, predictor_b, class ("all" or a class), n_genes, mean_diff (mean of
        r_a - r_b), diff_low, diff_high, share_a_better, wilcoxon_p.
    """
    base = per_gene.filter(pl.col("population") == ALL)
    wide = base.pivot(on="predictor", index=["gene", "class"], values="pearson_r").sort("gene")
    rows = []
    for i, a in enumerate(predictors):
        for b in predictors[i + 1:]:
            for cls in [ALL, *sorted(wide["class"].unique().to_list())]:
                sub = wide if cls == ALL else wide.filter(pl.col("class") == cls)
                stats = paired_comparison(sub[a].fill_null(np.nan).to_numpy(),
                                          sub[b].fill_null(np.nan).to_numpy(), cfg.bootstrap,
                                          _seed(cfg.seed, a, b), cfg.ci_level)
                rows.append({"predictor_a": a, "predictor_b": b, "class": cls, **stats})
    schema = {"predictor_a": pl.Utf8, "predictor_b": pl.Utf8, "class": pl.Utf8,
              "n_genes": pl.Int64, "mean_diff": pl.Float64, "diff_low": pl.Float64,
              "diff_high": pl.Float64, "share_a_better": pl.Float64, "wilcoxon_p": pl.Float64}
    return pl.DataFrame(rows, schema=schema)


# --------------------------------------------------------------------------------------------
# orchestration


def evaluate(cfg: EvaluateConfig, workdir: str | os.PathLike) -> EvaluationResult:
    """Score every requested predictor of a study on ``cfg.split``; writes nothing.

    Raises
    ------
    EvaluationError
        No predictions, or any bad input (see :func:`read_predictions`, :func:`load_split`,
        :func:`analysis.report.read_attribution`).
    """
    from hapflow.layout import Workdir

    if cfg.min_individuals < 2:
        raise EvaluationError(f"[evaluate] min_individuals = {cfg.min_individuals}: a "
                              "correlation needs at least 2 individuals")
    if cfg.bootstrap < 1:
        raise EvaluationError(f"[evaluate] bootstrap = {cfg.bootstrap}: use at least 1 "
                              "resample (1000 is the default)")
    if not 0.0 < cfg.ci_level < 1.0:
        raise EvaluationError(f"[evaluate] ci_level = {cfg.ci_level}: use a fraction such as "
                              "0.95")
    layout = Workdir(workdir)
    manifest = layout.shards / "manifest.parquet"
    split_table = load_split(manifest, cfg.split, cfg.target)
    genes = split_table["gene"].unique().sort().to_list()
    warnings: list[str] = []

    if cfg.gene_classes:
        classes, unlisted = read_gene_class_table(cfg.gene_classes, genes)
        class_source = f"gene classes from {cfg.gene_classes}"
        if unlisted:
            warnings.append(f"{unlisted} of {len(genes)} genes are not in {cfg.gene_classes}; "
                            f"they are reported as class {UNLISTED!r}")
    else:
        classes = split_gene_classes(manifest, cfg.split)
        class_source = ("the split's own classes: 'seen' genes have training individuals, "
                        "'unseen' genes have none")
    populations = sorted(split_table["population"].drop_nulls().unique().to_list())
    if len(populations) < 2:
        populations = []

    names = list(cfg.predictions or discover_predictions(layout.predictions, cfg.split))
    if not names:
        raise EvaluationError(f"{layout.predictions}: no predictions for split {cfg.split!r} "
                              f"(expected NAME/{cfg.split}.parquet); run a predictor first")
    if len(set(names)) != len(names):
        raise EvaluationError(f"[evaluate] predictions lists a name twice: {', '.join(names)}")

    per_gene, joined, coverage = [], [], []
    for name in names:
        path = layout.predictions / name / f"{cfg.split}.parquet"
        preds = read_predictions(path, split_table, cfg.split, manifest)
        genes_table, scored = per_gene_metrics(name, preds, split_table, classes,
                                               cfg.min_individuals, populations)
        base = genes_table.filter(pl.col("population") == ALL)
        cov = {"predictor": name, "pairs_expected": split_table.height,
               "pairs_predicted": preds.height, "coverage": preds.height / split_table.height,
               "genes_expected": len(genes), "genes_predicted": preds["gene"].n_unique(),
               "genes_scored": int(base["excluded"].is_null().sum()),
               "genes_constant": int(base["prediction_constant"].sum())}
        if preds.height < split_table.height:
            warnings.append(f"{name}: predictions cover {preds.height} of {split_table.height} "
                            f"(gene, individual) pairs of the {cfg.split} split "
                            f"({cov['coverage']:.1%}); only those are scored")
        if cov["genes_constant"]:
            warnings.append(f"{name}: {cov['genes_constant']} gene(s) have the same prediction "
                            "for every individual; their r is set to 0, as in the paper")
        per_gene.append(genes_table)
        joined.append(scored)
        coverage.append(cov)
        log.info("%s: %d genes scored, mean Pearson r %.3f", name, cov["genes_scored"],
                 np.nanmean(base["pearson_r"].to_numpy()) if cov["genes_scored"] else np.nan)

    per_gene_df = pl.concat(per_gene).sort("predictor", "population", "gene")
    excluded = per_gene_df.filter(pl.col("excluded").is_not_null() & (pl.col("population") == ALL))
    if excluded.height:
        warnings.append(f"{excluded.height} (predictor, gene) pair(s) are not scored (too few "
                        "individuals, no predictions or constant expression); see the report")
    for w in warnings:
        log.warning("%s", w)
    summary = summarize(per_gene_df, cfg)
    overall = summary.filter((pl.col("class") == ALL) & (pl.col("population") == ALL))
    ranked = overall.sort(pl.col("mean_r").fill_nan(-np.inf), "predictor",
                          descending=[True, False])["predictor"].to_list()
    from analysis.report import read_attribution

    attribution = read_attribution(layout.root / "attribution", ranked)
    runs = [p for p in ranked if (layout.runs / p).is_dir()]
    return EvaluationResult(
        config=cfg, manifest=manifest, predictors=ranked, per_gene=per_gene_df, summary=summary,
        paired=compare_predictors(per_gene_df, ranked, cfg),
        coverage=pl.DataFrame(coverage).sort("predictor"),
        joined=pl.concat(joined).sort("predictor", "gene", "individual"),
        class_source=class_source, populations=populations, warnings=warnings, runs=runs,
        attribution=attribution,
    )


def _write_parquet(frame: pl.DataFrame, path: Path) -> None:
    from hapflow.io import atomic_write_bytes

    buf = io.BytesIO()
    frame.write_parquet(buf, statistics=False)
    atomic_write_bytes(path, buf.getvalue())


def write_outputs(result: EvaluationResult, out: str | os.PathLike) -> Path:
    """Write the tables, figures, report.html and config.toml to ``out``; returns the HTML path."""
    from analysis.report import write_report
    from hapflow.config import save_config

    out = Path(out)
    _write_parquet(result.per_gene, out / "per_gene.parquet")
    _write_parquet(result.summary, out / "summary.parquet")
    _write_parquet(result.paired, out / "paired.parquet")
    _write_parquet(result.coverage, out / "coverage.parquet")
    save_config({"evaluate": result.config}, out / "config.toml")
    return write_report(result, out)


def run_evaluation(cfg: EvaluateConfig, workdir: str | os.PathLike,
                   out: str | os.PathLike | None = None) -> tuple[EvaluationResult, Path]:
    """:func:`evaluate` then :func:`write_outputs` (default ``out``: ``DIR/report``)."""
    from hapflow.layout import Workdir

    result = evaluate(cfg, workdir)
    html = write_outputs(result, out if out is not None else Workdir(workdir).report)
    return result, html


def headline(result: EvaluationResult, html: Path) -> str:
    """The lines printed at the end of the CLI: where the report is, the best predictor."""
    best = result.predictors[0]
    rows = result.summary.filter((pl.col("predictor") == best) & (pl.col("population") == ALL))
    lines = [f"Report: {html}",
             f"Best predictor on the {result.config.split} split: {best} "
             f"(mean per-gene Pearson r across individuals, 95% bootstrap interval over genes)"]
    for r in rows.iter_rows(named=True):
        lines.append(f"  {r['class']:>14}: {r['mean_r']:.3f} ({r['mean_r_low']:.3f} to "
                     f"{r['mean_r_high']:.3f}), {r['n_genes']} genes")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# command line


def parse_args(argv=None) -> argparse.Namespace:
    from hapflow.cli import add_common_arguments, make_parser

    p = make_parser("python -m analysis.evaluate",
                    "Per-gene correlation of predictors with observed expression across "
                    "held-out individuals, summaries, comparisons and a self-contained HTML "
                    "report (DIR/report/report.html).",
                    next_step="open DIR/report/report.html in a browser")
    add_common_arguments(p, ("evaluate",), workdir_help="study working directory (reads "
                         "DIR/shards and DIR/predictions, writes DIR/report)")
    p.add_argument("--predictions", nargs="+", metavar="NAME",
                   help="predictors to evaluate (default: all with the split's parquet)")
    p.add_argument("--split", help="override [evaluate] split (default test)")
    p.add_argument("--target", choices=("Y", "Z"), help="override [evaluate] target")
    p.add_argument("--gene-classes", help="override [evaluate] gene_classes (gene,class table)")
    p.add_argument("--out", help="output folder (default DIR/report)")
    return p.parse_args(argv)


def _main(argv=None) -> int:
    args = parse_args(argv)
    from hapflow.cli import setup_logging

    setup_logging(args.quiet)
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    from hapflow.config import load_study, split_overrides

    sets = split_overrides(args.set, ("evaluate",))
    for name in ("split", "target", "predictions", "gene_classes"):
        if getattr(args, name) is not None:
            sets["evaluate"][name] = getattr(args, name)
    cfg = load_study(args.config, sets, need=("evaluate",)).evaluate
    result, html = run_evaluation(cfg, args.workdir, args.out)
    print(headline(result, html))
    return 0


def main(argv=None) -> int:
    """``python -m analysis.evaluate``: see the module docstring; exit 2 on bad input."""
    from hapflow.cli import run_cli

    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
