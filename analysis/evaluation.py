"""Score predictors per gene across held-out individuals (``python -m analysis.evaluate``).

Inputs (read and checked by :mod:`analysis.evaluation_inputs`). Every predictor writes
``DIR/predictions/NAME/SPLIT.parquet`` with columns gene, individual, prediction (extra columns
are ignored). Observed values and the split come from ``DIR/shards/manifest.parquet``. By
default every folder of ``DIR/predictions`` holding the split's parquet is evaluated.

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

:func:`evaluate` computes everything and writes nothing; :mod:`analysis.report` writes the
tables, figures and report.html (:func:`analysis.report.run_evaluation` does both). When
``python -m analysis.attribute`` has written ``DIR/attribution/NAME/GENE.json`` and ``GENE.png``
for an evaluated predictor NAME (a fine-tuned run), the result carries them for the report's
section "Variant attribution" (a broken file is an error naming it).

Beside the scores: the gene symbols of the manifest (shown next to the ids), each evaluated
run's training history (``DIR/runs/NAME/metrics.jsonl``, :mod:`analysis.training_log`) and, for
a simulated study (``simulation_genes.parquet`` of ``python -m prep.simulate`` beside the
expression matrix), the oracle r: the simulated genetic value's r with expression, the best any
predictor can reach, summarised over the split's genes like a predictor (:data:`ORACLE`).
"""

from __future__ import annotations

import logging
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from analysis.evaluation_inputs import (
    UNLISTED,
    Attribution,
    EvaluationError,
    discover_predictions,
    load_split,
    read_attribution,
    read_gene_class_table,
    read_oracle,
    read_predictions,
    read_symbols,
    split_gene_classes,
)
from analysis.metrics import (
    grouped_spearman,
    paired_comparison,
    summarize_r,
)
from analysis.training_log import TrainingLog, read_training_log
from hapflow.config import StudyConfig
from hapflow.layout import Workdir
from hapflow.metrics import grouped_pearson, offsets_from_counts
from hapflow.sections import EvaluateConfig

__all__ = [
    "ALL",
    "ORACLE",
    "EvaluationResult",
    "per_gene_metrics",
    "summarize",
    "compare_predictors",
    "evaluate",
    "headline",
]

log = logging.getLogger(__name__)

ALL = "all"
"""Label of the rows that pool every class or every population."""

ORACLE = "oracle (simulated genetic value)"
"""Predictor label of a simulated study's reference rows (:attr:`EvaluationResult.oracle`)."""


@dataclass
class EvaluationResult:
    """Everything :func:`evaluate` computed; :mod:`analysis.report` writes it."""

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
    attribution: list[Attribution] = field(default_factory=list)
    """:class:`analysis.evaluation_inputs.Attribution` of the evaluated predictors, from
    ``DIR/attribution/NAME/*.json`` (+ ``.png``), in predictor order; empty without files."""
    symbols: dict[str, str] = field(default_factory=dict)
    """gene id -> symbol, from the manifest (genes without a symbol absent)."""
    training: list[TrainingLog] = field(default_factory=list)
    """The training history of each run in :attr:`runs` (same order)."""
    oracle: pl.DataFrame | None = None
    """A simulated study's reference rows: the oracle r summarised per class like
    :attr:`summary` (predictor :data:`ORACLE`, population "all"); None when not simulated."""
    oracle_source: Path | None = None
    """The ``simulation_genes.parquet`` the oracle r comes from."""


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


def evaluate(study: StudyConfig, workdir: str | os.PathLike | Workdir) -> EvaluationResult:
    """Score every requested predictor of a study on ``[evaluate] split``; writes nothing.

    Parameters
    ----------
    study : StudyConfig
        Reads ``[evaluate]``.
    workdir : Workdir or path
        Reads ``DIR/shards/manifest.parquet``, ``DIR/predictions/NAME/SPLIT.parquet``,
        ``DIR/runs`` (which predictors are runs) and ``DIR/attribution``.

    Raises
    ------
    EvaluationError
        No predictions, or any bad input (see :mod:`analysis.evaluation_inputs`).
    """
    cfg = study.evaluate
    layout = Workdir(workdir)
    split_table = load_split(layout.manifest, cfg.split, cfg.target)
    genes = split_table["gene"].unique().sort().to_list()
    warnings: list[str] = []
    classes, class_source = _gene_classes(cfg, layout.manifest, genes, warnings)
    populations = sorted(split_table["population"].drop_nulls().unique().to_list())
    if len(populations) < 2:
        populations = []
    per_gene, joined, coverage = [], [], []
    for name in _predictor_names(cfg, layout):
        preds = read_predictions(layout.predictor(name) / f"{cfg.split}.parquet", split_table,
                                 cfg.split, layout.manifest)
        genes_table, scored = per_gene_metrics(name, preds, split_table, classes,
                                               cfg.min_individuals, populations)
        coverage.append(_coverage(name, preds, split_table, genes_table, len(genes), cfg.split,
                                  warnings))
        per_gene.append(genes_table)
        joined.append(scored)
    symbols = read_symbols(layout.manifest)
    per_gene_df = _with_symbols(pl.concat(per_gene).sort("predictor", "population", "gene"),
                                symbols)
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
    runs = [p for p in ranked if layout.run(p).is_dir()]
    oracle_path = _oracle_path(study, layout)
    return EvaluationResult(
        config=cfg, manifest=layout.manifest, predictors=ranked, per_gene=per_gene_df,
        summary=summary, paired=compare_predictors(per_gene_df, ranked, cfg),
        coverage=pl.DataFrame(coverage).sort("predictor"),
        joined=pl.concat(joined).sort("predictor", "gene", "individual"),
        class_source=class_source, populations=populations, warnings=warnings,
        runs=runs, attribution=read_attribution(layout.attribution, ranked), symbols=symbols,
        training=[read_training_log(layout.run(r), r) for r in runs],
        oracle=oracle_summary(read_oracle(oracle_path, genes), classes, cfg),
        oracle_source=oracle_path if oracle_path.exists() else None,
    )


