"""The evaluation report's figures: PNG bytes drawn with matplotlib on the Agg canvas.

Each function takes the evaluation's tables (:class:`analysis.evaluation.EvaluationResult`'s
``per_gene``, ``joined``, ``summary``) and returns PNG bytes. Figures are drawn with
``matplotlib.figure.Figure`` on the Agg canvas (no pyplot state, no display needed); the same
inputs give the same bytes.
"""

from __future__ import annotations

import io

import matplotlib
import numpy as np
import polars as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from analysis.evaluation import ALL
from analysis.evaluation_inputs import PAPER_CLASSES
from analysis.training_log import TrainingLog

__all__ = [
    "figure_r_distributions",
    "figure_best_worst",
    "figure_predictor_pairs",
    "figure_published",
    "figure_training_curves",
]

_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf"]


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _classes(per_gene: pl.DataFrame) -> list[str]:
    present = per_gene["class"].unique().to_list()
    ordered = [c for c in PAPER_CLASSES if c in present]
    return ordered + sorted(c for c in present if c not in ordered)


def _horizontal() -> dict:
    """Horizontal box plots: ``orientation`` from matplotlib 3.10, ``vert`` before it."""
    major, minor = (int(v) for v in matplotlib.__version__.split(".")[:2])
    return {"orientation": "horizontal"} if (major, minor) >= (3, 10) else {"vert": False}


def figure_r_distributions(per_gene: pl.DataFrame, predictors: list[str],
                           seed: int = 0) -> bytes:
    """Box plots of per-gene Pearson r, one box per predictor, one panel per gene class.

    ``per_gene``: the evaluation's per-gene table (rows of population "all" are used). Points
    are the genes (jittered sideways with a seeded generator). Returns PNG bytes.
    """
    base = per_gene.filter((pl.col("population") == ALL) & pl.col("excluded").is_null())
    classes = _classes(base) or [ALL]
    fig = _figure(min(4.0 + 3.2 * len(classes), 16), 0.6 + 0.45 * len(predictors) + 1.6)
    axes = fig.subplots(1, len(classes), sharex=True, squeeze=False)[0]
    rng = np.random.default_rng(seed)
    for ax, cls in zip(axes, classes, strict=True):
        data = [base.filter((pl.col("predictor") == p) & (pl.col("class") == cls))["pearson_r"]
                .to_numpy() for p in predictors]
        pos = np.arange(len(predictors))[::-1]  # best predictor on top
        ax.boxplot([d if d.size else [np.nan] for d in data], positions=pos, widths=0.6,
                   showfliers=False, **_horizontal())
        for k, d in enumerate(data):
            ax.scatter(d, pos[k] + rng.uniform(-0.18, 0.18, d.size), s=9, alpha=0.6,
                       color=_COLORS[k % len(_COLORS)], linewidths=0)
        ax.axvline(0, color="grey", lw=0.8, ls="--")
        ax.set_yticks(pos, predictors if ax is axes[0] else [""] * len(predictors))
        n = max((d.size for d in data), default=0)
        ax.set_title(f"{cls} ({n} genes)")
        ax.set_xlabel("Pearson r per gene")
    return _png(fig)


