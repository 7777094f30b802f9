"""The attribution plot: each variant's effect along the gene's window (``GENE.png``)."""

from __future__ import annotations

import io
import os

import polars as pl

from analysis.personal_variants import GeneWindow
from hapflow.io import atomic_write_bytes

__all__ = ["plot_effects"]


def plot_effects(effects: pl.DataFrame, window: GeneWindow, path: str | os.PathLike, *,
                 run: str = "", ranking: pl.DataFrame | None = None, top: int = 10,
                 en_weights: pl.DataFrame | None = None) -> None:
    """PNG of each variant's effect along the window (position vs effect, TSS marked).

    One colour per individual (legend up to 10), circles for SNPs/MNPs and triangles for
    indels; the ``top`` ranked variants of ``ranking`` are labelled. ``en_weights`` (a frame
    with pos (1-based) and weight_per_allele: the elastic net's non-zero weights of the gene)
    adds a second panel on the same axis. Written atomically.
    """
    # matplotlib is imported here: heavy, and only this figure needs it (Agg: no display)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    en = None
    if en_weights is not None:
        en = en_weights.filter((en_weights["pos"] > window.start)
                               & (en_weights["pos"] <= window.end))
        en = en if en.height else None
    rows = 2 if en is not None else 1
    fig, axes = plt.subplots(rows, 1, figsize=(10, 4 + 2.2 * (rows - 1)), sharex=True,
                             squeeze=False, height_ratios=[3, 1.4][:rows])
    ax = axes[0, 0]
    people = effects["individual"].unique(maintain_order=True).to_list()
    cmap = plt.get_cmap("tab10")
    for i, ind in enumerate(people):
        part = effects.filter(effects["individual"] == ind)
        indel = (part["kind"] == "indel").to_numpy()
        x, y = part["pos"].to_numpy(), part["effect"].to_numpy()
        colour = cmap(i % 10)
        ax.scatter(x[~indel], y[~indel], s=14, color=colour, alpha=0.8,
                   label=ind if len(people) <= 10 else None)
        ax.scatter(x[indel], y[indel], s=22, marker="^", color=colour, alpha=0.8)
    tss1 = window.tss + 1
    for a in axes[:, 0]:
        a.axvline(tss1, color="black", lw=0.8, ls="--")
        a.axhline(0, color="grey", lw=0.5)
    ax.text(tss1, 1.0, " TSS", transform=ax.get_xaxis_transform(), va="top", fontsize=8)
    if ranking is not None and top and effects.height:
        best = ranking.head(top)
        # label each top variant at its largest |effect| among the individuals
        peak = (effects.sort(effects["effect"].abs(), descending=True, maintain_order=True)
                .unique("variant", keep="first", maintain_order=True))
        y_of = dict(zip(peak["variant"], peak["effect"], strict=True))
        for v, x in zip(best["variant"], best["pos"], strict=True):
            ax.annotate(v.split(":", 1)[1], (x, y_of.get(v, 0.0)), fontsize=6,
                        xytext=(2, 2), textcoords="offset points")
    if not effects.height:
        ax.text(0.5, 0.5, "no personal variant in the window", transform=ax.transAxes,
                ha="center", va="center")
    ax.set_xlim(window.start + 1, window.end)
    ax.ticklabel_format(axis="x", style="plain", useOffset=False)
    ax.set_ylabel("effect (personal − reverted)")
    ax.set_title(f"{window.label}{', run ' + run if run else ''}: in-silico reversion of "
                 "personal variants", fontsize=10)
    if 0 < len(people) <= 10:
        ax.legend(fontsize=7, loc="lower right", ncol=min(len(people), 5))
    if en is not None:
        b = axes[1, 0]
        b.vlines(en["pos"].to_numpy(), 0, en["weight_per_allele"].to_numpy(), color="C3")
        b.set_ylabel("elastic net\nweight / allele", fontsize=8)
    axes[-1, 0].set_xlabel(f"position on {window.chrom} (1-based); window of "
                           f"{window.length:,} bp, gene on the {window.strand} strand")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
