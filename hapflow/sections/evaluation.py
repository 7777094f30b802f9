"""The sections of the analysis: ``[baselines]``, ``[evaluate]`` and ``[attribute]``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from hapflow.names import SPLITS
from hapflow.sections.base import (
    BASELINE_METHODS,
    require,
)

# -------------------------------------------------------------------------------- analysis


def _default_ridge_alphas() -> list[float]:
    return [float(10.0 ** (k / 2)) for k in range(-4, 11)]  # 0.01 ... 1e5, half-decades


@dataclass(frozen=True)
class BaselinesConfig:
    """Variant-based baselines (TOML section ``[baselines]``)."""

    methods: list[str] = field(default_factory=lambda: list(BASELINE_METHODS))
    """Methods to fit: elastic_net, lasso, ridge, top_snp."""
    min_maf: float = 0.05
    """Variants with at least this MAF among the gene's training individuals."""
    snps_only: bool = False
    """Use SNPs only (drop indels and MNPs)."""
    folds: int = 5
    """Cross-validation folds (on training individuals) choosing the penalty."""
    seed: int = 0
    """Seed of the fold assignment (the same folds for every method)."""
    n_jobs: int = 2
    """Genes fitted at once."""
    backend: Literal["processes", "threads"] = "processes"
    """joblib workers: processes (loky; both cores busy) or threads (no start-up cost, but
    scikit-learn's Python code holds the GIL, so ~1.2 cores)."""
    target: Literal["Z", "Y"] = "Z"
    """Target column of the manifest: Z (per-gene z-score, as the models) or Y (log expr)."""
    l1_ratio: float = 0.5
    """Elastic net mixing (PrediXcan: 0.5)."""
    n_alphas: int = 100
    """Penalties on the elastic net and LASSO paths (glmnet's default count)."""
    eps: float = 0.01
    """Smallest / largest penalty of those paths (glmnet's lambda.min.ratio for n < p; 0.01
    rather than scikit-learn's 0.001 makes fits 4-5x faster with near-identical choices)."""
    ridge_alphas: list[float] = field(default_factory=_default_ridge_alphas)
    """Ridge penalties tried (on standardised dosages)."""
    max_iter: int = 5000
    """Coordinate-descent iterations per penalty."""
    tol: float = 1e-3
    """Coordinate-descent tolerance (duality gap relative to the target's sum of squares).
    1e-3 rather than scikit-learn's 1e-4: 1.5-3x faster (most on weak-signal genes), within
    CV noise; set 1e-4 for tighter fits."""
    batch_genes: int = 32
    """Genes whose dosage matrices are held at once (memory bound)."""

    def __post_init__(self):
        bad = [m for m in self.methods if m not in BASELINE_METHODS]
        require(self, "baselines", [
            (not bad and bool(self.methods),
             f"methods {bad or '[]'}: choose from {', '.join(BASELINE_METHODS)}"),
            (0.0 <= self.min_maf <= 0.5, f"min_maf = {self.min_maf} must be in [0, 0.5]"),
            (self.folds >= 2, f"folds = {self.folds} must be at least 2"),
            (self.n_jobs >= 1 and self.batch_genes >= 1,
             "n_jobs and batch_genes must be at least 1"),
            (0.0 < self.l1_ratio <= 1.0, f"l1_ratio = {self.l1_ratio} must be in (0, 1]"),
        ])


@dataclass(frozen=True)
class EvaluateConfig:
    """Evaluation of predictions against observed expression (TOML section ``[evaluate]``)."""

    split: str = "test"
    """Split whose individuals are scored (a value of the manifest's split column)."""
    target: Literal["Y", "Z"] = "Y"
    """Observed value: Y (log expression) or Z (per-gene z-score); Pearson r is the same."""
    predictions: list[str] | None = None
    """Predictor names (folders of DIR/predictions); default every one with the split's file."""
    gene_classes: str | None = field(default=None, metadata={"path": True})
    """Table gene,class (the paper's gene_class.csv); default the split's seen/unseen genes."""
    published: str | None = field(default=None, metadata={"path": True})
    """The paper's perf_summary.csv, shown beside this run's figures in the report."""
    bootstrap: int = 1000
    """Bootstrap resamples over genes for the confidence intervals."""
    ci_level: float = 0.95
    """Coverage of the bootstrap intervals."""
    seed: int = 0
    """Seed of the bootstraps (and of the jitter in figures)."""
    min_individuals: int = 3
    """Genes with fewer individuals than this get r = NaN and are listed, not scored."""

    def __post_init__(self):
        require(self, "evaluate", [
            (self.min_individuals >= 2, f"min_individuals = {self.min_individuals}: a "
                                        "correlation needs at least 2 individuals"),
            (self.bootstrap >= 1, f"bootstrap = {self.bootstrap}: use at least 1 resample "
                                  "(1000 is the default)"),
            (0.0 < self.ci_level < 1.0,
             f"ci_level = {self.ci_level}: use a fraction such as 0.95"),
        ])


@dataclass(frozen=True)
class AttributeConfig:
    """Variant attribution (TOML section ``[attribute]``)."""

    batch_size: int = 16
    """Windows per forward pass on the device."""
    split: str = "test"
    """Split of the shards manifest whose individuals are attributed when none are named."""
    max_individuals: int = 10
    """At most this many individuals (the first ones, sorted, of a split); 0: no limit."""
    rc_average: bool = True
    """Average forward and reverse-complement predictions, as train.predict does."""
    device: str = "auto"
    """auto, cpu or cuda."""
    top: int = 20
    """Variants listed in the summary and labelled in the plot."""

    def __post_init__(self):
        require(self, "attribute", [
            (self.batch_size >= 1, f"batch_size = {self.batch_size} must be >= 1"),
            (self.max_individuals >= 0,
             f"max_individuals = {self.max_individuals} must be >= 0"),
            (self.split in SPLITS, f"split = {self.split!r} must be {', '.join(SPLITS[:-1])} "
                                   f"or {SPLITS[-1]}"),
            (self.top >= 0, f"top = {self.top} must be >= 0"),
        ])