def figure_best_worst(joined: pl.DataFrame, per_gene: pl.DataFrame, predictor: str,
                      k: int = 3) -> bytes:
    """Predicted vs observed expression for the ``k`` best and ``k`` worst genes of a predictor.

    ``joined``: scored pairs (predictor, gene, individual, observed, prediction). One point per
    individual; top row best genes, bottom row worst. Returns PNG bytes.
    """
    scored = per_gene.filter((pl.col("predictor") == predictor) & (pl.col("population") == ALL)
                             & pl.col("excluded").is_null()).sort("pearson_r", "gene",
                                                                   descending=[True, False])
    k = max(1, min(k, scored.height // 2 or 1))
    best, worst = scored.head(k), scored.tail(k).reverse()
    fig = _figure(3.1 * k, 6.0)
    axes = fig.subplots(2, k, squeeze=False)
    rows = joined.filter(pl.col("predictor") == predictor)
    for row, (label, genes) in enumerate((("best", best), ("worst", worst))):
        for col in range(k):
            ax = axes[row][col]
            if col >= genes.height:
                ax.set_axis_off()
                continue
            g = genes.row(col, named=True)
            pts = rows.filter(pl.col("gene") == g["gene"])
            ax.scatter(pts["observed"].to_numpy(), pts["prediction"].to_numpy(), s=12,
                       alpha=0.7, color=_COLORS[0] if row == 0 else _COLORS[3], linewidths=0)
            name = f"{g['symbol']} ({g['gene']})" if g.get("symbol") else g["gene"]
            ax.set_title(f"{label}: {name}\nr = {g['pearson_r']:.2f}, n = {g['n']}",
                         fontsize=9)
            ax.set_xlabel("observed expression")
            if col == 0:
                ax.set_ylabel("predicted")
    return _png(fig)


def figure_predictor_pairs(per_gene: pl.DataFrame, predictors: list[str],
                           max_panels: int = 4) -> bytes | None:
    """Per-gene r of the best predictor (y) against each other predictor (x), one dot per gene.

    Dots above the diagonal are genes where the best predictor does better; colour is the gene
    class. ``None`` when there is only one predictor.
    """
    if len(predictors) < 2:
        return None
    base = per_gene.filter(pl.col("population") == ALL)
    wide = base.pivot(on="predictor", index=["gene", "class"], values="pearson_r")
    best, others = predictors[0], predictors[1:1 + max_panels]
    classes = _classes(base)
    fig = _figure(3.4 * len(others) + 0.6, 3.7)
    axes = fig.subplots(1, len(others), squeeze=False)[0]
    for ax, other in zip(axes, others, strict=True):
        for j, cls in enumerate(classes):
            sub = wide.filter(pl.col("class") == cls)
            ax.scatter(sub[other].to_numpy(), sub[best].to_numpy(), s=14, alpha=0.7,
                       color=_COLORS[j % len(_COLORS)], label=cls, linewidths=0)
        ax.plot([-1, 1], [-1, 1], color="grey", lw=0.8, ls="--")
        ax.set_xlim(-1.02, 1.02)
        ax.set_ylim(-1.02, 1.02)
        ax.set_aspect("equal")
        ax.set_xlabel(f"r of {other}")
        ax.set_ylabel(f"r of {best}")
    axes[-1].legend(fontsize=8, loc="lower right")
    return _png(fig)


def figure_published(published: pl.DataFrame, summary: pl.DataFrame,
                     predictors: list[str]) -> bytes:
    """Two panels: the paper's published mean r per class, and this run's, labelled as such."""
    fig = _figure(13.0, 0.9 + 0.28 * max(published.height, len(predictors)) + 1.2)
    left, right = fig.subplots(1, 2, width_ratios=[1.4, 1.0])
    y = np.arange(published.height)[::-1]
    h = 0.8 / len(PAPER_CLASSES)
    for j, cls in enumerate(PAPER_CLASSES):
        left.barh(y + (1 - j) * h, published[cls].to_numpy(), height=h, label=cls,
                  color=_COLORS[j])
    left.set_yticks(y, published["model"].to_list(), fontsize=7)
    left.set_xlabel("mean Pearson r per gene")
    left.set_title("PUBLISHED: Rastogi et al. 2024, full GEUVADIS data", fontsize=10)
    left.legend(fontsize=8, loc="lower right")
    base = summary.filter((pl.col("population") == ALL) & (pl.col("class") != ALL))
    classes = _classes(base)
    y = np.arange(len(predictors))[::-1]
    h = 0.8 / max(len(classes), 1)
    for j, cls in enumerate(classes):
        sub = base.filter(pl.col("class") == cls)
        by = dict(zip(sub["predictor"], sub["mean_r"], strict=True))
        means = np.array([by.get(p, np.nan) for p in predictors])
        lows = dict(zip(sub["predictor"], sub["mean_r_low"], strict=True))
        highs = dict(zip(sub["predictor"], sub["mean_r_high"], strict=True))
        err = np.array([[m - lows.get(p, m), highs.get(p, m) - m]
                        for p, m in zip(predictors, means, strict=True)]).T
        right.barh(y + ((len(classes) - 1) / 2 - j) * h, means, height=h, xerr=err, label=cls,
                   color=_COLORS[(j + 3) % len(_COLORS)], capsize=2)
    right.set_yticks(y, predictors, fontsize=8)
    right.set_xlabel("mean Pearson r per gene (95% bootstrap interval)")
    right.set_title("THIS RUN: this study's data", fontsize=10)
    right.axvline(0, color="grey", lw=0.8)
    right.legend(fontsize=8, loc="lower right")
    return _png(fig)


def figure_training_curves(log: TrainingLog, oracle_r: float | None = None) -> bytes:
    """A run's training curves: loss (training and validation) and validation Pearson r, against
    the optimizer step (top row) and, when the log has ``wall_seconds``, against wall time in
    minutes (bottom row); ``oracle_r`` (a simulated study's) is drawn as a dashed line over the
    validation r. Returns PNG bytes."""
    rows = [("step", "optimizer step", 1.0)]
    if log.has_time:
        rows.append(("wall_seconds", "wall time (minutes)", 60.0))
    fig = _figure(10.0, 3.0 * len(rows) + 0.4)
    axes = fig.subplots(len(rows), 2, squeeze=False)
    train, val = log.train, log.val
    for (x, label, scale), (loss_ax, r_ax) in zip(rows, axes, strict=True):
        if train.height:
            loss_ax.plot(train[x].to_numpy() / scale, train["loss"].to_numpy(), color=_COLORS[0],
                         lw=1.2, marker=".", ms=3, label="training loss (logged steps)")
        if val.height:
            loss_ax.plot(val[x].to_numpy() / scale, val["val_loss"].to_numpy(), color=_COLORS[1],
                         lw=1.2, marker="o", ms=4, label="validation loss")
            r_ax.plot(val[x].to_numpy() / scale, val["val_pearson_r"].to_numpy(),
                      color=_COLORS[2], lw=1.2, marker="o", ms=4)
        loss_ax.set_xlabel(label)
        loss_ax.set_ylabel("loss")
        loss_ax.legend(fontsize=8, loc="upper right")
        r_ax.set_xlabel(label)
        r_ax.set_ylabel("validation mean per-gene r")
        r_ax.axhline(0, color="grey", lw=0.8, ls="--")
        if oracle_r is not None and np.isfinite(oracle_r):
            r_ax.axhline(oracle_r, color=_COLORS[3], lw=1.0, ls="--",
                         label=f"oracle r {oracle_r:.2f} (simulated)")
            r_ax.legend(fontsize=8, loc="lower right")
    axes[0][0].set_title(f"{log.run}: loss", fontsize=10)
    axes[0][1].set_title(f"{log.run}: validation r across individuals", fontsize=10)
    return _png(fig)