def _with_symbols(per_gene: pl.DataFrame, symbols: dict[str, str]) -> pl.DataFrame:
    """``per_gene`` with a column symbol (null without one) after gene."""
    symbol = pl.col("gene").replace_strict(symbols, default=None, return_dtype=pl.Utf8)
    columns = per_gene.columns
    at = columns.index("gene") + 1
    return per_gene.with_columns(symbol.alias("symbol")).select(
        *columns[:at], "symbol", *columns[at:])


def _oracle_path(study: StudyConfig, layout: Workdir) -> Path:
    """Where ``prep.simulate`` wrote its gene table: beside ``[simulate] output``, else in
    ``DIR/expression``."""
    output = study.simulate.output
    folder = Path(output).parent if output else layout.expression
    return folder / "simulation_genes.parquet"


def oracle_summary(oracle: pl.DataFrame | None, classes: pl.DataFrame,
                   cfg: EvaluateConfig) -> pl.DataFrame | None:
    """The oracle r of the split's genes summarised per class and over all (as
    :func:`summarize` does for a predictor): predictor (:data:`ORACLE`), class, population
    ("all"), n_genes, mean_r with its bootstrap interval, median_r with its interval,
    mean_abs_r, share_positive. None without an oracle."""
    if oracle is None:
        return None
    table = oracle.join(classes, on="gene", how="left")
    rows = []
    for cls, frame in [(ALL, table), *((c, g) for (c,), g in table.group_by(
            "class", maintain_order=True))]:
        stats = summarize_r(frame["oracle_r"].to_numpy(), cfg.bootstrap,
                            _seed(cfg.seed, ORACLE, ALL), cfg.ci_level)
        rows.append({"predictor": ORACLE, "class": cls, "population": ALL, **stats})
    order = {ALL: ""}
    return pl.DataFrame(rows).sort(pl.col("class").replace(order))


def _gene_classes(cfg: EvaluateConfig, manifest: Path, genes: list[str],
                  warnings: list[str]) -> tuple[pl.DataFrame, str]:
    """The split's gene classes (gene, class) and where they came from, in words."""
    if cfg.gene_classes:
        classes, unlisted = read_gene_class_table(cfg.gene_classes, genes)
        if unlisted:
            warnings.append(f"{unlisted} of {len(genes)} genes are not in {cfg.gene_classes}; "
                            f"they are reported as class {UNLISTED!r}")
        return classes, f"gene classes from {cfg.gene_classes}"
    return (split_gene_classes(manifest, cfg.split),
            "the split's own classes: 'seen' genes have training individuals, 'unseen' genes "
            "have none")


def _predictor_names(cfg: EvaluateConfig, layout: Workdir) -> list[str]:
    """``[evaluate] predictions``, or every predictor with the split's file."""
    names = list(cfg.predictions or discover_predictions(layout.predictions, cfg.split))
    if not names:
        raise EvaluationError(f"{layout.predictions}: no predictions for split {cfg.split!r} "
                              f"(expected NAME/{cfg.split}.parquet); run a predictor first")
    if len(set(names)) != len(names):
        raise EvaluationError(f"[evaluate] predictions lists a name twice: {', '.join(names)}")
    return names


def _coverage(name: str, preds: pl.DataFrame, split_table: pl.DataFrame,
              genes_table: pl.DataFrame, n_genes: int, split: str,
              warnings: list[str]) -> dict:
    """One predictor's row of the coverage table (pairs and genes predicted and scored)."""
    base = genes_table.filter(pl.col("population") == ALL)
    cov = {"predictor": name, "pairs_expected": split_table.height,
           "pairs_predicted": preds.height, "coverage": preds.height / split_table.height,
           "genes_expected": n_genes, "genes_predicted": preds["gene"].n_unique(),
           "genes_scored": int(base["excluded"].is_null().sum()),
           "genes_constant": int(base["prediction_constant"].sum())}
    if preds.height < split_table.height:
        warnings.append(f"{name}: predictions cover {preds.height} of {split_table.height} "
                        f"(gene, individual) pairs of the {split} split "
                        f"({cov['coverage']:.1%}); only those are scored")
    if cov["genes_constant"]:
        warnings.append(f"{name}: {cov['genes_constant']} gene(s) have the same prediction "
                        "for every individual; their r is set to 0, as in the paper")
    log.info("%s: %d genes scored, mean Pearson r %.3f", name, cov["genes_scored"],
             np.nanmean(base["pearson_r"].to_numpy()) if cov["genes_scored"] else np.nan)
    return cov


def headline(result: EvaluationResult, html: Path) -> str:
    """The lines printed at the end of the command: where the report is, the best predictor."""
    best = result.predictors[0]
    rows = result.summary.filter((pl.col("predictor") == best) & (pl.col("population") == ALL))
    lines = [f"Report: {html}",
             f"Best predictor on the {result.config.split} split: {best} "
             f"(mean per-gene Pearson r across individuals, 95% bootstrap interval over genes)"]
    for r in rows.iter_rows(named=True):
        lines.append(f"  {r['class']:>14}: {r['mean_r']:.3f} ({r['mean_r_low']:.3f} to "
                     f"{r['mean_r_high']:.3f}), {r['n_genes']} genes")
    if result.oracle is not None:
        r = result.oracle.row(0, named=True)
        lines.append(f"Oracle r of this simulated study (the best any predictor can reach): "
                     f"{r['mean_r']:.3f} over {r['n_genes']} genes")
    return "\n".join(lines)
